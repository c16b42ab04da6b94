"""The speed defaults follow their documented rules (the plan-equals-trainer test checks the trainer obeys them)."""

from __future__ import annotations

import pytest

from tunesmith.models.precision import Precision
from tunesmith.recipes import load_recipe
from tunesmith.train.speed import EAGER_MAX_TOKENS, speed_settings

CPU = Precision("bf16", "test", "cpu")


@pytest.mark.parametrize(
    "overrides, longest, attention",
    [({}, EAGER_MAX_TOKENS, "eager"), ({}, EAGER_MAX_TOKENS + 1, "sdpa"), ({"model.attn_implementation": "sdpa"}, 50, "sdpa")],
)
def test_attention_rule(overrides, longest, attention):
    assert speed_settings(load_recipe(None, overrides), CPU, longest).attention == attention


def test_cpu_lora_runs_without_autocast_full_finetuning_with_it():
    lora = speed_settings(load_recipe(None, {}), CPU, 100)
    assert not lora.autocast and lora.weights == "bfloat16"
    full = speed_settings(load_recipe(None, {"method": "full"}), CPU, 100)
    assert full.autocast and full.weights == "float32"
