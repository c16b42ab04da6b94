"""`tunesmith score`: a reward model's score for one or more responses to a prompt."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from tunesmith.cli.main import app, console


@app.command()
def score(
    reward_model: str = typer.Option(
        ..., "--reward-model", "-r", help="A reward run directory (tunesmith reward), its model/ adapter, or a full reward model."
    ),
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user's message."),
    response: list[str] = typer.Option(..., "--response", help="A response to score (repeat for several)."),
    system: str | None = typer.Option(None, "--system", help="A system message before the prompt."),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON."),
):
    """Score responses with a reward model, as the chat template renders the conversation (higher = preferred)."""
    from tunesmith.evaluate.preference import reward_scores
    from tunesmith.models.load import load_tokenizer, resolve_model
    from tunesmith.models.reward import load_reward_model

    source = resolve_model(reward_model)
    model = load_reward_model(source)
    tokenizer = load_tokenizer(source)
    if tokenizer.chat_template:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        prompts, answers = [messages] * len(response), [[{"role": "assistant", "content": r}] for r in response]
    else:
        prompts, answers = [prompt] * len(response), list(response)
    scores = reward_scores(model, tokenizer, prompts, answers)
    if as_json:
        print(json.dumps({"prompt": prompt, "scores": [{"response": r, "score": s} for r, s in zip(response, scores)]}, indent=2))
        return
    best = max(range(len(scores)), key=scores.__getitem__)
    table = Table(title=f"reward model {reward_model}: {prompt}")
    table.add_column("response")
    table.add_column("score", justify="right")
    for i, (r, s) in enumerate(zip(response, scores)):
        table.add_row(r, f"{s:+.3f}" + ("  <- preferred" if i == best and len(scores) > 1 else ""))
    console.print(table)
