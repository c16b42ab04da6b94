"""`tunesmith inspect rollouts RUN [--step N]`: the groups a GRPO/RLOO step learned from, as the trainer scored them."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunesmith.cli.inspect import inspect_app
from tunesmith.cli.main import console


@inspect_app.command("rollouts")
def rollouts(
    run: str = typer.Argument(..., help="A grpo or rloo run directory."),
    step: Optional[int] = typer.Option(None, "--step", "-s", help="Optimizer step (default: the last recorded)."),
    groups: int = typer.Option(2, "--groups", "-g", min=1, help="Groups (prompts) to show."),
    completions: int = typer.Option(8, "--completions", "-n", min=1, help="Completions to show per group."),
    width: int = typer.Option(60, "--width", min=10, help="Characters of each completion shown."),
    as_json: bool = typer.Option(False, "--json", help="The step's record as JSON."),
):
    """Per group: each completion, its rewards, the group mean and std, and the advantage the trainer used."""
    from tunesmith.errors import TunesmithError
    from tunesmith.train.rollout import ROLLOUTS_FILE, read_rollouts

    records = read_rollouts(run)
    if not records:
        raise TunesmithError(f"{run} has no {ROLLOUTS_FILE}", hint="give the directory of a tunesmith grpo or rloo run (it records every step's groups)")
    steps = [r["step"] for r in records]
    record = records[-1] if step is None else next((r for r in records if r["step"] == step), None)
    if record is None:
        raise TunesmithError(f"step {step} is not recorded in {run}", hint=f"recorded steps: {steps[0]}..{steps[-1]}")
    if as_json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return
    weights = record["weights"]
    formula = " + ".join(f"{w:g} x {name}" for name, w in weights.items())
    console.print(f"step {record['step']} of {steps[-1]}: {len(record['groups'])} groups; reward = {formula}; advantage = (reward - group mean) / (group std + 1e-4) as the trainer computed it", highlight=False, soft_wrap=True)
    for number, group in enumerate(record["groups"][:groups], 1):
        table = Table(title=f"group {number}: {escape(group['prompt'])}", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("completion")
        for name in weights:
            table.add_column(name, justify="right")
        table.add_column("reward", justify="right")
        table.add_column("- mean", justify="right")
        table.add_column("advantage", justify="right")
        for i, c in enumerate(group["completions"][:completions], 1):
            shown = c["completion"].replace("\n", " ")
            shown = shown if len(shown) <= width else shown[: width - 1] + "…"
            centred = None if c["reward"] is None or group["mean"] is None else c["reward"] - group["mean"]
            table.add_row(str(i), escape(shown), *(_fmt(c["rewards"].get(n)) for n in weights), _fmt(c["reward"]), _fmt(centred, "{:+.3f}"), _fmt(c["advantage"], "{:+.3f}"), style="green" if (c["advantage"] or 0) > 0 else None)
        # a terminal shrinks the columns to fit; a pipe or file gets the whole table
        out = console if console.is_terminal else Console(width=max(console.width, console.measure(table, options=console.options.update(max_width=1000)).maximum))
        out.print(table)
        hidden = len(group["completions"]) - completions
        console.print(f"group mean {_fmt(group['mean'])}, std {_fmt(group['std'])} (sample std, n-1)" + (f"; {hidden} more completions (--completions)" if hidden > 0 else ""), highlight=False)
    if len(record["groups"]) > groups:
        console.print(f"[dim]{len(record['groups']) - groups} more groups (--groups); other steps: --step {steps[0]}..{steps[-1]}[/]")


def _fmt(value, spec: str = "{:.3f}") -> str:
    return "n/a" if value is None else spec.format(value + 0.0)  # + 0.0: no "-0.000"
