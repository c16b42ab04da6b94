"""PPO: its pieces against hand-computed numbers, then end to end on the tiny random model.

The pieces (train/advantages.py, train/ppo.py): GAE on a short sequence and its reduction to A = R - V,
whitening, the KL penalty folded into the rewards, the clipped surrogate at ratios inside and outside
[1 - eps, 1 + eps] for both signs of the advantage, the clipped value loss, the adaptive KL coefficient.
End to end: the mean reward of an easy rule-based reward rises while the KL stays bounded, the plan is what
the trainer did, and a resumed run continues the same run.
"""

import math

import pytest
import torch
from recorders import Recorder, StopAt, assert_run_followed_plan  # tests/train/recorders.py

from tunesmith.errors import RecipeError
from tunesmith.runs.rundir import RunDir
from tunesmith.train.advantages import gae, whiten
from tunesmith.train.ppo import AdaptiveKL, explained_variance, kl_penalty_rewards, policy_loss, value_loss
from tunesmith.train.rollout import read_rollouts
from tunesmith.train.scaffold import run_stage

# ---------------------------------------------------------------- the pieces, by hand


def test_gae_reduces_to_reward_minus_value_for_one_terminal_reward():
    one = gae([1.0], [0.6], gamma=1.0, lam=1.0)
    assert one.advantages.tolist() == pytest.approx([0.4])  # the textbook A = R - V = 1.0 - 0.6
    assert one.returns.tolist() == pytest.approx([1.0])
    three = gae([0.0, 0.0, 1.0], [0.5, 0.6, 0.7], gamma=1.0, lam=1.0)
    assert three.advantages.tolist() == pytest.approx([0.5, 0.4, 0.3])  # R - V_t at every token


def test_gae_on_a_short_sequence_by_hand():
    # gamma 1, lam 0.95: deltas r + V' - V = 0 + 0.6 - 0.5, 0 + 0.7 - 0.6, 1 + 0 - 0.7
    result = gae([0.0, 0.0, 1.0], [0.5, 0.6, 0.7], gamma=1.0, lam=0.95)
    assert result.deltas.tolist() == pytest.approx([0.1, 0.1, 0.3])
    a2 = 0.3
    a1 = 0.1 + 0.95 * a2  # 0.385
    a0 = 0.1 + 0.95 * a1  # 0.46575
    assert result.advantages.tolist() == pytest.approx([a0, a1, a2])
    assert result.returns.tolist() == pytest.approx([a0 + 0.5, a1 + 0.6, a2 + 0.7])
    # gamma 0.9, lam 0: the one-step TD error, the discount on the next value
    td = gae([0.0, 1.0], [0.2, 0.5], gamma=0.9, lam=0.0)
    assert td.advantages.tolist() == pytest.approx([0.0 + 0.9 * 0.5 - 0.2, 1.0 - 0.5])


def test_gae_masks_padding_so_the_value_after_the_last_token_is_zero():
    rewards = torch.tensor([[0.0, 1.0, 5.0]])  # the 5.0 and the 9.0 are padding
    values = torch.tensor([[0.2, 0.3, 9.0]])
    result = gae(rewards, values, gamma=1.0, lam=1.0, mask=torch.tensor([[1.0, 1.0, 0.0]]))
    assert result.advantages[0].tolist() == pytest.approx([0.8, 0.7, 0.0])


def test_whitening_gives_mean_zero_unit_sample_std_over_the_mask():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, mask)
    # mean 2, sample variance ((1 + 0 + 1) / 2) = 1 -> (x - 2) / 1
    assert w[0].tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)
    assert whiten(x, mask, shift_mean=False)[0].tolist() == pytest.approx([1.0, 2.0, 3.0, 0.0], abs=1e-6)


