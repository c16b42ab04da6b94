"""Batch-invariant decoding: a row of a batch computes exactly what the same request computes alone, whatever
the rows around it and however much padding the batch needs. Two things break that in bf16 on a CPU, and each has
its fix here:

- Attention over a padded row: the masked positions add exact zeros, but SDPA's (and eager attention's) fp32 sums
  run over a longer axis, in another order, and the bf16 result sometimes rounds the other way. `rowwise_attention`
  lets each row attend over its own tokens only: its keys are a contiguous suffix of the cache (left padding, tokens
  appended on the right: the batcher and `complete` both keep it so), and the row runs torch's SDPA on exactly that
  slice, as it does alone. Cost: one SDPA call per row and layer.
- A linear layer on one row: oneDNN's bf16 kernel for a single row (M = 1) accumulates in another order than for
  M >= 2 (SmolLM2's down_proj, K = 1536: 4-8 of 48 random rows differ by one bf16 ulp; every M >= 2 agrees with
  every other, row by row). `two_row_linears` runs a lone row as two copies of itself and keeps the first, so a
  request decoded alone takes the same kernel as in a batch. Cost: nothing measurable (decoding one row is bound
  by reading the weights, which a second row shares).
"""

from __future__ import annotations

import torch

NAME = "tunesmith_rowwise"


def rowwise_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None, **kwargs):
    """query (B, H, q, D), key/value (B, Hkv, kv, D), attention_mask boolean (B, 1, q, kv) or None -> ((B, q, H, D), None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, _, q_len, _ = query.shape
    kv_len = key.shape[2]
    if q_len > 1 and q_len != kv_len:  # a prompt on top of a cache: not a shape the batcher makes; attend with the mask
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal=is_causal, **kwargs)
    if attention_mask is None:  # no padding anywhere (transformers skips the mask): still one row at a time, as alone
        counts = [kv_len] * batch
    else:
        valid = attention_mask[:, 0, -1, :] if attention_mask.dtype == torch.bool else attention_mask[:, 0, -1, :] == 0  # keys the last query sees
        counts = valid.sum(-1).tolist()
    out = query.new_zeros(batch, q_len, query.shape[1], query.shape[3])
    for b, n in enumerate(counts):
        k, v = key[b : b + 1, :, kv_len - n :], value[b : b + 1, :, kv_len - n :]
        if q_len == 1:
            row, _ = sdpa_attention_forward(module, query[b : b + 1], k, v, None, dropout, scaling, is_causal=False, **kwargs)
            out[b] = row[0]
        else:  # a left-padded prompt: its last n positions are real, causal among themselves
            row, _ = sdpa_attention_forward(module, query[b : b + 1, :, q_len - n :], k, v, None, dropout, scaling, is_causal=n > 1, **kwargs)
            out[b, q_len - n :] = row[0]
    return out, None


def _one_row(module, args):
    x = args[0]
    if x.dim() >= 2 and x.shape[-1] and x.numel() == x.shape[-1]:  # a single row (1, in) or (1, 1, in)
        module.__dict__["_tunesmith_doubled"] = True
        return (torch.cat([x, x], dim=0), *args[1:])
    return None


def _first_row(module, args, output):
    if module.__dict__.pop("_tunesmith_doubled", False):
        return output[:1]
    return None


def two_row_linears(model) -> int:
    """Hooks on every nn.Linear: a lone row runs as two (see the module docstring); returns how many were hooked."""
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and not module.__dict__.get("_tunesmith_two_rows"):
            module.register_forward_pre_hook(_one_row)
            module.register_forward_hook(_first_row)
            module.__dict__["_tunesmith_two_rows"] = True
            count += 1
    return count


def make_batch_invariant(model) -> None:
    """Row-wise attention (registered with transformers once, under NAME) and two-row linear layers."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, rowwise_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    base = getattr(model, "get_base_model", lambda: model)()
    base.set_attn_implementation(NAME)
    two_row_linears(model)
