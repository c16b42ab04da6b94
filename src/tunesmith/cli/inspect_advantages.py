"""`tunesmith inspect advantages`: the advantage arithmetic GRPO and RLOO (group baselines) and PPO
(GAE against a critic's values) do, step by step (no model)."""

from __future__ import annotations

import json

import typer

from tunesmith.cli.inspect import inspect_app
from tunesmith.cli.inspect_logits import parse_floats
from tunesmith.cli.main import console, say
from tunesmith.errors import TunesmithError

GROUP_OPTIONS = (("group_size", "--group-size"), ("scale_rewards", "--scale-rewards"), ("normalize_advantages", "--normalize-advantages"))


@inspect_app.command("advantages")
def advantages(
    ctx: typer.Context,
    rewards: str = typer.Option(
        ...,
        "--rewards",
        help="Comma-separated rewards, one per completion, each prompt's group together: 1.0,0.2,0.5; with --values, one per token of one response: 0,0,1",
    ),
    group_size: int | None = typer.Option(
        None, "--group-size", "-g", min=1, help="Completions per prompt (GRPOConfig.num_generations); default: all rewards are one group."
    ),
    estimator: str | None = typer.Option(
        None,
        "--estimator",
        help="grpo (baseline: the group mean; the default), rloo (baseline: the mean of the other completions) or gae (PPO: baseline the critic's values; the default with --values).",
    ),
    scale_rewards: str | None = typer.Option(None, "--scale-rewards", help="GRPO: group (default, TRL's), batch or none."),
    normalize_advantages: bool = typer.Option(False, "--normalize-advantages", help="RLOO: rescale the batch's advantages to mean 0, std 1."),
    critic_values: str | None = typer.Option(None, "--values", help="GAE: the critic's value V_t for each token, as many as --rewards: 0.5,0.6,0.7"),
    gamma: float = typer.Option(1.0, "--gamma", help="GAE: discount per token (PPOConfig.gamma)."),
    lam: float = typer.Option(0.95, "--lam", help="GAE: lambda, how far each advantage looks ahead (PPOConfig.lam)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Rewards -> baseline -> advantage, as TRL computes them: GRPO's group mean (std-scaled), RLOO's
    leave-one-out mean, or PPO's GAE, where the baseline is the critic's value V_t of each token
    (delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1}, worked backwards)."""
    if critic_values is not None or estimator == "gae":
        group_options = [flag for name, flag in GROUP_OPTIONS if _given(ctx, name)]
        show_gae(rewards, critic_values, estimator, gamma, lam, group_options, as_json)
        return
    if _given(ctx, "gamma") or _given(ctx, "lam"):
        raise TunesmithError("--gamma and --lam are GAE's options; give --values (the critic's value per token) to use GAE")
    estimator = estimator or "grpo"
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
        raise TunesmithError(f"--estimator is {estimator!r}; it must be grpo or rloo (or gae, PPO's, with --values)")
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
    r = result.rewards[start : start + n].tolist()
    lines = [("rewards r", row(result.rewards, start, n))]
    if estimator == "grpo":
        lines.append(("mean", f"{_sum(r)} / {n} = {result.group_mean[start]:.3f}"))
        lines.append(("r - mean", row(result.centered, start, n, signed=True)))
        if n > 1:
            c = result.centered[start : start + n].tolist()
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
    return " ".join(f"{x:+7.3f}" if signed else f"{x:7.3f}" for x in values[start : start + n].tolist())


def _sum(values: list[float]) -> str:
    shown = values if len(values) <= 6 else [*values[:3], None, values[-1]]
    return "(" + " + ".join("..." if x is None else f"{x:.3f}" for x in shown) + ")"


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option was typed on the command line (not left at its default); by the source's name,
    as typer ships its own copy of click's ParameterSource."""
    return getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")


# ---------------------------------------------------------------- PPO: GAE over one response's tokens


def show_gae(rewards: str, critic_values: str | None, estimator: str | None, gamma: float, lam: float, group_options: list[str], as_json: bool) -> None:
    """Check the options, run `gae` and print its arithmetic token by token (every number read from its result)."""
    from tunesmith.train.advantages import gae

    if estimator not in (None, "gae"):
        raise TunesmithError(f"--values is GAE's option (PPO's critic); --estimator {estimator} uses no values, so drop one of them")
    if critic_values is None:
        raise TunesmithError("--estimator gae needs the critic's values: give --values, one per reward (token), e.g. --rewards 0,0,1 --values 0.5,0.6,0.7")
    if group_options:
        raise TunesmithError(
            f"{' and '.join(group_options)} {'is' if len(group_options) == 1 else 'are'} for GRPO and RLOO groups of completions; "
            "GAE (--values) scores the tokens of one response against the critic, so drop "
            f"{'it' if len(group_options) == 1 else 'them'}"
        )
    result = gae(parse_floats(rewards, "--rewards"), parse_floats(critic_values, "--values"), gamma, lam)
    if as_json:
        print(json.dumps({"estimator": "gae", **result.to_dict()}, indent=2))
        return
    n = len(result.rewards)
    say(f"[bold]GAE[/]: {n} token{'s' if n > 1 else ''}, gamma {result.gamma:g}, lam {result.lam:g}", markup=True)
    say("  delta_t = r_t + gamma * V_{t+1} - V_t,  A_t = delta_t + gamma * lam * A_{t+1},  return_t = A_t + V_t")
    say("worked from the last token backwards (after it, V and A are 0):")
    for line in gae_table(result):
        say(f"  {line}")
    say(f"advantages A_t (t = 1..{n}): {row(result.advantages, 0, n, signed=True)}" if n > 1 else f"advantage A: {row(result.advantages, 0, n, signed=True)}")
    say(f"returns (the critic's targets): {row(result.returns, 0, n)}" if n > 1 else f"return (the critic's target): {row(result.returns, 0, n)}")
    for note in gae_notes(result):
        say(note)
    say("[bold]the trainer uses A_t[/], whitened over the batch (mean 0, std 1); the critic learns V_t towards return_t", markup=True)
    say("[dim]rewards as given, per token: tunesmith ppo makes them -kl_coef x KL_t on each token plus the reward model's score on the last[/]", markup=True)


def gae_table(result) -> list[str]:
    """One aligned line per token, last token first, with delta_t, A_t and return_t written out."""
    r, v, nv = result.rewards.tolist(), result.values.tolist(), result.next_values.tolist()
    d, a, ret = result.deltas.tolist(), result.advantages.tolist(), result.returns.tolist()
    g, gl = _factor(result.gamma), f"{_factor(result.gamma)} x {_factor(result.lam)}"
    rows = [("t", "r_t", "V_t", "V_{t+1}", "delta_t = r_t + gamma x V_{t+1} - V_t", "A_t = delta_t + gamma x lam x A_{t+1}", "return_t = A_t + V_t")]
    for t in reversed(range(len(r))):
        after = a[t + 1] if t + 1 < len(a) else 0.0
        rows.append(
            (
                str(t + 1),
                f"{r[t]:.3f}",
                f"{v[t]:.3f}",
                f"{nv[t]:.3f}",
                f"{r[t]:.3f} + {g} x {nv[t]:.3f} - {_paren(v[t])} = {d[t]:+.3f}",
                f"{d[t]:+.3f} + {gl} x {after:+.3f} = {a[t]:+.3f}",
                f"{a[t]:+.3f} + {_paren(v[t])} = {ret[t]:.3f}",
            )
        )
    widths = [max(len(cells[i]) for cells in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) if i < 4 else cell.ljust(w) for i, (cell, w) in enumerate(zip(cells, widths))).rstrip() for cells in rows]


