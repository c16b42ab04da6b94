"""The plan is what the trainer does: run real (tiny) trainings and compare step by step."""

import pytest
from recorders import Recorder

from tunesmith.train.plan import make_plan
from tunesmith.train.sft import run_sft




@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"model.precision": "auto", "training.max_steps": 2},
        {"data.packing": True, "data.max_length": 256, "training.per_device_train_batch_size": 1},
        {"training.save_strategy": "epoch", "training.num_train_epochs": 1.5, "training.logging_first_step": True},
        {"training.max_steps": 7, "training.lr_scheduler_type": "linear", "training.warmup_ratio": 0.3},
    ],
    ids=["steps", "auto-precision", "packing", "epochs", "max_steps"],
)
def test_plan_equals_training(tiny_recipe, overrides):
    recipe = tiny_recipe(**overrides)
    plan = make_plan(recipe)
    s = plan.schedule
    recorder = Recorder()
    result = run_sft(recipe, callbacks=[recorder], live=False)

    assert result.steps == s.total_steps
    assert recorder.saves == s.checkpoint_steps
    kept = sorted(int(p.name.split("-")[1]) for p in result.run_dir.glob("checkpoint-*"))
    assert kept == s.kept_checkpoints
    assert recorder.logs == s.logging_steps
    assert recorder.lrs == pytest.approx(s.learning_rates, rel=1e-9, abs=1e-15)
    assert result.trainable_parameters == plan.trainable_parameters
    speed = plan.speed  # the kernels and precision switches the plan prints are the ones the trainer ran with
    assert recorder.model.config._attn_implementation == speed.attention
    assert recorder.args.bf16 == (speed.autocast and plan.precision.name == "bf16")
    assert recorder.args.gradient_checkpointing == speed.gradient_checkpointing
    assert str(recorder.model.get_base_model().dtype).removeprefix("torch.") == speed.weights
    if recipe.data.packing:
        assert s.num_sequences < plan.num_examples  # packing really merged examples
