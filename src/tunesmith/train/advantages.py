"""Advantages: how much better each completion did than its baseline, the number RL trainers scale log-probs by.

Group methods (GRPO, RLOO) sample `group_size` completions per prompt and need no value model: the
baseline comes from the group itself. The arithmetic here is TRL 1.16's, line for line
(`GRPOTrainer._generate_and_score_completions`, `RLOOTrainer._generate_and_score_completions`), so the
numbers `tunesmith inspect advantages` prints are the numbers the trainer uses.

Shapes: `rewards` is (N,) with N = num_prompts * group_size, each prompt's completions contiguous
([p0c0, p0c1, ..., p1c0, ...]), as TRL lays them out; every result field is (N,) again.

The std is the *sample* std (Bessel's correction, divide by n - 1), as `torch.std` and TRL's
`nanstd`; the trainer divides by (std + 1e-4) so a group whose rewards are all equal gets
advantage 0 instead of 0/0. A NaN reward (a completion every reward function skipped) is left out of
the means and stds and gets advantage 0, as TRL does.

PPO's GAE (`gae(rewards, values, gamma, lam)`) will live here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from tunesmith.errors import TunesmithError

EPSILON = 1e-4  # TRL adds this to the std before dividing (GRPO's scale_rewards, RLOO's normalize_advantages)
STD_KIND = "sample std (n-1), as torch.std and TRL's nanstd"
SCALE_REWARDS = ("group", "batch", "none")  # GRPOConfig.scale_rewards; True means "group", False "none"
DEFAULT_SCALE_REWARDS = "group"  # GRPOConfig's default
DEFAULT_NORMALIZE_ADVANTAGES = False  # RLOOConfig's default

Rewards = Sequence[float] | torch.Tensor


def weighted_rewards(rewards_per_func: Sequence[Sequence[float]] | torch.Tensor, weights: Sequence[float] | None = None) -> torch.Tensor:
    """(N, F) rewards from F reward functions -> (N,) one reward per completion: sum_f weight_f * reward_f.

    TRL's `reward_weights` (default all 1). A NaN entry (that function skipped this completion) counts as 0
    (nansum); a row that is NaN for every function stays NaN (unscorable), as in TRL."""
    per_func = _as_float(rewards_per_func)
    if per_func.dim() != 2:
        raise TunesmithError(f"rewards per function must be a (completions, functions) table; got shape {tuple(per_func.shape)}")
    w = torch.ones(per_func.shape[1], dtype=per_func.dtype) if weights is None else _as_float(weights).to(per_func.dtype)
    if w.shape != (per_func.shape[1],):
        raise TunesmithError(f"{len(w)} reward weights for {per_func.shape[1]} reward functions", hint="give one weight per reward function")
    total = (per_func * w.to(per_func.device).unsqueeze(0)).nansum(dim=1)  # (N,)
    total[torch.isnan(per_func).all(dim=1)] = torch.nan
    return total


@dataclass(frozen=True)
class GroupAdvantages:
    """GRPO's advantages and every intermediate, each (N,): one value per completion."""

    rewards: torch.Tensor
    group_size: int
    scale_rewards: str  # "group" | "batch" | "none"
    group_mean: torch.Tensor  # mean of the completion's group (NaN rewards left out)
    group_std: torch.Tensor  # sample std (n-1) of its group; 0 when group_size == 1
    centered: torch.Tensor  # reward - group_mean
    std: torch.Tensor  # TRL's std_rewards: group_std ("group", "none": logged only), the whole batch's sample std ("batch")
    scaled: torch.Tensor  # centered / (std + EPSILON)
    advantages: torch.Tensor  # what the trainer uses: scaled, or centered when scale_rewards == "none"; 0 for NaN rewards

    def to_dict(self) -> dict:
        return _to_dict(self)


@dataclass(frozen=True)
class RLOOAdvantages:
    """RLOO's advantages and every intermediate, each (N,)."""

    rewards: torch.Tensor  # after reward_clip_range and the KL penalty: what the baseline averages
    group_size: int
    normalize_advantages: bool
    group_mean: torch.Tensor  # logged by TRL, not used by the advantage
    group_std: torch.Tensor
    baseline: torch.Tensor  # mean of the OTHER completions in the group: (group sum - reward) / (n - 1)
    centered: torch.Tensor  # reward - baseline (= n/(n-1) * (reward - group_mean))
    advantages: torch.Tensor  # centered, or (centered - batch mean) / (batch sample std + EPSILON) when normalising; 0 for NaN

    def to_dict(self) -> dict:
        return _to_dict(self)


