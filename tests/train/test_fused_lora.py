"""LoRA layers fused into one autograd node (train/fused_lora.py) compute what peft's layers compute."""

from __future__ import annotations

import copy

import pytest
import torch

from tunesmith.train.fused_lora import fuse_lora_layers, fused_layers, keep_mask


class TwoProjections(torch.nn.Module):
    """q (with bias) and v (without) read the same input, as attention's projections do."""

    def __init__(self):
        super().__init__()
        self.q_proj = torch.nn.Linear(64, 48, bias=True)
        self.v_proj = torch.nn.Linear(64, 32, bias=False)

    def forward(self, x):
        return self.q_proj(x).sum(-1) * 0.3 + self.v_proj(x).pow(2).sum(-1)


def lora_pair(dtype, dropout: float):
    """A peft LoRA model (adapters fp32, B non-zero so they matter) and a fused copy of it."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(TwoProjections().to(dtype), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    fused = copy.deepcopy(model)
    assert fuse_lora_layers(fused) == 2 and fused_layers(fused) == (2, 2) and fused_layers(model) == (0, 2)
    return model.train(), fused.train()


def grads(model, x, seed: int = 0):
    x = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)
    out = model(x).sum()
    out.backward()
    return out.detach(), x.grad, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_layers_equal_peft_without_dropout(dtype):
    model, fused = lora_pair(dtype, 0.0)
    x = torch.randn(3, 7, 64, dtype=dtype)
    out, gx, g = grads(model, x)
    fout, fgx, fg = grads(fused, x)
    assert fout == out
    # fp32: the same sums; bf16: the base's and the adapters' input gradients are summed in fp32 and rounded once
    tolerance = 1e-6 if dtype == torch.float32 else 2**-7
    assert torch.allclose(fgx.float(), gx.float(), rtol=tolerance, atol=tolerance * gx.abs().max().item())
    assert g.keys() == fg.keys() and len(g) == 4  # A and B of both layers, nothing of the frozen base
    for name in g:
        assert torch.allclose(fg[name], g[name], rtol=1e-5, atol=1e-6), name


def test_dropout_is_applied_to_the_adapters_input_only():
    """The fused layer with dropout equals base(x) + scaling * B(A(x * keep / (1 - p))) for the mask it drew."""
    p = 0.25
    _, fused = lora_pair(torch.float32, p)
    layer = fused.base_model.model.q_proj
    x = torch.randn(5, 64)
    torch.manual_seed(7)
    got = layer(x)
    torch.manual_seed(7)
    keep = keep_mask(x.shape, p, x.device)
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    expected = layer.base_layer(x) + (x * keep / (1 - p)) @ a.t() @ b.t() * layer.scaling["default"]
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, layer.base_layer(x) + x @ a.t() @ b.t() * layer.scaling["default"], atol=1e-3)  # the mask dropped something

    # the gradients, against autograd through that expression
    xr = x.clone().requires_grad_(True)
    torch.manual_seed(7)
    layer(xr).pow(2).sum().backward()
    fused_grads = (xr.grad.clone(), a.grad.clone(), b.grad.clone())
    a.grad = b.grad = None
    xe = x.clone().requires_grad_(True)
    (layer.base_layer(xe) + (xe * keep / (1 - p)) @ a.t() @ b.t() * layer.scaling["default"]).pow(2).sum().backward()
    for mine, theirs in zip(fused_grads, (xe.grad, a.grad, b.grad)):
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-5)


def test_the_keep_mask_keeps_one_minus_p():
    torch.manual_seed(0)
    for p in (0.05, 0.5):
        kept = keep_mask((1000, 1000), p, "cpu").float().mean().item()
        assert kept == pytest.approx(1 - p, abs=0.002)  # 1e6 draws: the standard error is <= 0.0005
    assert keep_mask((100,), 0.0, "cpu").all()


def test_evaluation_mode_and_disabled_or_merged_adapters_behave_as_in_peft():
    model, fused = lora_pair(torch.float32, 0.5)
    x = torch.randn(4, 64)
    with torch.no_grad():
        model.eval(), fused.eval()  # no dropout in evaluation
        assert torch.allclose(fused(x), model(x), atol=1e-6)
        with model.disable_adapter():
            base = model(x)
        with fused.disable_adapter():  # peft's own forward: the base alone
            assert torch.equal(fused(x), base)
        fused.merge_adapter()
        assert torch.allclose(fused(x), model(x), atol=1e-4)


def test_the_memory_probe_counts_the_fused_layers(tiny_model_dir):
    """What autograd keeps: x is shared with the base product, so a fused LoRA layer adds a mask and its rank-r
    product, not an fp32 copy of its input per adapter."""
    from transformers import AutoConfig

    from tunesmith.train.memory import activation_bytes

    config = AutoConfig.from_pretrained(tiny_model_dir)
    targets = ("q_proj", "v_proj")
    peft_bytes = activation_bytes(config, torch.bfloat16, "eager", targets, "causal", 4, 128, 0)
    fused_bytes = activation_bytes(config, torch.bfloat16, "eager", targets, "causal", 4, 128, 0, fused=True)
    # peft keeps, per adapter and token, at least an fp32 copy of the dropped input (4 bytes an element) that the fused
    # layer does not (it keeps x's own bf16 tensor, shared by q and v, and a 1-byte mask each)
    assert peft_bytes - fused_bytes >= config.num_hidden_layers * 4 * 128 * len(targets) * 4 * config.hidden_size


@pytest.mark.parametrize("reentrant", [True, False])
def test_a_checkpointed_layer_draws_the_same_dropout_mask_when_recomputed(reentrant):
    """Gradient checkpointing reruns the forward in the backward pass: the mask must be the one the loss saw."""
    from torch.utils.checkpoint import checkpoint

    _, fused = lora_pair(torch.float32, 0.3)
    x = torch.randn(6, 64, requires_grad=True)  # the reentrant form needs an input that requires grad (transformers arranges one)

    def run(checkpointed: bool):
        fused.zero_grad()
        torch.manual_seed(3)
        out = checkpoint(fused, x, use_reentrant=reentrant) if checkpointed else fused(x)
        out.sum().backward()
        return out.detach(), [p.grad.clone() for p in fused.parameters() if p.grad is not None]

    plain, plain_grads = run(False)
    again, again_grads = run(True)
    assert torch.equal(plain, again)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain_grads, again_grads))
