"""`tunesmith inspect logits`: what happens between the logits and the sampled token."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunesmith.cli.inspect import inspect_app
from tunesmith.cli.main import console
from tunesmith.cli.sampling_options import sampling_options
from tunesmith.models.builtin import DEFAULT_MODEL

if TYPE_CHECKING:
    from tunesmith.infer.sampling import SamplingParams


@inspect_app.command("logits")
@sampling_options(help_texts={"top_k": "0 = off.", "top_p": "1 = off.", "min_p": "0 = off.", "repetition_penalty": "1 = off."})
def logits(
    prompt: str = typer.Option(..., "--prompt", "-p", help="Text to continue."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Built-in name, model/adapter/run directory or .gguf file."),
    chat: bool = typer.Option(False, "--chat/--no-chat", help="Apply the chat template first (default: raw text)."),
    params: SamplingParams = None,
    rows: int = typer.Option(15, min=1, help="Table rows per step."),
    steps: int = typer.Option(1, min=1, help="Walk this many generated tokens."),
    seed: int = typer.Option(0, help="Seed for the sampled walk."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Next-token table: logit, softmax, temperature, cumulative, which filters keep it, final probability."""
    from tunesmith.infer.inspect import walk
    from tunesmith.models import load_pretrained

    loaded = load_pretrained(model)
    result = walk(loaded.model, loaded.tokenizer, prompt, params, steps=steps, rows=rows, chat=chat, seed=seed)
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return
    for step in result:
        table = render_step(step, params)
        # a terminal shrinks the columns to fit; a pipe or file gets the whole table
        width = console.measure(table, options=console.options.update(max_width=1000)).maximum
        (console if console.is_terminal else Console(width=max(console.width, width))).print(table)
        sampling = not params.greedy  # greedy switches every filter off
        on = {"top_k": sampling and params.top_k > 0, "top_p": sampling and params.top_p < 1, "min_p": sampling and params.min_p > 0, "final": True}
        k = {name: f"{n:,}" if on[name] else "off" for name, n in step["kept"].items()}
        console.print(
            f"{'greedy (T=0): ' if params.greedy else ''}kept of {step['vocab_size']:,}: top-k {k['top_k']}, top-p {k['top_p']}, min-p {k['min_p']}, all filters {k['final']}; "
            f"entropy {step['entropy_bits_softmax']:.2f} bits before filters, {step['entropy_bits_final']:.2f} after; "
            f"chose {step['chosen']!r} (p={step['chosen_p']:.4f})",
            highlight=False,
            markup=False,
        )
    if params.top_k and params.top_p < 1:
        console.print("[dim]top-p measures what top-k left (renormalised), as Hugging Face does; · = already removed by top-k[/]")


def render_step(step: dict, params) -> Table:
    table = Table(title=f"step {step['step']}: after {escape(repr(step['context_tail']))}", title_justify="left")
    cumulative = "cum. after top-k" if params.top_k else "cumulative"
    for col in ("rank", "token", "logit", "p softmax", f"p (T={params.temperature:g})", cumulative, "top-k", "top-p", "min-p", "p final"):
        table.add_column(col, justify="left" if col == "token" else "right")
    for r in step["tokens"]:
        top_p = mark(r["top_p"]) if r["top_k"] else "[dim]·[/]"
        table.add_row(str(r["rank"]), escape(repr(r["token"])), f"{r['logit']:.3f}", f"{r['p_softmax']:.4f}", f"{r['p_temperature']:.4f}", f"{r['cumulative']:.4f}",
                      mark(r["top_k"]), top_p, mark(r["min_p"]), f"{r['p_final']:.4f}", style="bold" if r["token_id"] == step["chosen_id"] else None)
    return table


def mark(kept: bool) -> str:
    return "[green]✓[/]" if kept else "[red]✗[/]"