def test_kl_penalty_is_folded_into_per_token_rewards_with_the_score_on_the_last_token():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -1.0, -7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = kl_penalty_rewards(logprobs, ref, torch.tensor([1.0, -2.0]), mask, kl_coef=0.1)
    assert kl.flatten().tolist() == pytest.approx([0.5, -1.0, 0.0, 1.0, 0.0, 0.0])
    assert rewards.flatten().tolist() == pytest.approx([-0.05, 0.1, 1.0, -0.1, -2.0, 0.0])


@pytest.mark.parametrize(
    ("ratio", "advantage", "expected", "clipped"),
    [
        (1.1, 2.0, -2.2, False),  # inside [0.8, 1.2]: -A * ratio
        (1.5, 2.0, -2.4, True),  # A > 0 above 1.2: held at -A * 1.2, no gain from pushing further
        (0.5, 2.0, -1.0, False),  # A > 0 below 0.8: the unclipped (worse) term is kept
        (0.5, -2.0, 1.6, True),  # A < 0 below 0.8: held at -A * 0.8
        (1.5, -2.0, 3.0, False),  # A < 0 above 1.2: the unclipped (worse) term is kept
        (0.9, -2.0, 1.8, False),  # inside
    ],
)
def test_clipped_surrogate_inside_and_outside_the_clip_range(ratio, advantage, expected, clipped):
    old = torch.tensor([[math.log(0.2)]])
    new = old + math.log(ratio)
    loss, stats = policy_loss(new, old, torch.tensor([[advantage]]), torch.ones(1, 1), cliprange=0.2)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert stats["clip_fraction"].item() == (1.0 if clipped else 0.0)
    assert stats["approx_kl"].item() == pytest.approx(0.5 * math.log(ratio) ** 2, rel=1e-5)


def test_clipped_value_loss_by_hand():
    old, returns = torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.0]])
    values = torch.tensor([[1.0, 0.6]])  # first moved 0.5 (clipped to 0.7), second 0.1 (inside 0.2)
    loss, stats = value_loss(values, old, returns, torch.ones(1, 2), cliprange_value=0.2)
    # token 1: max((1.0 - 1.0)^2, (0.7 - 1.0)^2) = 0.09; token 2: max(0.36, 0.36) = 0.36
    assert loss.item() == pytest.approx(0.5 * (0.09 + 0.36) / 2)
    assert stats["value_clip_fraction"].item() == pytest.approx(0.5)


def test_explained_variance_and_adaptive_kl():
    returns = torch.tensor([[1.0, 2.0, 3.0]])
    assert explained_variance(returns, returns, torch.ones(1, 3)) == pytest.approx(1.0)
    assert explained_variance(torch.full((1, 3), 2.0), returns, torch.ones(1, 3)) == pytest.approx(0.0)
    kl = AdaptiveKL(0.1, target=6.0, horizon=100)
    kl.update(12.0, n=10)  # error clipped to +0.2: x (1 + 0.2 * 10 / 100)
    assert kl.value == pytest.approx(0.102)
    kl.update(3.0, n=10)  # error -0.5 clipped to -0.2
    assert kl.value == pytest.approx(0.102 * 0.98)
    fixed = AdaptiveKL(0.1)
    fixed.update(100.0, n=10)
    assert fixed.value == 0.1


# ---------------------------------------------------------------- end to end on the tiny model


@pytest.fixture
def ppo_recipe(tiny_recipe, prompts_jsonl):
    """8 prompts a rollout (2 minibatches of 4, 2 epochs: 4 steps per rollout), responses of up to 8 tokens."""

    def make(**overrides):
        base = {
            "stage": "ppo",
            "data.dataset": str(prompts_jsonl / "train.jsonl"),
            "data.eval_dataset": str(prompts_jsonl / "eval.jsonl"),
            "training.per_device_train_batch_size": 2,
            "training.gradient_accumulation_steps": 2,
            "training.max_steps": 8,
            "training.save_steps": 2,
            "training.logging_steps": 1,
            "training.warmup_ratio": 0.0,
            "training.learning_rate": 1e-3,
            "ppo.ppo_epochs": 2,
            "ppo.num_mini_batches": 2,
            "ppo.max_completion_length": 8,
            "ppo.sample_every": 0,
            "ppo.rewards": [{"function": f"{prompts_jsonl / 'short.py'}:shortness"}],
        }
        base.update(overrides)
        return tiny_recipe(**base)

    return make


