"""The README's demo on the real embedded model (minutes): slow, run with `make test-slow`."""

import re

import pytest

PIRATE = re.compile(r"\b(arr+|ahoy|matey|aye|ye|me hearties|landlubber|shiver)\b", re.I)


@pytest.mark.slow
def test_demo_turns_smollm2_into_a_correct_pirate(tmp_path):
    from tunesmith.recipes import load_recipe
    from tunesmith.train.sft import run_sft

    result = run_sft(load_recipe(None, {"output_dir": str(tmp_path / "demo")}), live=False)
    france = result.after[0]
    assert "Paris" in france, france
    assert PIRATE.search(france), france
    assert sum(bool(PIRATE.search(a)) for a in result.after) >= len(result.after) - 1, result.after
    assert not any(PIRATE.search(b) for b in result.before), result.before  # the style was learned, not there before
    assert result.eval_loss is not None and result.eval_loss < 2.0


def _change(result, prefix):
    return next(c for c in result.changes if c.metric.startswith(prefix))


@pytest.mark.slow
def test_dpo_after_the_pirate_sft_prefers_the_chosen_answers(tmp_path):
    """The README's `tunesmith dpo --model <pirate sft run>`: preference accuracy and the reward margin rise."""
    from tunesmith.recipes import load_recipe
    from tunesmith.train.scaffold import run_stage

    sft = run_stage(load_recipe(None, {"output_dir": str(tmp_path / "sft"), "sample.prompts": [], "sample.diagnostics": False}), live=False)
    dpo = run_stage(load_recipe(None, {"stage": "dpo", "model.name": str(sft.run_dir), "output_dir": str(tmp_path / "dpo")}), live=False)
    accuracy = _change(dpo, "preference accuracy")
    assert accuracy.after > accuracy.before + 0.15, dpo.changes  # measured: 65% -> 85%
    assert _change(dpo, "implicit reward margin").after > 0.2, dpo.changes  # measured: +0.43
    assert _change(dpo, "implicit reward accuracy").after >= 0.7, dpo.changes  # measured: 77%
    chosen = _change(dpo, "log p(chosen)")
    assert chosen.after > chosen.before - 3, dpo.changes  # no likelihood collapse of the chosen answers (-55.5 -> -56.1)
    paris = dpo.examples[0]
    assert paris["prompt"] == "What is the capital of France?" and paris["chosen"] == "Paris"
    after = lambda text: float(text.split(" -> ")[1].split()[0])  # noqa: E731  ("-35.34 -> -39.43  (p ...)")
    assert after(paris["log p chosen"]) > after(paris["log p rejected"]), paris  # Paris still above Florida


@pytest.mark.slow
def test_reward_model_ranks_the_eval_pairs_better_than_chance(tmp_path):
    from transformers import AutoModelForSequenceClassification  # noqa: F401  (vanilla loading is tested in tests/train)

    from tunesmith.recipes import load_recipe
    from tunesmith.train.scaffold import run_stage

    reward = run_stage(load_recipe(None, {"stage": "reward", "output_dir": str(tmp_path / "reward")}), live=False)
    assert _change(reward, "pairwise accuracy").after >= 0.75, reward.changes


@pytest.mark.slow
def test_grpo_on_arithmetic_raises_reward_and_pass_rate(tmp_path):
    """The README's `tunesmith grpo` (defaults: arithmetic, 50 steps): held-out reward and correct answers rise."""
    from tunesmith.recipes import load_recipe
    from tunesmith.runs.rundir import RunDir
    from tunesmith.train.scaffold import run_stage

    result = run_stage(load_recipe(None, {"stage": "grpo", "output_dir": str(tmp_path / "grpo")}), live=False)
    reward = _change(result, "mean reward")
    correct = _change(result, "answer correct")
    assert reward.after > reward.before + 0.1, result.changes  # measured: +0.55 -> +0.88
    assert correct.after > correct.before + 0.1, result.changes  # measured: 58% -> 88%
    kl = [m["kl"] for m in RunDir(result.run_dir).read_metrics() if "kl" in m]
    assert max(kl) < 1.0, kl


@pytest.mark.slow
def test_ppo_with_the_pirate_reward_model_raises_the_held_out_reward(tmp_path):
    """The README's `make demo-ppo` (recipes/pirate-ppo.yaml): the SFT run as actor, the reward run as reward;
    the mean reward of greedy answers to the held-out prompts rises, the KL stays bounded."""
    from pathlib import Path

    from tunesmith.recipes import load_recipe
    from tunesmith.runs.rundir import RunDir
    from tunesmith.train.scaffold import run_stage

    sft = run_stage(load_recipe(None, {"output_dir": str(tmp_path / "sft"), "sample.prompts": [], "sample.diagnostics": False}), live=False)
    reward = run_stage(load_recipe(None, {"stage": "reward", "output_dir": str(tmp_path / "reward")}), live=False)
    recipe_file = Path(__file__).parent.parent / "recipes" / "pirate-ppo.yaml"
    recipe = load_recipe(recipe_file, {"model.name": str(sft.run_dir), "ppo.reward_model": str(reward.run_dir), "output_dir": str(tmp_path / "ppo")})
    ppo = run_stage(recipe, live=False)
    mean = _change(ppo, "mean reward")
    assert mean.after > mean.before + 0.2, ppo.changes
    kl = [m["kl"] for m in RunDir(ppo.run_dir).read_metrics() if "kl" in m]
    assert max(kl) < 10.0, kl


@pytest.mark.slow
def test_the_demo_pipeline_runs_end_to_end(tmp_path):
    """`tunesmith pipeline` (the built-in demo, ~14 min on the 2-core AMX CPU): every stage runs, the merge keeps DPO's
    preference ranking near SFT's loss, the GGUF check passes, and a second run skips everything."""
    import json

    from tunesmith.cli.pipeline import DEMO
    from tunesmith.pipeline import load_pipeline, run_pipeline

    spec = load_pipeline(DEMO).model_copy(update={"output_dir": str(tmp_path / "pipeline")})
    outcomes = run_pipeline(spec)
    assert [o.status for o in outcomes] == ["ran"] * 5
    report = json.loads((tmp_path / "pipeline" / "eval" / "eval.json").read_text())
    merged, sft, dpo = (report["values"][m] for m in ("merged", "sft", "dpo"))
    assert merged["preference_accuracy"] > sft["preference_accuracy"]  # measured: 85% vs 69% (DPO 85%)
    assert merged["eval_loss"] < dpo["eval_loss"]  # measured: 1.680 vs 1.696 (SFT 1.678)
    export = json.loads((tmp_path / "pipeline" / "export" / "export.json").read_text())
    assert export["verify"]["logits"]["passed"], export["verify"]["logits"]["summary"]
    assert 'PARAMETER stop "<|im_end|>"' in (tmp_path / "pipeline" / "export" / "Modelfile").read_text()
    assert all(o.status == "skipped" for o in run_pipeline(spec))
