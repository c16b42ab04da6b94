"""GRPO and RLOO end to end on the tiny random model.

The trainer learns from a reward it can learn (shorter completions score higher), the KL to the
reference stays bounded, every group's advantages in rollouts.jsonl are the arithmetic of
train/advantages.py, a resumed run samples exactly what the uninterrupted one did, the plan is what
the trainer did, and bad reward set-ups fail before a run directory exists.
"""

import json

import pytest
from recorders import Recorder, StopAt, assert_run_followed_plan  # tests/train/recorders.py

from tunesmith.errors import RecipeError
from tunesmith.runs.rundir import RunDir
from tunesmith.train.advantages import group_advantages, rloo_advantages
from tunesmith.train.rollout import read_rollouts
from tunesmith.train.scaffold import run_stage

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def rl_recipe(tiny_recipe, prompts_jsonl):
    """4 prompts x 4 completions of up to 8 tokens a step; checkpoints every 2 steps."""

    def make(stage="grpo", **overrides):
        base = {
            "stage": stage,
            "data.dataset": str(prompts_jsonl / "train.jsonl"),
            "data.eval_dataset": str(prompts_jsonl / "eval.jsonl"),
            "training.per_device_train_batch_size": 8,
            "training.gradient_accumulation_steps": 2,
            "training.max_steps": 4,
            "training.save_steps": 2,
            "training.logging_steps": 1,
            "training.warmup_ratio": 0.0,
            "training.learning_rate": 1e-3,
            f"{stage}.num_generations": 4,
            f"{stage}.max_completion_length": 8,
            f"{stage}.rewards": [{"function": f"{prompts_jsonl / 'short.py'}:shortness"}, {"function": "numeric_answer", "weight": 0.5}],
        }
        base.update(overrides)
        return tiny_recipe(**base)

    return make


def logged(run_dir, key) -> dict[int, float]:
    return {m["step"]: m[key] for m in RunDir(run_dir).read_metrics() if key in m}


@pytest.mark.slow  # enough steps to learn (~15 s); the fast suite keeps the advantages, the plan and resume
def test_grpo_learns_an_easy_reward_with_bounded_kl(rl_recipe):
    # top_k 10: a random model spreads its mass over the whole vocabulary; among 10 candidates short ones get sampled
    recipe = rl_recipe(**{"method": "full", "training.max_steps": 16, "training.save_strategy": "no", "training.learning_rate": 3e-3, "grpo.top_k": 10})
    result = run_stage(recipe, live=False)
    rewards = logged(result.run_dir, "rewards/shortness/mean")
    first, last = sum(list(rewards.values())[:4]) / 4, sum(list(rewards.values())[-4:]) / 4
    assert last > first + 0.15, rewards  # a clear rise, not noise
    kl = logged(result.run_dir, "kl")
    assert 0 < max(kl.values()) < 1.0, kl  # the reference holds the policy near the start
    for png in ("loss.png", "reward.png", "kl.png"):
        assert (result.run_dir / png).is_file()
    # the held-out prompts were answered (greedy) and scored before and after, by each reward and the answer column
    changes = {c.metric.strip(): c for c in result.changes}
    assert {"mean reward (weighted sum), greedy", "shortness, mean", "numeric_answer, mean", "answer correct (last number = answer)"} <= set(changes)
    assert all(changes[m].before is not None and changes[m].after is not None for m in changes)


@pytest.mark.parametrize("scale", ["group", pytest.param("none", marks=pytest.mark.slow)])  # one run each (~3 s): the fast suite keeps TRL's default
def test_logged_advantages_are_reward_minus_group_mean_over_std(rl_recipe, scale):
    result = run_stage(rl_recipe(**{"training.max_steps": 2, "training.save_strategy": "no", "grpo.scale_rewards": scale}), live=False)
    records = read_rollouts(result.run_dir)
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert record["weights"] == {"shortness": 1.0, "numeric_answer": 0.5}
        for group in record["groups"]:
            rows = group["completions"]
            assert len(rows) == 4
            for row in rows:  # the weighted sum the advantages start from
                assert row["reward"] == pytest.approx(row["rewards"]["shortness"] + 0.5 * row["rewards"]["numeric_answer"], abs=1e-6)
            expected = group_advantages([r["reward"] for r in rows], scale_rewards=scale)
            assert group["mean"] == pytest.approx(float(expected.group_mean[0]), abs=1e-5)
            assert [r["advantage"] for r in rows] == pytest.approx([float(a) for a in expected.advantages], abs=1e-4)
            if scale == "none":
                assert [r["advantage"] for r in rows] == pytest.approx([r["reward"] - group["mean"] for r in rows], abs=1e-5)


