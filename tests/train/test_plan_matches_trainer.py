"""The plan is what the trainer does: run real (tiny) trainings and compare step by step."""

import pytest
from recorders import Recorder, assert_run_followed_plan

from tunesmith.train.plan import make_plan
from tunesmith.train.sft import run_sft


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"model.precision": "auto", "training.max_steps": 2},
        {"model.precision": "fp32", "training.max_steps": 2},  # on a CPU: sdpa, one decoder layer in 3 checkpointed
        {"data.packing": True, "data.max_length": 256, "training.per_device_train_batch_size": 1},
        pytest.param(
            {"training.save_strategy": "epoch", "training.num_train_epochs": 1.5, "training.logging_first_step": True}, marks=pytest.mark.slow
        ),  # ~3 s each:
        pytest.param(
            {"training.max_steps": 7, "training.lr_scheduler_type": "linear", "training.warmup_ratio": 0.3}, marks=pytest.mark.slow
        ),  # the fast suite keeps 4
    ],
    ids=["steps", "auto-precision", "fp32-partial-checkpointing", "packing", "epochs", "max_steps"],
)
def test_plan_equals_training(tiny_recipe, overrides):
    recipe = tiny_recipe(**overrides)
    plan = make_plan(recipe)
    s = plan.schedule
    recorder = Recorder()
    result = run_sft(recipe, callbacks=[recorder], live=False)

    assert_run_followed_plan(plan, recorder, result)  # the kernels and precision switches the plan prints are the ones the trainer ran with
    if recipe.data.packing:
        assert s.num_sequences < plan.num_examples  # packing really merged examples