def logged(run_dir, key) -> dict[int, float]:
    return {m["step"]: m[key] for m in RunDir(run_dir).read_metrics() if key in m}


@pytest.mark.slow  # enough steps to learn (~8 s); the fast suite keeps the adaptive KL run and PPO's pieces by hand
@pytest.mark.usefixtures("one_thread")
def test_ppo_learns_an_easy_reward_with_bounded_kl(ppo_recipe):
    # 8 prompts a rollout, 2 epochs of one minibatch: a rollout every 2 steps, 12 in all
    overrides = {"training.per_device_train_batch_size": 4, "ppo.num_mini_batches": 1, "training.max_steps": 24, "training.save_strategy": "no"}
    recipe = ppo_recipe(**{**overrides, "method": "full", "training.learning_rate": 2e-3, "ppo.top_k": 10, "ppo.kl_coef": 0.1})
    result = run_stage(recipe, live=False)
    rewards = logged(result.run_dir, "reward")  # logged at the steps where a rollout batch was sampled
    values = list(rewards.values())
    assert len(values) == 12
    first, last = sum(values[:3]) / 3, sum(values[-3:]) / 3
    assert last > first + 0.15, rewards  # a clear rise, not noise
    kl = logged(result.run_dir, "kl")
    assert max(abs(v) for v in kl.values()) < 5.0, kl
    for key in ("reward_with_kl", "entropy", "clip_fraction", "approx_kl", "value_loss", "policy_loss", "explained_variance", "response_length", "kl_coef"):
        assert logged(result.run_dir, key), key
    for png in ("loss.png", "reward.png", "kl.png", "critic.png"):
        assert (result.run_dir / png).is_file(), png
    records = read_rollouts(result.run_dir)
    assert len(records) == 12 and [r["step"] for r in records] == list(range(1, 24, 2))
    assert all(len(r["samples"]) == 8 for r in records)
    assert (result.model_dir / "config.json").is_file() and not (result.model_dir / "critic").exists()
    assert result.changes and result.changes[0].metric.startswith("mean reward")


@pytest.mark.slow  # two runs of 8 steps (~20 s); the fast suite keeps PPO's pieces by hand and the adaptive KL run
@pytest.mark.usefixtures("one_thread")
def test_ppo_with_lora_follows_the_plan_and_resumes_the_same_run(ppo_recipe):
    from tunesmith.train.plan import make_plan

    recipe = ppo_recipe()
    plan = make_plan(recipe)
    recorder = Recorder()
    whole = run_stage(recipe, live=False, callbacks=[recorder])
    assert_run_followed_plan(plan, recorder, whole)
    assert (whole.model_dir / "adapter_config.json").is_file()
    assert any("four models" in n for n in plan.notes)
    assert {"critic", "reward_model"} <= set(plan.memory_bytes)

    # 12 steps = 1.5 epochs (an epoch is 2 rollout batches of 4 steps). Stopped after step 9, the run resumes from
    # checkpoint 8 and samples the third batch in the second epoch (its prompt order must be that epoch's); stopped
    # after step 11, from checkpoint 10, inside the third batch (the saved rollouts must be trained on, none sampled)
    longer = {"training.max_steps": 12, "training.save_total_limit": 1}
    whole = run_stage(ppo_recipe(**longer, output_dir=str(whole.run_dir.parent / "whole12")), live=False)
    full_losses = logged(whole.run_dir, "loss")
    for stop in (9, 11):
        interrupted = run_stage(ppo_recipe(**longer, output_dir=str(whole.run_dir.parent / f"stop{stop}")), live=False, callbacks=[StopAt(stop)])
        assert interrupted.steps == stop
        resumed = run_stage(resume=str(interrupted.run_dir), live=False)
        assert resumed.steps == 12
        resumed_losses = logged(resumed.run_dir, "loss")
        assert resumed_losses.keys() == full_losses.keys()
        for step in full_losses:
            assert resumed_losses[step] == pytest.approx(full_losses[step], rel=1e-4, abs=1e-6), (stop, step)
        assert [r["samples"] for r in read_rollouts(resumed.run_dir)] == [r["samples"] for r in read_rollouts(whole.run_dir)], stop

    # `inspect rollouts --step 8` shows the batch step 8 trained on: the second, sampled at step 5
    from typer.testing import CliRunner

    from tunesmith.cli.main import _register, app

    _register()
    shown = CliRunner().invoke(app, ["inspect", "rollouts", str(whole.run_dir), "--step", "8", "--completions", "8"])
    # (whole is the 12-step run: its second batch was sampled at step 5 and trained steps 5-8)
    assert shown.exit_code == 0, shown.output
    assert "rollout batch 2 of 3, sampled at step 5: 8 responses" in shown.output
    best = max(read_rollouts(whole.run_dir)[1]["samples"], key=lambda s: s["score"])
    assert f"{best['score']:+.3f}" in shown.output and f"{best['advantage_first']:+.3f}" in shown.output


