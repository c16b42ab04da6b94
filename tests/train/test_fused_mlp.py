"""Gated MLPs that keep two tensors for the backward pass (train/fused_mlp.py): the op-by-op function, bit for bit."""

from __future__ import annotations

import pytest
import torch

from tunesmith.train.fused_mlp import fuse_mlp_layers, gated

FAMILIES = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"]


def _model(path, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.train()
    return model


def _step(model, ids, upstream):
    """Hidden states and every weight's gradient under `upstream`."""
    model.zero_grad()
    hidden = model.model(input_ids=ids).last_hidden_state
    (hidden * upstream).sum().backward()
    return hidden.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_computes_the_same_outputs_and_gradients(family, dtype, family_model):
    """SiLU (llama, mistral, qwen), tanh-GELU (gemma), gate and up in one projection (phi3); full fine-tuning, so the
    projections' weight gradients (which need the product itself) are checked too."""
    model = _model(family_model(family), dtype)
    ids = torch.randint(100, 200, (2, 9))
    upstream = torch.randn(2, 9, model.config.hidden_size, dtype=dtype)
    expected, expected_grads = _step(model, ids, upstream)
    assert fuse_mlp_layers(model) == model.config.num_hidden_layers
    got, grads = _step(model, ids, upstream)
    assert torch.equal(got, expected)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        assert torch.equal(grad, expected_grads[name]), name


def test_it_keeps_the_gate_and_up_projections_only():
    """What autograd keeps for act(g) * u: g and u, not act(g) as well."""
    g, u = (torch.randn(4, 32, requires_grad=True) for _ in range(2))
    kept: list[torch.Tensor] = []

    def count(op):
        kept.clear()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: kept.append(t) or t, lambda t: t):
            out = op()
        return out, {t.untyped_storage().data_ptr() for t in kept}

    plain, plain_kept = count(lambda: torch.nn.functional.silu(g) * u)
    fused, fused_kept = count(lambda: gated(torch.nn.functional.silu, g, u))
    assert torch.equal(plain, fused)
    assert fused_kept == {g.untyped_storage().data_ptr(), u.untyped_storage().data_ptr()}
    assert len(plain_kept) == 3


def test_without_autograd_the_module_runs_its_own_forward(family_model):
    """Generation and evaluation never enter the fused node."""
    model = _model(family_model("llama"))
    fuse_mlp_layers(model)
    calls = []
    real = torch.autograd.Function.apply.__func__

    def spy(cls, *args):
        calls.append(cls.__name__)
        return real(cls, *args)

    ids = torch.randint(100, 200, (1, 5))
    try:
        torch.autograd.Function.apply = classmethod(spy)
        with torch.no_grad():
            model(input_ids=ids)
        assert "_Gated" not in calls
        model(input_ids=ids)
        assert "_Gated" in calls
    finally:
        torch.autograd.Function.apply = classmethod(real)


def test_a_checkpointed_layer_recomputes_through_it(family_model):
    """transformers' gradient checkpointing reruns the fused node in the backward pass: the same gradients."""
    model = _model(family_model("llama"))
    fuse_mlp_layers(model)
    ids = torch.randint(100, 200, (2, 7))
    upstream = torch.randn(2, 7, model.config.hidden_size)
    _, expected = _step(model, ids, upstream)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    _, got = _step(model, ids, upstream)
    for name, grad in got.items():
        assert torch.equal(grad, expected[name]), name


def test_the_memory_probe_counts_the_fused_mlp(tiny_model_dir):
    """The plan's activation estimate follows: one [tokens, intermediate] tensor less per layer."""
    from transformers import AutoConfig

    from tunesmith.train.memory import activation_bytes

    config = AutoConfig.from_pretrained(tiny_model_dir)
    targets = ("q_proj", "v_proj")
    plain = activation_bytes(config, torch.float32, "sdpa", targets, "causal", 4, 128, 0, fused=True)
    fused = activation_bytes(config, torch.float32, "sdpa", targets, "causal", 4, 128, 0, fused=True, fused_mlp=True)
    per_token_layer = 4 * config.intermediate_size  # one fp32 [tokens, intermediate] tensor
    assert plain - fused == pytest.approx(config.num_hidden_layers * 4 * 128 * per_token_layer, rel=0.02)
