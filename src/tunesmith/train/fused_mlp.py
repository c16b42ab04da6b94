"""Gated MLPs that keep two tensors for the backward pass instead of four.

Every family tunesmith trains computes its MLP as `down(act(gate(x)) * up(x))` (Phi-3: `gate` and `up` are the two
halves of one `gate_up_proj`). Run op by op, autograd keeps `gate(x)` (for act's derivative), `act(gate(x))` and
`up(x)` (for the product's), each `[tokens, intermediate]`: on SmolLM2 in fp32 that is 55% of what a decoder layer
keeps. `gated(act, g, u)` is the same function as one autograd node that keeps `g` and `u` only and recomputes
`act(g)` in the backward pass (one elementwise pass over `[tokens, intermediate]`, against a recomputed layer for
what gradient checkpointing would save). Forward and gradients are the op-by-op ones, bit for bit: the same
operations in the same order.

Installed by `fuse_mlp_layers` on a training model's MLP modules of the known families; a call without autograd
(generation, evaluation) runs the module's own forward.
"""

from __future__ import annotations

from functools import partial

import torch

# MLP classes whose forward is `down_proj(act_fn(gate_proj(x)) * up_proj(x))`
GATED = ("LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP", "GemmaMLP", "Gemma2MLP", "Gemma3MLP")
# MLP classes whose forward is `gate, up = gate_up_proj(x).chunk(2, -1); down_proj(up * activation_fn(gate))`
GATE_UP = ("Phi3MLP",)


class _Gated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, u, act):
        ctx.act = act
        ctx.save_for_backward(g, u)
        return act(g) * u

    @staticmethod
    def backward(ctx, grad):
        g, u = ctx.saved_tensors
        with torch.enable_grad():
            leaf = g.detach().requires_grad_(True)
            a = ctx.act(leaf)
        grad_u = grad * a.detach() if ctx.needs_input_grad[1] else None
        grad_g = torch.autograd.grad(a, leaf, grad * u)[0] if ctx.needs_input_grad[0] else None
        return grad_g, grad_u, None


def gated(act, g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """act(g) * u, keeping only g and u for the backward pass."""
    return _Gated.apply(g, u, act)


def _gated_forward(module, x):
    if not torch.is_grad_enabled():
        return type(module).forward(module, x)
    return module.down_proj(gated(module.act_fn, module.gate_proj(x), module.up_proj(x)))


def _gate_up_forward(module, x):
    if not torch.is_grad_enabled():
        return type(module).forward(module, x)
    g, u = module.gate_up_proj(x).chunk(2, dim=-1)
    return module.down_proj(gated(module.activation_fn, g, u))


def fuse_mlp_layers(model) -> int:
    """Give every gated MLP of `model` (the families in GATED and GATE_UP) the two-tensor backward; how many got it."""
    count = 0
    for module in model.modules():
        name = type(module).__name__
        if name in GATED:
            module.forward = partial(_gated_forward, module)
        elif name in GATE_UP:
            module.forward = partial(_gate_up_forward, module)
        else:
            continue
        count += 1
    return count


def fused_mlps(model) -> tuple[int, int]:
    """(fused, all) gated MLPs of `model`, as they are set now."""
    mlps = [m for m in model.modules() if type(m).__name__ in GATED + GATE_UP]
    fused = [m for m in mlps if isinstance(m.__dict__.get("forward"), partial) and m.forward.func in (_gated_forward, _gate_up_forward)]
    return len(fused), len(mlps)
