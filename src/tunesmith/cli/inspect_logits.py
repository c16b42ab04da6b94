"""`tunesmith inspect logits`: what happens between the logits and the sampled token."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from tunesmith.cli.inspect import inspect_app
from tunesmith.cli.main import console


@inspect_app.command("logits")
def logits(
    prompt: str = typer.Option(..., "--prompt", "-p", help="Text to continue."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Built-in name, model/adapter/run directory or .gguf file."),
    chat: bool = typer.Option(False, "--chat/--no-chat", help="Apply the chat template first (default: raw text)."),
    temperature: float = typer.Option(1.0, min=0.0, help="0 = greedy."),
    top_k: int = typer.Option(0, min=0, help="0 = off."),
    top_p: float = typer.Option(1.0, help="1 = off."),
    min_p: float = typer.Option(0.0, help="0 = off."),
    repetition_penalty: float = typer.Option(1.0, help="1 = off."),
    rows: int = typer.Option(15, min=1, help="Table rows per step."),
    steps: int = typer.Option(1, min=1, help="Walk this many generated tokens."),
    seed: int = typer.Option(0, help="Seed for the sampled walk."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Next-token table: logit, softmax, temperature, cumulative, which filters keep it, final probability."""
    from tunesmith.infer.inspect import walk
    from tunesmith.infer.sampling import SamplingParams, entropy_bits
    from tunesmith.models import load_model, load_tokenizer, resolve_model

    source = resolve_model(model)
    tokenizer = load_tokenizer(source)
    lm = load_model(source)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, repetition_penalty=repetition_penalty)
    result = walk(lm, tokenizer, prompt, params, steps=steps, rows=rows, chat=chat, seed=seed)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for step in result:
        table = Table(title=f"step {step['step']}: after {step['context_tail']!r}", title_justify="left")
        for col in ("rank", "token", "logit", "p softmax", f"p (T={temperature:g})", "cumulative", "top-k", "top-p", "min-p", "p final"):
            table.add_column(col, justify="right" if col not in ("token",) else "left")
        mark = lambda b: "[green]✓[/]" if b else "[red]✗[/]"  # noqa: E731
        for r in step["tokens"]:
            style = "bold" if r["token_id"] == step["chosen_id"] else None
            table.add_row(str(r["rank"]), repr(r["token"]), f"{r['logit']:.3f}", f"{r['p_softmax']:.4f}", f"{r['p_temperature']:.4f}", f"{r['cumulative']:.4f}",
                          mark(r["top_k"]), mark(r["top_p"]), mark(r["min_p"]), f"{r['p_final']:.4f}", style=style)
        console.print(table)
        k = step["kept"]
        console.print(
            f"kept of {step['vocab_size']:,}: top-k {k['top_k']:,}, top-p {k['top_p']:,}, min-p {k['min_p']:,}, all filters {k['final']:,}; "
            f"entropy {entropy_bits(step['entropy_softmax']):.2f} bits before filters, {entropy_bits(step['entropy_final']):.2f} after; "
            f"chose {step['chosen']!r} (p={step['chosen_p']:.4f})",
            highlight=False,
        )
