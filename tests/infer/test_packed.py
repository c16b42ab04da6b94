"""Decoding on packed bf16 weights gives the same numbers as the plain layers, and packs once per weight."""

from __future__ import annotations

import pytest
import torch

from tunesmith.infer import complete, packed
from tunesmith.infer.packed import drop_packed, packed_linears

needs_kernels = pytest.mark.skipif(not packed.available(), reason="no oneDNN packed bf16 linear kernels in this torch build or on this CPU")


def test_a_cpu_without_the_kernels_decodes_on_the_plain_layers(monkeypatch):
    """On an AVX2-only CPU oneDNN refuses the bf16 reorder ("bf16 path needs the cpu support ..."): no packing then."""

    def refuse(weight, rows):
        raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx_ne_convert or avx512bw, avx512vl and avx512dq")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", refuse)
    packed.available.cache_clear()
    try:
        assert not packed.available()
        layer = torch.nn.Linear(8, 4).to(torch.bfloat16)
        with torch.no_grad(), packed_linears(layer) as count:
            assert count == 0 and torch.equal(
                layer(torch.ones(2, 8, dtype=torch.bfloat16)), torch.nn.functional.linear(torch.ones(2, 8, dtype=torch.bfloat16), layer.weight, layer.bias)
            )
    finally:
        packed.available.cache_clear()


@pytest.fixture(scope="module")
def tiny_bf16(tiny_model_dir):
    from tunesmith.models import load_model, load_tokenizer

    return load_model(tiny_model_dir, dtype=torch.bfloat16), load_tokenizer(tiny_model_dir)


@needs_kernels
def test_logits_and_greedy_tokens_equal_the_plain_layers(tiny_bf16, monkeypatch):
    model, tok = tiny_bf16
    ids = torch.randint(0, 1000, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with packed_linears(model) as count:
            packed_logits = model(input_ids=ids).logits
    assert count == sum(type(m) is torch.nn.Linear for m in model.modules()) > 0
    assert torch.equal(plain, packed_logits)
    prompts = ["hello there", "a much longer prompt, so that the batch needs left padding"]
    ours = [c.token_ids for c in complete(model, tok, prompts, max_new_tokens=12)]
    monkeypatch.setattr(packed, "available", lambda: False)  # the plain path, as on a CPU without the kernels
    assert ours == [c.token_ids for c in complete(model, tok, prompts, max_new_tokens=12)]


@needs_kernels
def test_packs_once_and_again_when_the_weight_changes(tiny_bf16):
    model, _ = tiny_bf16
    layer = next(m for m in model.modules() if type(m) is torch.nn.Linear)
    x = torch.randn(2, layer.in_features, dtype=torch.bfloat16)
    drop_packed(model)
    with torch.no_grad(), packed_linears(model):
        layer(x)
        first = layer.__dict__["_tunesmith_packed"].weight
        layer(x)
        assert layer.__dict__["_tunesmith_packed"].weight is first  # cached
        layer.weight.mul_(2)  # an in-place update (an optimizer step, a merge) bumps the version
        assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
        assert layer.__dict__["_tunesmith_packed"].weight is not first
        layer.weight.div_(2)
    assert "forward" not in layer.__dict__ and "_tunesmith_packed" not in dict(model.state_dict())


@needs_kernels
def test_with_gradients_on_the_plain_path_runs(tiny_bf16):
    model, _ = tiny_bf16
    layer = next(m for m in model.modules() if type(m) is torch.nn.Linear)
    x = torch.randn(2, layer.in_features, dtype=torch.bfloat16, requires_grad=True)
    with packed_linears(model):
        layer(x).sum().backward()
    assert x.grad is not None


@needs_kernels
def test_sibling_layers_run_as_one_product_with_the_same_numbers(tiny_bf16):
    """q/k/v and gate/up are stacked into one packed product (where the kernel agrees bit for bit); the logits equal
    the plain layers', and a sibling called on an input of its own computes alone."""
    model, _ = tiny_bf16
    ids = torch.randint(0, 1000, (2, 9), generator=torch.Generator().manual_seed(1))
    attention = next(m for m in model.modules() if hasattr(m, "q_proj"))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with packed_linears(model):
            assert len(attention.q_proj.__dict__["_tunesmith_packed"].modules) == 3
            assert attention.k_proj.__dict__["_tunesmith_packed"] is attention.q_proj.__dict__["_tunesmith_packed"]
            assert torch.equal(model(input_ids=ids).logits, plain)
            x = torch.randn(3, attention.k_proj.in_features, dtype=torch.bfloat16)
            attention.q_proj(x)
            other = torch.randn(3, attention.k_proj.in_features, dtype=torch.bfloat16)
            assert torch.equal(attention.k_proj(other), torch.nn.functional.linear(other, attention.k_proj.weight))
