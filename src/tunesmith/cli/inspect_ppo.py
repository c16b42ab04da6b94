"""`tunesmith inspect clip` and `tunesmith inspect kl`: PPO's two stabilisers on numbers you give,
computed by the functions `tunesmith ppo` trains with (train/ppo.py: policy_loss, kl_penalty_rewards)."""

from __future__ import annotations

import json

import typer

from tunesmith.cli.inspect import inspect_app
from tunesmith.cli.inspect_logits import parse_floats
from tunesmith.cli.main import say
from tunesmith.errors import TunesmithError


@inspect_app.command("clip")
def clip(
    advantage: float = typer.Option(..., "--advantage", "-a", help="The advantage A of one sampled token (e.g. +0.4: better than the critic expected)."),
    ratios: str = typer.Option("0.6,0.8,1.0,1.2,1.5", "--ratios", help="Comma-separated ratios p_new / p_old of that token after some updates."),
    cliprange: float = typer.Option(0.2, "--cliprange", help="PPOConfig.cliprange: ratios are clipped to [1 - c, 1 + c]."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """PPO's clipped surrogate for one token: max(-A x ratio, -A x clip(ratio, 1 - c, 1 + c)) per ratio,
    and whether a gradient still flows (where the clipped term wins, the token stops pulling)."""
    import torch

    from tunesmith.train.ppo import policy_loss

    if not 0 < cliprange < 1:
        raise TunesmithError(f"--cliprange is {cliprange}; it must be between 0 and 1 (PPO's usual 0.2)")
    values = parse_floats(ratios, "--ratios")
    if any(r <= 0 for r in values):
        raise TunesmithError("--ratios are p_new / p_old, so each must be above 0")
    rows = []
    for ratio in values:
        logprob = torch.tensor([[float(torch.tensor(ratio).log())]], requires_grad=True)  # old log p = 0, so exp(logprob) = ratio
        loss, stats = policy_loss(logprob, torch.zeros(1, 1), torch.tensor([[advantage]]), torch.ones(1, 1), cliprange)
        loss.backward()
        rows.append(
            {
                "ratio": ratio,
                "unclipped": -advantage * ratio,
                "clipped": -advantage * min(max(ratio, 1 - cliprange), 1 + cliprange),
                "loss": float(loss.detach()),
                "clipped_term_taken": bool(stats["clip_fraction"] > 0),
                "gradient": float(logprob.grad),
            }
        )
    if as_json:
        print(json.dumps({"advantage": advantage, "cliprange": cliprange, "rows": rows}, indent=2))
        return
    low, high = 1 - cliprange, 1 + cliprange
    say(f"one token, advantage A = {advantage:+.3f}; ratio = p_new / p_old, clipped to [{low:.2f}, {high:.2f}]")
    say("  loss = max(-A x ratio, -A x clip(ratio)); the optimizer lowers it")
    header = ("ratio", "-A x ratio", "-A x clip(ratio)", "loss", "d loss / d log p")
    cells = [header] + [
        (f"{r['ratio']:.2f}", f"{r['unclipped']:+.3f}", f"{r['clipped']:+.3f}", f"{r['loss']:+.3f}", f"{r['gradient']:+.3f}" + _note(r, low, high))
        for r in rows
    ]
    _aligned(cells, 4)
    direction = "raise" if advantage > 0 else "lower"
    say(
        f"A {'>' if advantage > 0 else '<'} 0: the update wants to {direction} this token's probability; past a ratio of "
        f"{high if advantage > 0 else low:.2f} it gains nothing more, so one batch cannot move the policy far"
    )


def _aligned(rows: list[tuple[str, ...]], columns: int) -> None:
    """Print rows indented, their first `columns` cells right-aligned in columns, any further cell as it is."""
    widths = [max(len(r[i]) for r in rows) for i in range(columns)]
    for r in rows:
        say("  " + "  ".join([cell.rjust(w) for cell, w in zip(r[:columns], widths)] + list(r[columns:])))


def _note(row: dict, low: float, high: float) -> str:
    if row["clipped_term_taken"] and row["gradient"] == 0:
        return "   clipped: no push"
    if not low <= row["ratio"] <= high:
        return "   moved the wrong way: not clipped, pulled back"
    return ""


@inspect_app.command("kl")
def kl(
    logprobs: str = typer.Option(..., "--logprobs", help="Comma-separated log p_actor of each response token."),
    ref_logprobs: str = typer.Option(..., "--ref-logprobs", help="Comma-separated log p_reference of the same tokens."),
    score: float = typer.Option(..., "--score", help="The reward model's score of the whole response."),
    kl_coef: float = typer.Option(0.05, "--kl-coef", help="PPOConfig.kl_coef: the price of each nat of drift."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """The KL penalty of tunesmith ppo on one response: KL_t = log p_actor - log p_ref per token, the rewards
    the advantages are computed from (-kl_coef x KL_t on every token, plus the score on the last)."""
    import torch

    from tunesmith.train.ppo import kl_penalty_rewards

    actor, reference = torch.tensor(parse_floats(logprobs, "--logprobs")), torch.tensor(parse_floats(ref_logprobs, "--ref-logprobs"))
    if len(actor) != len(reference):
        raise TunesmithError(f"--logprobs has {len(actor)} values and --ref-logprobs {len(reference)}; give one of each per token")
    if bool((actor > 0).any() or (reference > 0).any()):
        raise TunesmithError("log-probabilities are at most 0 (p <= 1); did you give probabilities? take their log")
    rewards, per_token = kl_penalty_rewards(actor[None].float(), reference[None].float(), torch.tensor([score]), torch.ones(1, len(actor)), kl_coef)
    rewards, per_token = rewards[0].tolist(), per_token[0].tolist()
    if as_json:
        print(json.dumps({"kl_coef": kl_coef, "score": score, "kl": per_token, "kl_sum": sum(per_token), "rewards": rewards}, indent=2))
        return
    say(f"{len(actor)} tokens; KL_t = log p_actor - log p_ref; reward_t = -{kl_coef:g} x KL_t (+ score {score:+.3f} on the last)")
    cells = [("t", "log p_actor", "log p_ref", "KL_t", "reward_t")]
    for t, (a, r, k, w) in enumerate(zip(actor.tolist(), reference.tolist(), per_token, rewards)):
        cells.append((str(t + 1), f"{a:.3f}", f"{r:.3f}", f"{k:+.3f}", f"{w:+.4f}"))
    _aligned(cells, 5)
    total = sum(per_token)
    say(
        f"KL of this response (sum of KL_t, an estimate of KL(actor || reference)): {total:+.3f}; "
        f"penalty {-kl_coef * total:+.4f}, so it earns {score - kl_coef * total:+.4f} in all instead of {score:+.3f}"
    )
