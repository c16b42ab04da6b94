"""`tunesmith inspect rollouts RUN [--step N]`: what an RL step learned from, as the trainer scored it.

GRPO/RLOO: each group of completions with its rewards, mean, std and advantages. PPO: each response of the
rollout batch with its score, KL to the reference, the critic's value and the GAE advantage at its first token."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tunesmith.cli.inspect import inspect_app
from tunesmith.cli.main import console


@inspect_app.command("rollouts")
def rollouts(
    run: str = typer.Argument(..., help="A grpo, rloo or ppo run directory."),
    step: int | None = typer.Option(None, "--step", "-s", help="Optimizer step (default: the last recorded); PPO: the rollout batch that step trained on."),
    groups: int = typer.Option(2, "--groups", "-g", min=1, help="Groups (prompts) to show."),
    completions: int = typer.Option(8, "--completions", "-n", min=1, help="Completions to show per group."),
    width: int = typer.Option(60, "--width", min=10, help="Characters of each completion shown."),
    as_json: bool = typer.Option(False, "--json", help="The step's record as JSON."),
):
    """Per group: each completion, its rewards, the group mean and std, and the advantage the trainer used (PPO: per response, score, KL, value, advantage)."""
    from tunesmith.errors import TunesmithError
    from tunesmith.train.rollout import ROLLOUTS_FILE, read_rollouts

    records = read_rollouts(run)
    if not records:
        raise TunesmithError(f"{run} has no {ROLLOUTS_FILE}", hint="give the directory of a tunesmith grpo, rloo or ppo run (it records every rollout batch)")
    steps = [r["step"] for r in records]
    # PPO samples a batch every few steps: a step trained on the last batch sampled at or before it
    record = records[-1] if step is None else next((r for r in reversed(records) if r["step"] <= step and ("samples" in r or r["step"] == step)), None)
    if record is None:
        raise TunesmithError(f"step {step} is not recorded in {run}", hint=f"recorded steps: {steps[0]}..{steps[-1]}")
    if as_json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return
    if "samples" in record:
        show_ppo(record, steps, completions, width)
        return
    weights = record["weights"]
    formula = " + ".join(f"{w:g} x {name}" for name, w in weights.items())
    console.print(
        f"step {record['step']} of {steps[-1]}: {len(record['groups'])} groups; reward = {formula}; advantage = (reward - group mean) / (group std + 1e-4) as the trainer computed it",
        highlight=False,
        soft_wrap=True,
    )
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
            table.add_row(
                str(i),
                escape(shown),
                *(_fmt(c["rewards"].get(n)) for n in weights),
                _fmt(c["reward"]),
                _fmt(centred, "{:+.3f}"),
                _fmt(c["advantage"], "{:+.3f}"),
                style="green" if (c["advantage"] or 0) > 0 else None,
            )
        print_table(table)
        hidden = len(group["completions"]) - completions
        console.print(
            f"group mean {_fmt(group['mean'])}, std {_fmt(group['std'])} (sample std, n-1)"
            + (f"; {hidden} more completions (--completions)" if hidden > 0 else ""),
            highlight=False,
        )
    if len(record["groups"]) > groups:
        console.print(f"[dim]{len(record['groups']) - groups} more groups (--groups); other steps: --step {steps[0]}..{steps[-1]}[/]")


def show_ppo(record: dict, steps: list[int], rows: int, width: int) -> None:
    """One PPO rollout batch: per response the score, the KL penalty, and the critic's view at its first token."""
    samples = record["samples"]
    console.print(
        f"rollout batch {record['rollout'] + 1} of {len(steps)}, sampled at step {record['step']}: {len(samples)} responses; kl_coef {record['kl_coef']:.4f}; "
        "reward with KL = score - kl_coef x KL; at the first token: V (the critic's value), A (GAE, before whitening), return = A + V",
        highlight=False,
        soft_wrap=True,
    )
    table = Table(title_justify="left")
    for name, justify in (
        ("#", "right"),
        ("prompt", "left"),
        ("response", "left"),
        ("tokens", "right"),
        ("score", "right"),
        ("KL", "right"),
        ("reward with KL", "right"),
        ("V", "right"),
        ("A", "right"),
        ("return", "right"),
    ):
        table.add_column(name, justify=justify)
    ranked = sorted(range(len(samples)), key=lambda i: -samples[i]["score"])
    for i in ranked[:rows]:
        s = samples[i]
        shown = s["completion"].replace("\n", " ")
        shown = shown if len(shown) <= width else shown[: width - 1] + "…"
        table.add_row(
            str(i + 1),
            escape(s["prompt"][:40]),
            escape(shown),
            str(s["tokens"]),
            _fmt(s["score"], "{:+.3f}"),
            _fmt(s["kl"]),
            _fmt(s["reward_with_kl"], "{:+.3f}"),
            _fmt(s["value_first"], "{:+.3f}"),
            _fmt(s["advantage_first"], "{:+.3f}"),
            _fmt(s["return_first"], "{:+.3f}"),
            style="green" if s["advantage_first"] > 0 else None,
        )
    print_table(table)
    mean = sum(s["score"] for s in samples) / len(samples)
    console.print(
        f"mean score {mean:+.3f}; best first" + (f"; {len(samples) - rows} more responses (--completions)" if len(samples) > rows else ""), highlight=False
    )


def print_table(table: Table) -> None:
    """A terminal shrinks the columns to fit; a pipe or file gets the whole table, however wide."""
    out = console if console.is_terminal else Console(width=max(console.width, console.measure(table, options=console.options.update(max_width=1000)).maximum))
    out.print(table)


def _fmt(value, spec: str = "{:.3f}") -> str:
    return "n/a" if value is None else spec.format(value + 0.0)  # + 0.0: no "-0.000"
