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

PPO has a critic instead: `gae(rewards, values, gamma, lam)` is generalised advantage estimation over
the tokens of each response (Schulman et al. 2016), with `whiten` for the batch normalisation PPO
applies to it.
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
        raise TunesmithError(
            f"{rewards.numel()} rewards do not divide into groups of {n}",
            hint="the number of rewards must be a multiple of the group size (completions per prompt)",
        )
    return n


def _to_dict(result) -> dict:
    """Plain floats per completion (JSON-ready); NaN becomes None."""

    def plain(v):
        if isinstance(v, torch.Tensor):
            return [None if x != x else x for x in v.tolist()]
        return v

    return {name: plain(value) for name, value in vars(result).items()}


# ---------------------------------------------------------------- PPO: generalised advantage estimation

WHITEN_EPSILON = 1e-8  # added to the variance before the square root, as TRL's masked_whiten


@dataclass(frozen=True)
class GAEResult:
    """GAE and every intermediate, each shaped like `rewards` ((T,) or (B, T)); padding (mask 0) is 0 throughout.

    The critic's value V_t estimates the return from token t on, before it is generated; past the last
    token the value is 0 (the episode is over)."""

    rewards: torch.Tensor  # r_t: per-token reward (PPO: -kl_coef * KL_t, plus the score on the last token)
    values: torch.Tensor  # V_t
    next_values: torch.Tensor  # V_{t+1} (0 after the last token)
    deltas: torch.Tensor  # TD error: r_t + gamma * V_{t+1} - V_t
    advantages: torch.Tensor  # A_t = delta_t + gamma * lam * A_{t+1}
    returns: torch.Tensor  # A_t + V_t: the critic's target
    gamma: float
    lam: float

    def to_dict(self) -> dict:
        return _to_dict(self)


def gae(rewards: Rewards, values: Rewards, gamma: float = 1.0, lam: float = 0.95, mask: Rewards | None = None) -> GAEResult:
    """Generalised advantage estimation, backwards over the tokens of each response.

    delta_t = r_t + gamma * V_{t+1} - V_t;  A_t = delta_t + gamma * lam * A_{t+1};  returns_t = A_t + V_t.
    rewards, values: (T,) for one response or (B, T) for a batch; mask (same shape, 1 = a response token,
    0 = padding after it) zeroes both past each response's end, so V after the last token is 0. With
    gamma = lam = 1 and one terminal reward R, every A_t is R - V_t: one token with R = 1.0 and V = 0.6
    gives A = +0.4. lam = 0 is the one-step TD error, lam = 1 the Monte-Carlo return minus V_t."""
    if not 0 <= gamma <= 1 or not 0 <= lam <= 1:
        raise TunesmithError(f"gamma is {gamma} and lam is {lam}; both must lie in [0, 1]", hint="PPO for language models uses gamma 1 and lam 0.95")
    r, v = _as_float(rewards), _as_float(values)
    if r.shape != v.shape or r.dim() not in (1, 2) or r.numel() == 0:
        raise TunesmithError(
            f"{tuple(r.shape)} rewards and {tuple(v.shape)} values; give one value per reward (a token each), in the same shape",
            hint="e.g. --rewards 0,0,1 --values 0.5,0.6,0.6",
        )
    v = v.to(r)
    m = torch.ones_like(r) if mask is None else _as_float(mask).to(r)
    r, v = r * m, v * m
    squeeze = r.dim() == 1
    if squeeze:
        r, v, m = r.unsqueeze(0), v.unsqueeze(0), m.unsqueeze(0)
    steps = r.shape[1]
    next_values = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)
    deltas = r + gamma * next_values - v
    advantages = torch.zeros_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in reversed(range(steps)):
        running = deltas[:, t] + gamma * lam * running
        advantages[:, t] = running
    advantages, deltas = advantages * m, deltas * m
    returns = advantages + v
    out = (r, v, next_values, deltas, advantages, returns)
    if squeeze:
        out = tuple(x.squeeze(0) for x in out)
    return GAEResult(*out, gamma=gamma, lam=lam)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the entries where mask is 1 (all entries without a mask)."""
    return x.mean() if mask is None else (x * mask).sum() / mask.sum().clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sample variance (n - 1) over the masked entries, as TRL's masked_var."""
    n = x.numel() if mask is None else mask.sum()
    centered = x - masked_mean(x, mask)
    var = masked_mean(centered**2, mask)
    return var * n / (n - 1) if n > 1 else torch.zeros_like(var)


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True) -> torch.Tensor:
    """(x - mean) / sqrt(var + 1e-8) over the masked entries (PPO's advantage normalisation); with
    shift_mean=False the mean is added back (PPO's optional reward whitening keeps the rewards' sign)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + WHITEN_EPSILON)
    if not shift_mean:
        out = out + mean
    return out if mask is None else out * mask