def gae_notes(result) -> list[str]:
    """The textbook special cases, when they apply: gamma = lam = 1 with one terminal reward, and lam = 0."""
    r, v, a = result.rewards.tolist(), result.values.tolist(), result.advantages.tolist()
    notes = []
    if result.gamma == 1 and result.lam == 1 and not any(r[:-1]):
        if len(r) == 1:
            notes.append(f"with gamma = lam = 1 and one terminal reward R: A = R - V = {r[0]:.3f} - {_paren(v[0])} = {a[0]:+.3f}")
        else:
            shown = list(range(len(r))) if len(r) <= 6 else [0, 1, 2, None, len(r) - 1]
            terms = ", ".join("..." if t is None else f"{r[-1]:.3f} - {_paren(v[t])} = {a[t]:+.3f}" for t in shown)
            notes.append(f"with gamma = lam = 1 and one terminal reward R = {r[-1]:.3f}, A_t = R - V_t: {terms}")
    if result.lam == 0:
        notes.append("with lam = 0 each A_t is its delta_t, the one-step TD error")
    return notes


def _factor(x: float) -> str:
    """gamma or lam as 1.00, 0.95 (more digits only where two would round it)."""
    return f"{x:.2f}" if round(x, 2) == x else f"{x:g}"


def _paren(x: float) -> str:
    """A number after a minus sign: 0.600, or (-0.600) when negative."""
    return f"{x:.3f}" if x >= 0 else f"({x:.3f})"
