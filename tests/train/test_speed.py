"""The speed defaults follow their documented rules (the plan-equals-trainer test checks the trainer obeys them)."""

from __future__ import annotations

import pytest

from tunesmith.models.precision import Precision
from tunesmith.recipes import load_recipe
from tunesmith.train.speed import EAGER_MAX_TOKENS, PARTIAL_CHECKPOINT_EVERY, RL_CHECKPOINT_EVERY, speed_settings

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


FP32_CPU = Precision("fp32", "test", "cpu")


@pytest.mark.parametrize(
    "stage, precision, overrides, every",
    [
        ("sft", CPU, {}, 0),  # bf16 base: activations are not the peak, checkpointing would cost ~30%
        ("sft", FP32_CPU, {}, 0),  # fp32 on a CPU: none (padding-free, fused MLPs: under TRL's peak without it)
        ("sft", FP32_CPU, {"training.gradient_checkpointing": False}, 0),
        ("sft", FP32_CPU, {"training.gradient_checkpointing": True}, 1),
        ("dpo", FP32_CPU, {}, 0),
        ("kto", FP32_CPU, {}, PARTIAL_CHECKPOINT_EVERY),  # the other stages in fp32 on a CPU: one layer in 3
        ("grpo", CPU, {}, RL_CHECKPOINT_EVERY),  # GRPO/RLOO on a bf16 CPU: one layer in k, under TRL's memory
        ("rloo", CPU, {}, RL_CHECKPOINT_EVERY),
        ("grpo", FP32_CPU, {}, 1),  # every layer in fp32 (and on a GPU)
        ("ppo", CPU, {}, 1),  # PPO trains two models: every layer
    ],
)
def test_checkpointing_rule(stage, precision, overrides, every):
    speed = speed_settings(load_recipe(None, {"stage": stage, **overrides}), precision, 100)
    assert speed.checkpoint_every == every and speed.gradient_checkpointing == bool(every)
    partial = every == PARTIAL_CHECKPOINT_EVERY
    assert (f"1 layer in {every}" in speed.summary()) == partial


def test_fp32_on_a_cpu_takes_sdpa():
    assert speed_settings(load_recipe(None, {}), FP32_CPU, 100).attention == "sdpa"


def test_mlps_fuse_on_a_cpu_only():
    assert speed_settings(load_recipe(None, {}), CPU, 100).fused_mlp
    assert speed_settings(load_recipe(None, {"method": "full"}), FP32_CPU, 100).fused_mlp  # full fine-tuning too
    assert not speed_settings(load_recipe(None, {}), Precision("bf16", "test", "cuda"), 100).fused_mlp