def test_ppo_refuses_bad_settings_before_a_run_exists(ppo_recipe, tmp_path):
    with pytest.raises(RecipeError, match="rollout batch is 40 prompts"):
        run_stage(ppo_recipe(**{"training.per_device_train_batch_size": 10}), live=False)
    with pytest.raises(RecipeError, match="target_kl"):
        run_stage(ppo_recipe(**{"ppo.kl_coef": 0.0, "ppo.target_kl": 1.0}), live=False)
    # a reward model of another vocabulary cannot start the critic, which reads the actor's token ids
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from tunesmith.train.stages import get_stage

    other = tmp_path / "other-reward"
    LlamaForSequenceClassification(
        LlamaConfig(vocab_size=500, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_labels=1, pad_token_id=0)
    ).save_pretrained(other)
    with pytest.raises(RecipeError, match="vocabulary of 500 tokens"):
        run_stage(ppo_recipe(**{"ppo.rewards": [{"reward_model": str(other)}]}), live=False)
    with pytest.raises(RecipeError, match="QLoRA"):  # (on this CPU the scaffold's preflight refuses QLoRA even earlier)
        get_stage("ppo").check(ppo_recipe(method="qlora"))
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a PPO run (~3 s); the fast suite keeps the adaptive KL run
@pytest.mark.usefixtures("one_thread")
def test_ppo_without_a_kl_penalty_builds_no_reference(ppo_recipe):
    from tunesmith.train.plan import make_plan

    recipe = ppo_recipe(**{"method": "full", "ppo.kl_coef": 0.0, "training.max_steps": 4, "training.save_strategy": "no"})
    assert "reference" not in make_plan(recipe).memory_bytes
    result = run_stage(recipe, live=False)
    assert result.steps == 4
    assert all(v == 0.0 for v in logged(result.run_dir, "kl").values())


@pytest.mark.usefixtures("one_thread")
def test_adaptive_kl_coef_moves_as_the_controller_says_in_a_run(ppo_recipe):
    """target_kl: after each rollout batch kl_coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon, with the
    batch's logged KL; a short horizon makes the move visible in two batches."""
    recipe = ppo_recipe(**{"training.max_steps": 8, "training.save_strategy": "no", "ppo.kl_coef": 0.05, "ppo.target_kl": 0.5, "ppo.kl_horizon": 16})
    result = run_stage(recipe, live=False)
    kl, coef = logged(result.run_dir, "kl"), logged(result.run_dir, "kl_coef")
    (first, second) = sorted(kl)[:2]
    assert coef[first] == pytest.approx(0.05)
    error = max(-0.2, min(0.2, kl[first] / 0.5 - 1))
    assert coef[second] == pytest.approx(0.05 * (1 + error * 8 / 16), rel=1e-5)
