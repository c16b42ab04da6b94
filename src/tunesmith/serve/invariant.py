"""Batch-invariant decoding: a row of a batch computes exactly what the same request computes alone, whatever
the rows around it and however much padding the batch needs. Two things break that in bf16 on a CPU, and each has
its fix here:

- Attention over a padded row: the masked positions add exact zeros, but SDPA's (and eager attention's) fp32 sums
  run over a longer axis, in another order, and the bf16 result sometimes rounds the other way. `rowwise_attention`
  lets each row attend over its own tokens only: its keys are a contiguous suffix of the cache (left padding, tokens
  appended on the right: the batcher and `complete` both keep it so), and the row runs torch's SDPA on exactly that
  slice, as it does alone (a decode position by plain matmuls, a prompt by SDPA). Cost: a few small ops per row and
  layer.
- A linear layer's row count: oneDNN picks its bf16 kernel by the number of rows M, and kernels accumulate in
  different orders. On an AMD EPYC (avx512_bf16) M = 1 differs from every M >= 2 (SmolLM2's down_proj, K = 1536:
  4-8 of 48 random rows by one bf16 ulp); on an Intel Xeon with AMX every M from 2 to 32 agrees, and M >= 33 takes
  another kernel (5 of 33 rows differ). `small_row_linears` runs every linear layer in chunks of 2 to 32 rows (a
  lone row as two copies of itself, the first kept), so a row takes the same kernel alone, in a decode batch or in
  a batched prefill. Cost: nothing measurable for decoding (16 rows or fewer: one chunk); a batched prefill of
  768 rows runs its MLP's linears 0.5-2x as fast as in one call (AMX Xeon, 2 threads).

Where this is exact: bf16 on a CPU with oneDNN's bf16 kernels (avx512_bf16/AMX; `bit_exact_here`). In fp32
(what `precision: auto` serves on an AVX2-only CPU) MKL's sgemm rounds a row differently with the number of rows
and the row's place among them (~1e-7 relative; 17 of 1128 SmolLM2 cases), so a reply can still differ from the
request alone where two tokens tie to that precision: rare, and not fixed here.
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
    threads = torch.get_num_threads()
    if q_len == 1 and threads > 1:  # a decode position is a few thousand flops a row: waking a second thread costs more
        torch.set_num_threads(1)
    try:
        _rows(module, query, key, value, counts, out, dropout, scaling, kwargs)
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return out, None


def _rows(module, query, key, value, counts, out, dropout, scaling, kwargs) -> None:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_len, dim = query.shape
    kv_len, kv_heads = key.shape[2], key.shape[1]
    if q_len == 1:  # one decode position per row, by plain fp32 matmuls and softmax: a few small ops a row, ~120 us for SDPA
        scale = scaling if scaling is not None else dim**-0.5
        q = (query.float() * scale).reshape(batch, kv_heads, heads // kv_heads, dim)  # the query heads sharing each key/value head
        k, v = key.float(), value.float()
        rows = torch.empty(batch, kv_heads, heads // kv_heads, dim)
        for b, n in enumerate(counts):
            weights = torch.softmax(torch.matmul(q[b], k[b, :, kv_len - n :].transpose(-1, -2)), dim=-1)
            torch.matmul(weights, v[b, :, kv_len - n :], out=rows[b])
        out[:, 0] = rows.reshape(batch, heads, dim).to(out.dtype)
        return
    for b, n in enumerate(counts):  # a left-padded prompt: its last n positions are real, causal among themselves
        k, v = key[b : b + 1, :, kv_len - n :], value[b : b + 1, :, kv_len - n :]
        row, _ = sdpa_attention_forward(module, query[b : b + 1, :, q_len - n :], k, v, None, dropout, scaling, is_causal=n > 1, **kwargs)
        out[b, q_len - n :] = row[0]


CHUNK_ROWS = 32  # the most rows oneDNN's AMX bf16 kernel takes before it switches to another (see the module docstring)


def _chunked_forward(module):
    """`module.forward` that runs its rows in chunks of 2..CHUNK_ROWS (a lone row doubled), each as F.linear would."""
    linear = torch.nn.functional.linear

    def forward(x):
        rows = x.reshape(-1, x.shape[-1])
        if 2 <= rows.shape[0] <= CHUNK_ROWS:
            return linear(x, module.weight, module.bias)
        out = []
        for start in range(0, rows.shape[0], CHUNK_ROWS):
            chunk = rows[start : start + CHUNK_ROWS]
            out.append(linear(torch.cat([chunk, chunk]), module.weight, module.bias)[:1] if len(chunk) == 1 else linear(chunk, module.weight, module.bias))
        return torch.cat(out).reshape(*x.shape[:-1], module.weight.shape[0])

    return forward


def small_row_linears(model) -> int:
    """Every nn.Linear runs its rows in chunks of 2..CHUNK_ROWS (see the module docstring); returns how many changed."""
    count = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and not module.__dict__.get("_tunesmith_small_rows"):
            module.forward = _chunked_forward(module)
            module.__dict__["_tunesmith_small_rows"] = True
            count += 1
    return count


def bit_exact_here(dtype) -> bool:
    """Whether batched rows decode bit for bit as alone for a model in `dtype` on this CPU (see the module docstring)."""
    from tunesmith.infer import packed

    return dtype == torch.bfloat16 and packed.available()


def make_batch_invariant(model) -> None:
    """Row-wise attention (registered with transformers once, under NAME) and linear layers in small row chunks."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, rowwise_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    base = getattr(model, "get_base_model", lambda: model)()
    base.set_attn_implementation(NAME)
    small_row_linears(model)
