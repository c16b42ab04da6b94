"""Group advantages: hand-computed values, and TRL 1.16's own tensor maths (copied below) as the oracle."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from tunesmith.errors import TunesmithError
from tunesmith.train.advantages import group_advantages, rloo_advantages, weighted_rewards

# ---- the oracle: TRL 1.16's lines, copied (trl/trainer/utils.py nanstd; grpo_trainer.py / rloo_trainer.py
# _generate_and_score_completions, "sum_then_normalize" branch), with self.* turned into arguments


def trl_nanstd(tensor, dim=None):
    mean = torch.nanmean(tensor, dim=dim, keepdim=True)
    variance = torch.nanmean((tensor - mean) ** 2, dim=dim, keepdim=True)
    count = torch.sum(~torch.isnan(tensor), dim=dim, keepdim=True)
    correction = count / (count - 1)
    correction = torch.where(count > 1, correction, torch.full_like(correction, float("nan")))
    variance *= correction
    std = torch.sqrt(variance)
    return std.squeeze() if dim is None else std.squeeze(dim)


def trl_grpo(rewards, num_generations, scale_rewards):
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        if num_generations > 1:
            std_rewards = trl_nanstd(rewards.view(-1, num_generations), dim=1)
            std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
        else:
            std_rewards = torch.zeros_like(rewards)
    elif scale_rewards == "batch":
        if rewards.numel() > 1:
            std_rewards = trl_nanstd(rewards).expand_as(rewards)
        else:
            std_rewards = torch.zeros_like(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def trl_rloo(rewards, num_generations, normalize_advantages):
    grouped_rewards = rewards.view(-1, num_generations)
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    if num_generations > 1:
        baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)
        baselines = baselines.view(-1)
        advantages = rewards - baselines
    else:
        advantages = torch.zeros_like(rewards)
    if normalize_advantages:
        advantages = (advantages - torch.nanmean(advantages)) / (trl_nanstd(advantages) + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def trl_weighted(rewards_per_func, reward_weights):
    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * reward_weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable_mask] = torch.nan
    return rewards


# ---- hand-computed: one group of 3, rewards 1.0, 0.2, 0.5
# mean = (1.0 + 0.2 + 0.5) / 3 = 1.7 / 3 = 0.56667
# reward - mean = +0.43333, -0.36667, -0.06667
# squares: 0.18778 + 0.13444 + 0.00444 = 0.32667
# TRL's std is the sample std (divide by n - 1 = 2): sqrt(0.32667 / 2) = sqrt(0.16333) = 0.40415
#   (the population std, dividing by 3, would be 0.32998: not what TRL uses)
# advantages = (reward - mean) / (0.40415 + 0.0001) = +1.07196, -0.90704, -0.16492
TEXTBOOK = [1.0, 0.2, 0.5]


def test_grpo_textbook_group_by_hand():
    a = group_advantages(TEXTBOOK)
    assert a.group_size == 3 and a.scale_rewards == "group"
    assert a.group_mean.tolist() == pytest.approx([0.56667] * 3, abs=1e-5)
    assert a.centered.tolist() == pytest.approx([0.43333, -0.36667, -0.06667], abs=1e-5)
    assert a.group_std.tolist() == pytest.approx([0.40415] * 3, abs=1e-5)
    assert a.std.tolist() == a.group_std.tolist()
    assert a.advantages.tolist() == pytest.approx([1.07196, -0.90704, -0.16492], abs=1e-5)


def test_grpo_scale_rewards_none_is_reward_minus_mean_and_aliases():
    none = group_advantages(TEXTBOOK, scale_rewards="none")
    assert none.advantages.tolist() == pytest.approx([0.43333, -0.36667, -0.06667], abs=1e-5)
    assert none.std.tolist() == pytest.approx([0.40415] * 3, abs=1e-5)  # TRL still computes it (for logging)
    assert group_advantages(TEXTBOOK, scale_rewards=False).advantages.tolist() == none.advantages.tolist()
    assert group_advantages(TEXTBOOK, scale_rewards=True).advantages.tolist() == group_advantages(TEXTBOOK).advantages.tolist()


def test_grpo_batch_std_with_group_means():
    # groups [1, 0] and [1, 1]: means 0.5 and 1; reward - mean = +0.5, -0.5, 0, 0
    # batch sample std of [1, 0, 1, 1]: mean 0.75, squares 0.0625 * 3 + 0.5625 = 0.75, / 3 = 0.25 -> 0.5
    a = group_advantages([1.0, 0.0, 1.0, 1.0], group_size=2, scale_rewards="batch")
    assert a.group_mean.tolist() == [0.5, 0.5, 1.0, 1.0]
    assert a.std.tolist() == pytest.approx([0.5] * 4)
    assert a.advantages.tolist() == pytest.approx([0.5 / 0.5001, -0.5 / 0.5001, 0.0, 0.0])
    # with the group std the second group (all equal) has std 0: advantage 0 / 1e-4 = 0
    g = group_advantages([1.0, 0.0, 1.0, 1.0], group_size=2)
    assert g.group_std.tolist() == pytest.approx([math.sqrt(0.5)] * 2 + [0.0] * 2)
    assert g.advantages.tolist() == pytest.approx([0.5 / (math.sqrt(0.5) + 1e-4), -0.5 / (math.sqrt(0.5) + 1e-4), 0.0, 0.0])


def test_rloo_textbook_group_by_hand():
    # baselines, the mean of the other two: (0.2 + 0.5) / 2 = 0.35, (1.0 + 0.5) / 2 = 0.75, (1.0 + 0.2) / 2 = 0.6
    # advantages 1.0 - 0.35 = +0.65, 0.2 - 0.75 = -0.55, 0.5 - 0.6 = -0.10 (= 3/2 * (reward - mean))
    a = rloo_advantages(TEXTBOOK)
    assert a.baseline.tolist() == pytest.approx([0.35, 0.75, 0.6], abs=1e-6)
    assert a.advantages.tolist() == pytest.approx([0.65, -0.55, -0.10], abs=1e-6)
    assert a.advantages.tolist() == pytest.approx((1.5 * group_advantages(TEXTBOOK).centered).tolist(), abs=1e-6)
    # normalised over the batch: mean of (0.65, -0.55, -0.10) is 0; sample std sqrt((0.4225 + 0.3025 + 0.01) / 2) = 0.60622
    n = rloo_advantages(TEXTBOOK, normalize_advantages=True)
    assert n.advantages.tolist() == pytest.approx([x / (0.60622 + 1e-4) for x in (0.65, -0.55, -0.10)], abs=1e-4)


def test_rloo_clip_and_kl_penalty_come_before_the_baseline():
    # clip to [0, 0.8]: 0.8, 0.2, 0.5; kl 1, 0, 2 with beta 0.1: 0.7, 0.2, 0.3; baselines 0.25, 0.5, 0.45
    a = rloo_advantages(TEXTBOOK, reward_clip_range=(0.0, 0.8), kl=[1.0, 0.0, 2.0], beta=0.1)
    assert a.rewards.tolist() == pytest.approx([0.7, 0.2, 0.3], abs=1e-6)
    assert a.advantages.tolist() == pytest.approx([0.45, -0.3, -0.15], abs=1e-6)


def test_weighted_rewards_by_hand():
    # two functions, weights 1 and 0.5; NaN = that function skipped the completion; an all-NaN row stays NaN
    per_func = [[1.0, 0.4], [0.0, float("nan")], [float("nan"), float("nan")]]
    total = weighted_rewards(per_func, [1.0, 0.5])
    assert total[:2].tolist() == pytest.approx([1.2, 0.0]) and math.isnan(total[2])
    assert weighted_rewards([[1.0, 2.0]]).tolist() == [3.0]


CASES = [
    ([1.0, 0.2, 0.5], 3),
    ([0.3, -1.2, 2.5, 0.0, 0.7, 0.7, 0.7, 0.7], 4),  # second group all equal
    ([1.0, float("nan"), 0.0, 0.5, 0.25, float("nan")], 3),  # unscorable completions
    ([0.1, 0.9, 0.4, 0.4, 1.0, 0.0], 2),
    ([0.5, 1.5], 1),  # group of one (eval with num_generations_eval=1)
    ([2.0], 1),
]


@pytest.mark.parametrize("rewards, n", CASES)
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_grpo_matches_trl(rewards, n, scale):
    t = torch.tensor(rewards)
    assert torch.equal(group_advantages(t, n, scale).advantages, trl_grpo(t, n, scale))
    assert group_advantages(rewards, n, scale).advantages.tolist() == trl_grpo(t, n, scale).tolist()  # plain floats too


@pytest.mark.parametrize("rewards, n", CASES)
@pytest.mark.parametrize("normalize", [False, True])
def test_rloo_matches_trl(rewards, n, normalize):
    t = torch.tensor(rewards)
    assert torch.equal(rloo_advantages(t, n, normalize_advantages=normalize).advantages, trl_rloo(t, n, normalize))


def test_weighted_rewards_match_trl():
    per_func = torch.tensor([[1.0, 0.4, 0.0], [0.0, float("nan"), 1.0], [float("nan")] * 3, [0.25, 0.5, 0.75]])
    w = torch.tensor([1.0, 0.5, 2.0])
    ours, theirs = weighted_rewards(per_func, w), trl_weighted(per_func, w)
    assert torch.equal(ours.isnan(), theirs.isnan()) and torch.equal(ours.nan_to_num(), theirs.nan_to_num())  # row 2 is NaN in both


def test_bad_input_is_a_sentence():
    with pytest.raises(TunesmithError, match="5 rewards do not divide into groups of 2"):
        group_advantages([1, 2, 3, 4, 5], 2)
    with pytest.raises(TunesmithError, match="scale_rewards is 'mean'"):
        group_advantages(TEXTBOOK, scale_rewards="mean")
    with pytest.raises(TunesmithError, match="2 reward weights for 3 reward functions"):
        weighted_rewards([[1.0, 2.0, 3.0]], [1.0, 1.0])


def test_trl_still_does_what_the_oracle_copies():
    """If TRL changes its advantage maths, this fails: re-read the trainers and update the oracle and the module."""
    trainer_dir = Path(importlib.util.find_spec("trl").origin).parent / "trainer"
    grpo = (trainer_dir / "grpo_trainer.py").read_text()
    rloo = (trainer_dir / "rloo_trainer.py").read_text()
    for line in (
        "std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)",
        "std_rewards = nanstd(rewards).expand_as(rewards)",
        "advantages = rewards - mean_grouped_rewards",
        "advantages = advantages / (std_rewards + 1e-4)",
    ):
        assert line in grpo, line
    for line in (
        "baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)",
        "advantages = (advantages - torch.nanmean(advantages)) / (nanstd(advantages) + 1e-4)",
    ):
        assert line in rloo, line
    assert "variance *= correction  # Bessel's correction" in (trainer_dir / "utils.py").read_text()


def test_defaults_are_trls():
    from trl import GRPOConfig, RLOOConfig

    from tunesmith.train.advantages import DEFAULT_NORMALIZE_ADVANTAGES, DEFAULT_SCALE_REWARDS

    assert GRPOConfig.__dataclass_fields__["scale_rewards"].default == DEFAULT_SCALE_REWARDS
    assert RLOOConfig.__dataclass_fields__["normalize_advantages"].default == DEFAULT_NORMALIZE_ADVANTAGES
    assert RLOOConfig.__dataclass_fields__["beta"].default == rloo_advantages.__kwdefaults__["beta"]
