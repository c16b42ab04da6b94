"""Padding-free batches on a CPU: the layers see only real tokens, and each example attends within itself.

A padded micro-batch of chats runs every layer on its padding too: on the built-in pirate data 13% of a
micro-batch's positions are padding (examples of 56-94 tokens, padded to the longest of 8), and data of more
varied lengths pads far more. TRL's padding-free collator (`padding_free=True`) puts a micro-batch's examples
end to end in one row, their positions restarting, and hands the boundaries (`cu_seq_lens_q`) to the attention
kernel; only FlashAttention's varlen kernel reads them, which a CPU does not have, and transformers' eager and
sdpa paths instead mask one row of all the examples: attention over (8 x 90)^2 positions instead of 8 x 90^2.

The attention registered here (`install`) is the run's own kernel (the model family's eager function, or sdpa)
on the examples laid out as padded rows for the attention product alone: the rows are gathered from the packed
row, attended with a causal mask that stops at each example's end, and scattered back. Everything else in a
layer (projections, MLP, norms, LoRA) runs on the packed real tokens. Without boundaries (generation, a padded
batch) it is exactly the kernel it wraps. Each example's outputs equal those of its padded row.
"""

from __future__ import annotations

import sys
from functools import lru_cache

import torch

KERNELS = ("eager", "sdpa")
_BOUNDARIES = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k", "seq_idx")


def implementation(kernel: str) -> str:
    """The name a model's config carries while it trains padding-free on `kernel`."""
    return f"tunesmith_varlen_{kernel}"


def _grid(bounds: tuple[int, ...]):
    """The examples' lengths at `bounds` (cumulative), the longest, and which slots of (examples x longest) padded
    rows hold a real token."""
    lengths = torch.tensor(bounds).diff()
    longest = int(lengths.max())
    at = torch.arange(longest)
    return lengths, longest, at, at[None, :] < lengths[:, None]


@lru_cache(maxsize=8)
def _places(bounds: tuple[int, ...], device: torch.device):
    """For examples at `bounds` (cumulative lengths) of a packed row: where each token goes in (examples x longest)
    padded rows, the examples and the longest."""
    lengths, longest, at, real = _grid(bounds)
    rows = len(lengths)
    index = (torch.arange(rows)[:, None] * longest + at[None, :])[real]  # the packed tokens' places in the padded rows
    return index.to(device), rows, longest


@lru_cache(maxsize=2)  # the layers of one forward share it; each batch brings new bounds
def _causal(bounds: tuple[int, ...], window: int | None, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The additive mask of those padded rows: causal, stopping at each example's end, within `window`."""
    lengths, longest, at, real = _grid(bounds)
    allowed = (at[:, None] >= at[None, :]) & real[:, None, :]  # (rows, query, key)
    if window is not None and window < longest:
        allowed &= at[:, None] - at[None, :] < window
    return torch.zeros(len(lengths), 1, longest, longest, dtype=dtype).masked_fill_(~allowed[:, None], torch.finfo(dtype).min).to(device)


class _Spread(torch.autograd.Function):
    """(tokens, ...) -> (slots, ...): token i to slot index[i], zeros elsewhere; its adjoint is a gather."""

    @staticmethod
    def forward(ctx, x, index, slots: int):
        ctx.save_for_backward(index)
        return x.new_zeros((slots, *x.shape[1:])).index_copy_(0, index, x)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None, None


class _Gather(torch.autograd.Function):
    """(slots, ...) -> (tokens, ...): slot index[i] to token i; its adjoint spreads back."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.save_for_backward(index)
        ctx.slots = x.shape[0]
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad):
        (index,) = ctx.saved_tensors
        return grad.new_zeros((ctx.slots, *grad.shape[1:])).index_copy_(0, index, grad), None


def _kernel(module, kernel: str):
    if kernel == "sdpa":
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward
    return sys.modules[type(module).__module__].eager_attention_forward  # the family's own (soft-capping, sinks, ...)


def _rows_mask(mask, rows: int, longest: int) -> bool:
    """Whether `mask` is a boolean (rows, 1, longest, longest) mask for the examples as padded rows: a caller's own.
    transformers' mask for the packed row is (1, 1, tokens, tokens) (additive for eager, or None): of that shape only
    for a single example, where it is the same causal mask."""
    return isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and tuple(mask.shape) == (rows, 1, longest, longest)


def varlen_attention(kernel: str, module, query, key, value, attention_mask, **kwargs):
    """`kernel`'s attention over query/key/value of shape (1, heads, tokens, dim) holding the examples that
    `cu_seq_lens_q` delimits, each attending within itself (causally, or as a boolean (examples, 1, longest,
    longest) `attention_mask` of the caller's says); without boundaries, `kernel` as it is."""
    bounds = kwargs.get("cu_seq_lens_q")
    for name in _BOUNDARIES:
        kwargs.pop(name, None)
    attend = _kernel(module, kernel)
    if bounds is None or query.shape[0] != 1:
        return attend(module, query, key, value, attention_mask, **kwargs)
    window = kwargs.get("sliding_window")
    bounds = tuple(bounds.tolist())
    index, rows, longest = _places(bounds, query.device)
    if not _rows_mask(attention_mask, rows, longest):
        mask = _causal(bounds, window, query.dtype, query.device)
    elif kernel == "sdpa":  # the caller's own mask for each row (train/prefix.py: shared prompts)
        mask = attention_mask
    else:  # eager adds its mask to the scores
        mask = torch.zeros(attention_mask.shape, device=query.device).masked_fill_(~attention_mask, torch.finfo(torch.float32).min)

    def padded(states):  # (1, heads, tokens, dim) -> (rows, heads, longest, dim), laid out as the projections made it
        tokens_first = states[0].transpose(0, 1)  # (tokens, heads, dim)
        spread = _Spread.apply(tokens_first, index, rows * longest)
        return spread.view(rows, longest, *tokens_first.shape[1:]).transpose(1, 2)

    out, _ = attend(module, padded(query), padded(key), padded(value), mask, **kwargs)  # (rows, longest, heads, dim)
    out = _Gather.apply(out.reshape(rows * longest, *out.shape[2:]), index)
    return out.unsqueeze(0), None


def register() -> None:
    """Make the padding-free kernels known to transformers (once per process)."""
    from functools import partial

    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import eager_mask, sdpa_mask

    for kernel, mask in (("eager", eager_mask), ("sdpa", sdpa_mask)):
        AttentionInterface.register(implementation(kernel), partial(varlen_attention, kernel))
        AttentionMaskInterface.register(implementation(kernel), mask)  # without boundaries the kernel's own mask


def install(model, kernel: str) -> None:
    """Train `model` padding-free on `kernel` (eager or sdpa)."""
    register()
    model.set_attn_implementation(implementation(kernel))
