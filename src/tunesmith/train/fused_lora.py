"""LoRA layers as one autograd node on a CPU: base product, dropout and adapters in a single forward and backward.

peft's `lora.Linear` runs `base(x) + B(A(dropout(x.float()))) * scaling` as ~10 autograd nodes per layer: x is
copied to fp32, torch's dropout draws a double per element (`bernoulli_`: 3.4 ms for an 8 x 94 x 576 input on the
2-core EPYC, ~15% of an SFT step on SmolLM2 with LoRA on q/v), and autograd keeps an fp32 copy of x and a mask for
every adapter. `fused_lora_forward` computes the same function:

- the base product in the weights' dtype, the adapters in fp32 (as peft does: its adapter weights are fp32 on a
  bf16 base), the sum rounded once to the base's dtype;
- dropout's keep mask drawn from torch's generator as one 31-bit integer per element compared with p * 2^31 (the
  same distribution as `bernoulli_`, a third of its cost), kept elements scaled by 1 / (1 - p);
- for the backward pass it keeps x (the base product keeps it anyway, and q/k/v share it), the mask (1 byte an
  element) and the rank-r product, and recomputes the dropped input from them.

Installed by `fuse_lora_layers` on a training model's layers that are plain LoRA on an `nn.Linear` (no DoRA or
other variant, one active adapter, not merged). A call the fused path does not cover (adapters disabled or merged,
per-row adapter names, another active adapter) runs peft's own forward, so generation, `disable_adapter()` and
merging behave as before.
"""

from __future__ import annotations

import torch

_RANGE = 2**31  # int32 `random_()` draws from [0, 2^31)


def keep_mask(shape, p: float, device) -> torch.Tensor:
    """True where dropout with probability `p` keeps an element: P(True) = 1 - p (to 2^-31), from torch's generator."""
    draws = torch.empty(shape, dtype=torch.int32, device=device).random_()
    return draws >= round(p * _RANGE)


class _LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float, p: float):
        y = torch.nn.functional.linear(x, weight, bias)
        mask = keep_mask(x.shape, p, x.device) if p > 0 else None
        dropped = _dropped(x, mask, p, lora_a.dtype)
        low = dropped @ lora_a.t()  # [..., r] in the adapters' dtype
        y.add_(low @ lora_b.t(), alpha=scaling)  # summed in fp32, rounded once to the base's dtype (as peft's `.to()`)
        ctx.save_for_backward(x, weight, lora_a, lora_b, low, mask)
        ctx.scaling, ctx.p = scaling, p
        ctx.needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[3], ctx.needs_input_grad[4])
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, lora_a, lora_b, low, mask = ctx.saved_tensors
        need_x, need_a, need_b = ctx.needs
        s, p = ctx.scaling, ctx.p
        g = grad.reshape(-1, grad.shape[-1])
        g_low = g.to(lora_b.dtype)
        grad_low = (g_low @ lora_b) * s  # [T, r]
        grad_x = grad_a = grad_b = None
        if need_b:
            grad_b = (g_low.t() @ low.reshape(-1, low.shape[-1])) * s
        if need_a:
            dropped = _dropped(x, mask, p, lora_a.dtype).reshape(-1, x.shape[-1])
            grad_a = grad_low.t() @ dropped
        if need_x:
            through = grad_low @ lora_a  # d loss / d dropped input, [T, in]
            if mask is not None:
                through = through.mul_(mask.reshape(-1, x.shape[-1])).mul_(1.0 / (1.0 - p))
            grad_x = (grad @ weight).add_(through.view(x.shape))  # the two paths summed in fp32, rounded once
        return grad_x, None, None, grad_a, grad_b, None, None


def _dropped(x, mask, p: float, dtype) -> torch.Tensor:
    """The adapters' input: x in their dtype, dropped where `mask` is False and scaled by 1 / (1 - p) elsewhere."""
    x = x.to(dtype)
    if mask is None:
        return x
    return x.mul(mask).mul_(1.0 / (1.0 - p))


def _covers(module, kwargs) -> str | None:
    """The adapter name the fused path would run for this call, or None where peft's forward must run."""
    if module.disable_adapters or module.merged or kwargs:
        return None
    active = [a for a in module.active_adapters if a in module.lora_A]
    if len(active) != 1 or active[0] in module.lora_variant:
        return None
    return active[0]


def fused_lora_forward(module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """`module`'s forward (a peft `lora.Linear`), fused where `_covers` says it can be, else peft's own."""
    name = None if args else _covers(module, kwargs)
    if name is None:
        return type(module).forward(module, x, *args, **kwargs)
    dropout = module.lora_dropout[name]
    p = dropout.p if isinstance(dropout, torch.nn.Dropout) and module.training else 0.0
    base = module.base_layer
    return _LoraLinear.apply(x, base.weight, base.bias, module.lora_A[name].weight, module.lora_B[name].weight, float(module.scaling[name]), float(p))


def fuse_lora_layers(model) -> int:
    """Give every plain-LoRA `nn.Linear` layer of `model` the fused forward; the number of layers that got it."""
    from functools import partial

    from peft.tuners.lora import layer

    count = 0
    for module in model.modules():
        if type(module) is layer.Linear and type(module.base_layer) is torch.nn.Linear and not module.fan_in_fan_out:
            module.forward = partial(fused_lora_forward, module)
            count += 1
    return count


def fused_layers(model) -> tuple[int, int]:
    """(fused, all) plain-LoRA layers of `model`, as they are set now."""
    from functools import partial

    from peft.tuners.lora import layer

    lora = [m for m in model.modules() if type(m) is layer.Linear]
    fused = [m for m in lora if isinstance(m.__dict__.get("forward"), partial) and m.forward.func is fused_lora_forward]
    return len(fused), len(lora)