def group_advantages(rewards: Rewards, group_size: int | None = None, scale_rewards: str | bool = DEFAULT_SCALE_REWARDS) -> GroupAdvantages:
    """GRPO: A_i = (r_i - mean(group)) / (std + 1e-4), or r_i - mean(group) when scale_rewards is "none".

    rewards (N,), N a multiple of group_size (None: all rewards are one group). std is the sample std
    (n - 1) of the completion's group ("group", TRL's default) or of the whole batch ("batch"); the
    mean is the group's in both. Example: rewards 1.0, 0.2, 0.5 -> mean 0.567, std 0.404, advantages
    +1.072, -0.907, -0.165."""
    scale = {True: "group", False: "none"}.get(scale_rewards, scale_rewards)  # GRPOConfig's aliases
    if scale not in SCALE_REWARDS:
        raise TunesmithError(f"scale_rewards is {scale_rewards!r}; it must be one of {', '.join(SCALE_REWARDS)}")
    r = _as_float(rewards)
    n = _group_size(r, group_size)
    grouped = r.view(-1, n)  # (num_prompts, n)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(n)
    group_std = nanstd(grouped, dim=1).repeat_interleave(n) if n > 1 else torch.zeros_like(r)
    if scale == "batch":
        std = nanstd(r).expand_as(r) if r.numel() > 1 else torch.zeros_like(r)
    else:
        std = group_std
    centered = r - mean
    scaled = centered / (std + EPSILON)
    advantages = centered if scale == "none" else scaled
    return GroupAdvantages(r, n, scale, mean, group_std, centered, std, scaled, torch.nan_to_num(advantages, nan=0.0))


def rloo_advantages(
    rewards: Rewards,
    group_size: int | None = None,
    *,
    normalize_advantages: bool = DEFAULT_NORMALIZE_ADVANTAGES,
    reward_clip_range: tuple[float, float] | None = None,
    kl: Rewards | None = None,
    beta: float = 0.05,
) -> RLOOAdvantages:
    """RLOO: A_i = r_i - mean_{j != i} r_j, the leave-one-out baseline over the group's other completions.

    rewards (N,); group_size as for `group_advantages`. Before the baseline, as TRL does: clip to
    reward_clip_range, then subtract beta * kl (kl (N,): each completion's summed per-token log-ratio
    to the reference, RLOO's KL-in-the-reward; None: no penalty). normalize_advantages rescales over
    the whole batch: (A - mean(A)) / (sample std(A) + 1e-4). Example: rewards 1.0, 0.2, 0.5 ->
    baselines 0.35, 0.75, 0.6 -> advantages +0.65, -0.55, -0.10."""
    r = _as_float(rewards)
    n = _group_size(r, group_size)
    if reward_clip_range:
        r = r.clamp(min=reward_clip_range[0], max=reward_clip_range[1])
    if kl is not None:
        r = r - beta * _as_float(kl).to(r)
    grouped = r.view(-1, n)  # (num_prompts, n)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(n)
    group_std = nanstd(grouped, dim=1).repeat_interleave(n) if n > 1 else torch.zeros_like(r)
    if n > 1:
        scorable = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)  # (num_prompts, 1)
        baseline = ((torch.nansum(grouped, dim=1, keepdim=True) - grouped) / (scorable - 1)).view(-1)
        centered = r - baseline
    else:  # no other completion to compare with
        baseline, centered = torch.full_like(r, torch.nan), torch.zeros_like(r)
    advantages = (centered - torch.nanmean(centered)) / (nanstd(centered) + EPSILON) if normalize_advantages else centered
    return RLOOAdvantages(r, n, normalize_advantages, mean, group_std, baseline, centered, torch.nan_to_num(advantages, nan=0.0))


def nanstd(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sample std (divide by n - 1) ignoring NaNs; NaN where fewer than 2 values. TRL's `nanstd`."""
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    variance = torch.nanmean((x - mean) ** 2, dim=dim, keepdim=True)
    count = torch.sum(~torch.isnan(x), dim=dim, keepdim=True)
    correction = torch.where(count > 1, count / (count - 1), torch.full_like(variance, torch.nan))
    std = torch.sqrt(variance * correction)
    return std.squeeze(dim) if dim is not None else std.reshape(())


def _as_float(values) -> torch.Tensor:
    """Floats or a tensor -> a float tensor (float32, TRL's reward dtype, unless already floating)."""
    t = values if isinstance(values, torch.Tensor) else torch.tensor(values, dtype=torch.float32)
    return t if t.is_floating_point() else t.float()


def _group_size(rewards: torch.Tensor, group_size: int | None) -> int:
    if rewards.dim() != 1 or rewards.numel() == 0:
        raise TunesmithError(f"rewards must be a non-empty list, one per completion; got shape {tuple(rewards.shape)}")
    n = rewards.numel() if group_size is None else group_size
    if n < 1 or rewards.numel() % n:
        raise TunesmithError(f"{rewards.numel()} rewards do not divide into groups of {n}",
                             hint="the number of rewards must be a multiple of the group size (completions per prompt)")
    return n


def _to_dict(result) -> dict:
    """Plain floats per completion (JSON-ready); NaN becomes None."""
    def plain(v):
        if isinstance(v, torch.Tensor):
            return [None if x != x else x for x in v.tolist()]
        return v

    return {name: plain(value) for name, value in vars(result).items()}
