"""`tunesmith generate`: answer a prompt with a model, adapter or run directory."""

from __future__ import annotations

from typing import Optional

import typer

from tunesmith.cli.main import app, console


@app.command()
def generate(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Built-in name, model/adapter/run directory, .gguf file or Hub id."),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="Prompt (repeatable)."),
    max_new_tokens: int = typer.Option(64, min=1, help="Tokens to generate at most."),
    temperature: float = typer.Option(0.0, min=0.0, help="0 = greedy."),
    top_k: Optional[int] = typer.Option(None, min=1, help="Keep the k most likely tokens."),
    top_p: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Nucleus: keep the smallest set with this much probability."),
    seed: Optional[int] = typer.Option(None, help="Seed for sampling (same seed, same output)."),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Apply the chat template (default) or complete raw text."),
    precision: str = typer.Option("auto", help="auto, bf16 or fp32."),
):
    """Generate a reply to one or more prompts."""
    from tunesmith.infer import generate as run_generate
    from tunesmith.models import load_model, load_tokenizer, resolve_model
    from tunesmith.models.precision import resolve_precision

    source = resolve_model(model)
    dtype = resolve_precision(precision).dtype
    lm = load_model(source, dtype=dtype)
    tokenizer = load_tokenizer(source)
    replies = run_generate(lm, tokenizer, prompt, chat=chat, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    for p, r in zip(prompt, replies):
        if len(prompt) > 1:
            console.print(f"[bold]> {p}[/]")
        console.print(r, highlight=False, markup=False)
