"""The plan's memory estimate: the activation probe counts what autograd really keeps, and scales as it should."""

from __future__ import annotations

import pytest
import torch

from tunesmith.train.memory import activation_bytes


def _saved_by_whole_model(model_dir: str, rows: int, length: int, attention: str, documents: int = 1) -> int:
    """Bytes autograd keeps for a real forward of the whole (tiny) model's decoder, counted as the probe counts."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attention).train()
    owned = {p.untyped_storage().data_ptr() for p in model.parameters()} | {b.untyped_storage().data_ptr() for b in model.buffers()}
    saved: dict[int, int] = {}

    def keep(t):
        if t.untyped_storage().data_ptr() not in owned:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    ids = torch.randint(0, 100, (rows, length))
    cuts = [length * k // documents for k in range(documents + 1)]  # documents of their own lengths, positions restarting
    positions = torch.cat([torch.arange(b - a) for a, b in zip(cuts, cuts[1:])])[None].repeat(rows, 1)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        model.model(input_ids=ids, use_cache=False, **({"position_ids": positions} if documents > 1 else {}))
    return sum(saved.values())


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_the_probe_predicts_what_a_whole_model_saves(tiny_model_dir, attention):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    for rows, length in [(3, 40), (2, 200)]:  # off the probe's lengths, and past them (eager's quadratic part)
        estimate = activation_bytes(config, torch.float32, attention, None, "causal", rows, length, 0)
        real = _saved_by_whole_model(tiny_model_dir, rows, length, attention)
        assert estimate == pytest.approx(real, rel=0.1), (rows, length, estimate, real)
        # pretrain's rows: several documents each, positions restarting, no mask (transformers masks per document)
        packed = activation_bytes(config, torch.float32, attention, None, "causal", rows, length, 0, packed=True)
        assert packed == pytest.approx(_saved_by_whole_model(tiny_model_dir, rows, length, attention, documents=3), rel=0.1), (rows, length)


def test_checkpointing_and_attention_kernels_change_the_activations(tiny_model_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    none = activation_bytes(config, torch.float32, "sdpa", None, "causal", 4, 256, 0)
    every = activation_bytes(config, torch.float32, "sdpa", None, "causal", 4, 256, 1)
    assert every < 0.7 * none  # two layers: both inputs kept, one layer recomputed at a time
    assert activation_bytes(config, torch.float32, "eager", None, "causal", 4, 256, 0) > none  # eager keeps its probabilities
    lora = activation_bytes(config, torch.float32, "sdpa", ("q_proj", "v_proj"), "causal", 4, 256, 0)
    assert lora < none  # a frozen linear layer keeps no input for a weight gradient; LoRA keeps only its own
    assert activation_bytes(config, torch.float32, "sdpa", None, "causal", 8, 256, 0) == pytest.approx(2 * none, rel=0.01)


def test_the_plan_counts_the_runtime_on_a_cpu_and_the_whole_logits_for_orpo_only_where_it_takes_them(tiny_recipe, pairs_jsonl):
    """ORPO's trainer takes the micro-batch's whole logits, except with a frozen head on a CPU (stages/pairs.py)."""
    from tunesmith.train.plan import make_plan

    plan = make_plan(tiny_recipe())
    assert plan.memory_bytes["runtime"] > 0 and plan.memory_bytes["activations"] > 0
    orpo = make_plan(tiny_recipe(stage="orpo", **{"data.dataset": pairs_jsonl}))
    full = make_plan(tiny_recipe(stage="orpo", method="full", **{"data.dataset": pairs_jsonl}))
    dpo = make_plan(tiny_recipe(stage="dpo", **{"data.dataset": pairs_jsonl}))
    assert orpo.memory_bytes["loss"] == dpo.memory_bytes["loss"] < full.memory_bytes["loss"]
