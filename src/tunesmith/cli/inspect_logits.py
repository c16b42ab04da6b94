"""`tunesmith inspect logits`: what happens between the logits and the sampled token."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunesmith.cli.inspect import inspect_app
from tunesmith.cli.main import console
from tunesmith.cli.sampling_options import sampling_options
from tunesmith.errors import TunesmithError
from tunesmith.models.builtin import DEFAULT_MODEL

if TYPE_CHECKING:
    from tunesmith.infer.sampling import SamplingParams


@inspect_app.command("logits")
@sampling_options(help_texts={"top_k": "0 = off.", "top_p": "1 = off.", "min_p": "0 = off.", "repetition_penalty": "1 = off."})
def logits(
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="Text to continue (the model's logits)."),
    given: str | None = typer.Option(None, "--logits", help="No model: comma-separated logits, e.g. 4.2,-2.0,1.5,-3.5."),
    tokens: str | None = typer.Option(None, "--tokens", help="With --logits: comma-separated token names (default token0, token1, ...)."),
    model: str | None = typer.Option(None, "--model", "-m", help=f"Built-in name, model/adapter/run directory or .gguf file (default {DEFAULT_MODEL})."),
    chat: bool = typer.Option(False, "--chat/--no-chat", help="Apply the chat template first (default: raw text)."),
    params: SamplingParams = None,
    rows: int = typer.Option(15, min=1, help="Table rows per step."),
    steps: int = typer.Option(1, min=1, help="Walk this many generated tokens."),
    seed: int = typer.Option(0, help="Seed for the sampled walk."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Next-token table: logit, softmax, temperature, cumulative, which filters keep it, final probability.

    With --prompt a model gives the logits; with --logits you do (no model), e.g. --logits 4.2,-2.0,1.5,-3.5 --tokens Paris,London,Rome,Berlin."""
    if (prompt is None) == (given is None):
        raise TunesmithError(
            "give --prompt or --logits, not both" if prompt else "give --prompt (a model's next-token logits) or --logits (numbers of your own)"
        )
    if given is not None:
        from tunesmith.infer.inspect import explain_logits

        if model or chat or steps != 1:
            raise TunesmithError("--model, --chat and --steps need --prompt; --logits explains one step of the numbers given")
        result = [explain_logits(parse_floats(given, "--logits"), params, parse_names(tokens, "--tokens") if tokens else None, rows=rows, seed=seed)]
    else:
        from tunesmith.infer.inspect import walk
        from tunesmith.models import load_pretrained

        if tokens:
            raise TunesmithError("--tokens names the numbers given with --logits; with --prompt the tokenizer names the tokens")
        loaded = load_pretrained(model or DEFAULT_MODEL)
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
    after = "logits given by hand" if step["context_tail"] is None else f"after {escape(repr(step['context_tail']))}"
    table = Table(title=f"step {step['step']}: {after}", title_justify="left")
    cumulative = "cum. after top-k" if params.top_k else "cumulative"
    for col in ("rank", "token", "logit", "p softmax", f"p (T={params.temperature:g})", cumulative, "top-k", "top-p", "min-p", "p final"):
        table.add_column(col, justify="left" if col == "token" else "right")
    for r in step["tokens"]:
        top_p = mark(r["top_p"]) if r["top_k"] else "[dim]·[/]"
        table.add_row(
            str(r["rank"]),
            escape(repr(r["token"])),
            f"{r['logit']:.3f}",
            f"{r['p_softmax']:.4f}",
            f"{r['p_temperature']:.4f}",
            f"{r['cumulative']:.4f}",
            mark(r["top_k"]),
            top_p,
            mark(r["min_p"]),
            f"{r['p_final']:.4f}",
            style="bold" if r["token_id"] == step["chosen_id"] else None,
        )
    return table


def mark(kept: bool) -> str:
    return "[green]✓[/]" if kept else "[red]✗[/]"


def parse_floats(text: str, option: str) -> list[float]:
    """'4.2,-2.0,1.5' -> [4.2, -2.0, 1.5]; a value that is not a finite number is a one-sentence error naming it."""
    values = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise TunesmithError(f"{option}: {item.strip()!r} is not a number; give comma-separated numbers like 1.0,0.2,0.5")
        values.append(value)
    return values


def parse_names(text: str, option: str) -> list[str]:
    """'Paris,London' -> ['Paris', 'London'] (kept as typed, spaces included: ' Paris' is a different token)."""
    names = text.split(",")
    if not all(names):
        raise TunesmithError(f"{option}: {text!r} has an empty name; give comma-separated names like Paris,London")
    return names