def test_rloo_trains_with_leave_one_out_advantages(rl_recipe):
    result = run_stage(rl_recipe("rloo", **{"training.max_steps": 2, "training.save_strategy": "no", "rloo.beta": 0.0}), live=False)
    assert result.steps == 2 and (result.model_dir / "adapter_model.safetensors").is_file()
    for record in read_rollouts(result.run_dir):
        for group in record["groups"]:
            rows = group["completions"]
            expected = rloo_advantages([r["reward"] for r in rows])
            assert [r["advantage"] for r in rows] == pytest.approx([float(a) for a in expected.advantages], abs=1e-4)


@pytest.mark.slow  # two runs (~10 s); the fast suite keeps SFT's and DPO's resume tests and GRPO's logged advantages
def test_resume_samples_what_the_uninterrupted_run_sampled(rl_recipe, tmp_path):
    whole = run_stage(rl_recipe(output_dir=str(tmp_path / "whole")), live=False)
    interrupted = run_stage(rl_recipe(output_dir=str(tmp_path / "cut")), live=False, callbacks=[StopAt(3)])
    assert interrupted.steps == 3
    resumed = run_stage(resume=str(interrupted.run_dir), live=False)
    assert resumed.steps == 4
    a, b = read_rollouts(whole.run_dir), read_rollouts(resumed.run_dir)
    assert [r["step"] for r in b] == [1, 2, 3, 4]  # step 3 was recorded, dropped on resume (after checkpoint 2) and sampled again
    assert [[c["completion"] for g in r["groups"] for c in g["completions"]] for r in a] == [
        [c["completion"] for g in r["groups"] for c in g["completions"]] for r in b
    ]
    assert logged(whole.run_dir, "loss") == pytest.approx(logged(resumed.run_dir, "loss"), abs=1e-5)


def test_plan_is_what_the_grpo_trainer_did(rl_recipe):
    from tunesmith.train.plan import make_plan

    recipe = rl_recipe(**{"training.max_steps": -1, "training.num_train_epochs": 1, "training.save_steps": 3})
    plan = make_plan(recipe)
    assert plan.unit == "completions" and plan.schedule.num_sequences == 16 * 4
    recorder = Recorder()
    result = run_stage(recipe, live=False, callbacks=[recorder])
    assert_run_followed_plan(plan, recorder, result)


def test_reward_set_up_errors_come_before_the_run(rl_recipe, tmp_path, prompts_jsonl):
    out = tmp_path / "never"
    with pytest.raises(RecipeError, match="not a whole number of groups of 3"):
        run_stage(rl_recipe(output_dir=str(out), **{"grpo.num_generations": 3}), live=False)
    with pytest.raises(RecipeError, match="exact_answer needs a dataset column 'answer'"):
        no_answer = tmp_path / "no_answer.jsonl"
        no_answer.write_text(json.dumps({"prompt": "Add 1 and 2."}) + "\n")
        run_stage(rl_recipe(output_dir=str(out), **{"data.dataset": str(no_answer), "grpo.rewards": ["exact_answer"]}), live=False)
    with pytest.raises(RecipeError, match="nonexistent"):
        run_stage(rl_recipe(output_dir=str(out), **{"grpo.rewards": ["nonexistent"]}), live=False)
    assert not out.exists()


def test_inspect_rollouts_prints_the_group_table(rl_recipe):
    from typer.testing import CliRunner

    from tunesmith.cli.main import _register, app

    result = run_stage(rl_recipe(**{"training.max_steps": 1, "training.save_strategy": "no"}), live=False)
    _register()
    shown = CliRunner().invoke(app, ["inspect", "rollouts", str(result.run_dir), "--groups", "1"])
    assert shown.exit_code == 0, shown.output
    group = read_rollouts(result.run_dir)[0]["groups"][0]
    assert group["prompt"] in shown.output and f"group mean {group['mean']:.3f}" in shown.output
    assert f"{group['completions'][0]['advantage'] + 0.0:+.3f}" in shown.output
    missing = CliRunner().invoke(app, ["inspect", "rollouts", str(result.run_dir), "--step", "9"])
    assert missing.exit_code != 0
