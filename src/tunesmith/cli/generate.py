"""`tunesmith generate`: answer prompts with a model, adapter or run directory; batches from a file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tunesmith.cli.main import app, console
from tunesmith.errors import TunesmithError


def read_prompts(path: Path) -> list:
    """A .txt file (one prompt per line) or .jsonl ({"prompt": str} or {"messages": [...]} per line)."""
    if not path.is_file():
        raise TunesmithError(f"prompts file '{path}' does not exist")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            prompts.append(line)
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TunesmithError(f"not valid JSON: {exc.msg}", where=where) from None
        if isinstance(record, dict) and isinstance(record.get("prompt"), str):
            prompts.append(record["prompt"])
        elif isinstance(record, dict) and isinstance(record.get("messages"), list):
            from tunesmith.data.formats import check_messages

            prompts.append(check_messages(record["messages"], where, require_assistant=False))
        else:
            raise TunesmithError("expected an object with a 'prompt' string or a 'messages' list", where=where)
    if not prompts:
        raise TunesmithError(f"prompts file '{path}' has no prompts")
    return prompts


@app.command()
def generate(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Built-in name, model/adapter/run directory, .gguf file or Hub id."),
    prompt: Optional[list[str]] = typer.Option(None, "--prompt", "-p", help="Prompt (repeatable)."),
    prompts_file: Optional[Path] = typer.Option(None, "--prompts-file", help=".txt (one per line) or .jsonl with 'prompt' or 'messages'."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write one JSON result per prompt to this .jsonl file."),
    batch_size: int = typer.Option(8, min=1, help="Prompts generated together."),
    max_new_tokens: int = typer.Option(64, min=1, help="Tokens to generate at most."),
    temperature: float = typer.Option(0.0, min=0.0, help="0 = greedy."),
    top_k: int = typer.Option(0, min=0, help="Keep the k most likely tokens (0 = off)."),
    top_p: float = typer.Option(1.0, help="Nucleus: the smallest set with this much probability (1 = off)."),
    min_p: float = typer.Option(0.0, help="Keep tokens with p >= min_p * p_max (0 = off)."),
    repetition_penalty: float = typer.Option(1.0, help="> 1 discourages repeating tokens (1 = off)."),
    stop: Optional[list[str]] = typer.Option(None, "--stop", help="Stop string (repeatable); the text is cut before it."),
    seed: Optional[int] = typer.Option(None, help="Seed for sampling (same seed, same output)."),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Apply the chat template (default) or complete raw text."),
    system: Optional[str] = typer.Option(None, help="System prompt (chat only)."),
    precision: str = typer.Option("auto", help="auto, bf16 or fp32."),
):
    """Generate replies for prompts given on the command line or in a file."""
    from tunesmith.infer import SamplingParams, complete
    from tunesmith.models import load_model, load_tokenizer, resolve_model
    from tunesmith.models.precision import resolve_precision

    prompts = list(prompt or []) + (read_prompts(prompts_file) if prompts_file else [])
    if not prompts:
        raise TunesmithError("no prompt given", hint="pass --prompt TEXT (repeatable) or --prompts-file FILE")
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty)
    source = resolve_model(model)
    lm = load_model(source, dtype=resolve_precision(precision).dtype)
    tokenizer = load_tokenizer(source)
    results = complete(lm, tokenizer, prompts, params, chat=chat, max_new_tokens=max_new_tokens, stop=stop, seed=seed, batch_size=batch_size, system=system)
    if output:
        with open(output, "w") as fh:
            for p, r in zip(prompts, results):
                fh.write(json.dumps({"prompt": p, "text": r.text, "finish_reason": r.finish_reason, "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens}) + "\n")
        console.print(f"wrote {len(results)} results to {output}")
        return
    for p, r in zip(prompts, results):
        if len(prompts) > 1:
            console.print(f"[bold]> {p if isinstance(p, str) else p[-1]['content']}[/]", highlight=False)
        console.print(r.text, highlight=False, markup=False)
