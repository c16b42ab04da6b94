"""`tunesmith inspect advantages`: the group-advantage arithmetic GRPO and RLOO do, step by step (no model)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from tunesmith.cli.inspect import inspect_app
from tunesmith.cli.inspect_logits import parse_floats
from tunesmith.cli.main import console
from tunesmith.errors import TunesmithError


@inspect_app.command("advantages")
def advantages(
    rewards: str = typer.Option(..., "--rewards", help="Comma-separated rewards, one per completion, each prompt's group together: 1.0,0.2,0.5"),
    group_size: Optional[int] = typer.Option(None, "--group-size", "-g", min=1, help="Completions per prompt (GRPOConfig.num_generations); default: all rewards are one group."),
    estimator: str = typer.Option("grpo", "--estimator", help="grpo (baseline: the group mean) or rloo (baseline: the mean of the other completions)."),
    scale_rewards: Optional[str] = typer.Option(None, "--scale-rewards", help="GRPO: group (default, TRL's), batch or none."),
    normalize_advantages: bool = typer.Option(False, "--normalize-advantages", help="RLOO: rescale the batch's advantages to mean 0, std 1."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Rewards -> group mean (or leave-one-out baseline) -> reward minus baseline -> std-scaled advantage, as TRL computes them."""
    from tunesmith.train.advantages import DEFAULT_SCALE_REWARDS, EPSILON, STD_KIND, group_advantages, rloo_advantages

    values = parse_floats(rewards, "--rewards")
    eps = f"{EPSILON:.0e}".replace("e-0", "e-")  # 1e-4
    if estimator == "grpo":
        if normalize_advantages:
            raise TunesmithError("--normalize-advantages is RLOO's option; GRPO's is --scale-rewards")
        result = group_advantages(values, group_size, scale_rewards or DEFAULT_SCALE_REWARDS)
        uses = {"group": f"(r - mean) / (group std + {eps})", "batch": f"(r - mean) / (batch std + {eps})", "none": "r - mean"}[result.scale_rewards]
        setting = f"scale_rewards={result.scale_rewards}" + (" (TRL's default)" if result.scale_rewards == DEFAULT_SCALE_REWARDS else "")
    elif estimator == "rloo":
        if scale_rewards:
            raise TunesmithError("--scale-rewards is GRPO's option; RLOO's is --normalize-advantages")
        result = rloo_advantages(values, group_size, normalize_advantages=normalize_advantages)
        uses = f"(A - batch mean) / (batch std + {eps}), A = r - b" if normalize_advantages else "r - b"
        setting = f"normalize_advantages={normalize_advantages}" + ("" if normalize_advantages else " (TRL's default)")
    else:
        raise TunesmithError(f"--estimator is {estimator!r}; it must be grpo or rloo")
    if as_json:
        print(json.dumps({"estimator": estimator, "std_kind": STD_KIND, "epsilon": EPSILON, "trainer_uses": uses, **result.to_dict()}, indent=2))
        return
    n, total = result.group_size, len(values)
    console.print(f"[bold]{estimator.upper()}[/]: {total} rewards, {total // n} group{'s' if total > n else ''} of {n}", highlight=False)
    if estimator == "grpo":
        console.print(f"std: {STD_KIND}", highlight=False)
    if estimator == "grpo" and result.scale_rewards == "batch":
        console.print(f"batch std (all {total} rewards): {result.std[0]:.3f}", highlight=False)
    for start in range(0, total, n):
        show_group(result, estimator, start, n, eps)
    if estimator == "rloo" and normalize_advantages:
        console.print(f"normalised over the batch: {row(result.advantages, 0, total, signed=True)}", highlight=False)
    console.print(f"[bold]the trainer uses {uses}[/]\n  with {setting}", highlight=False)
    if estimator == "rloo":
        console.print("[dim]rewards as given: TRL's RLOO first clips them and subtracts beta x KL[/]", highlight=False)


def show_group(result, estimator: str, start: int, n: int, eps: str) -> None:
    """Print one group's arithmetic; every number is read from `result` (the library computed it)."""
    r = result.rewards[start:start + n].tolist()
    lines = [("rewards r", row(result.rewards, start, n))]
    if estimator == "grpo":
        lines.append(("mean", f"{_sum(r)} / {n} = {result.group_mean[start]:.3f}"))
        lines.append(("r - mean", row(result.centered, start, n, signed=True)))
        if n > 1:
            c = result.centered[start:start + n].tolist()
            squares = " + ".join(f"{x:.3f}²" for x in map(abs, c)) if n <= 6 else f"{n} squares"
            lines.append(("std (n-1)", f"sqrt(({squares}) / {n - 1}) = {result.group_std[start]:.3f}"))
        label = f"(r - mean) / ({'batch ' if result.scale_rewards == 'batch' else ''}std + {eps})"
        lines.append((label, row(result.scaled, start, n, signed=True)))
    else:
        if n > 1:
            lines.append(("baseline b", f"{row(result.baseline, start, n)}   mean of the others"))
            if n > 2:
                lines.append(("", f"e.g. first: {_sum(r[1:])} / {n - 1} = {result.baseline[start]:.3f}"))
        lines.append(("r - b", row(result.centered, start, n, signed=True)))
    width = max(len(label) for label, _ in lines)
    console.print(f"group {start // n + 1}: completions {start + 1}-{start + n}", highlight=False)
    for label, text in lines:
        console.print(f"  {label.ljust(width)}  {text}", highlight=False, markup=False)


def row(values, start: int, n: int, signed: bool = False) -> str:
    return " ".join(f"{x:+7.3f}" if signed else f"{x:7.3f}" for x in values[start:start + n].tolist())


def _sum(values: list[float]) -> str:
    shown = values if len(values) <= 6 else [*values[:3], None, values[-1]]
    return "(" + " + ".join("..." if x is None else f"{x:.3f}" for x in shown) + ")"
