"""Batch-invariant decoding: a row of a batch computes exactly what the same request computes alone, whatever
the rows around it and however much padding the batch needs. Two things break that in bf16 on a CPU, and each has
its fix here:

- Attention over a padded row: the masked positions add exact zeros, but SDPA's (and eager attention's) fp32 sums
  run over a longer axis, in another order, and the bf16 result sometimes rounds the other way. `rowwise_attention`
  lets each row attend over its own tokens only: its keys are a contiguous suffix of the cache (left padding, tokens
  appended on the right: the batcher and `complete` both keep it so). A prompt attends chunk by chunk
  (`prompt_attention`: 8 queries at fixed positions, one SDPA call each, so a cached prefix changes nothing); a
  decode position attends with every row at once, in fp32 blocks of keys counted from the row's end
  (`_decode_positions`: the same small products and the same order of sums alone and in any batch).
- A linear layer's row count: oneDNN picks its bf16 kernel by the number of rows M, and kernels accumulate in
  different orders. On an AMD EPYC (avx512_bf16) M = 1 differs from every M >= 2 (SmolLM2's down_proj, K = 1536:
  4-8 of 48 random rows by one bf16 ulp), and every M >= 2 agrees; on an Intel Xeon with AMX every M from 2 to 32
  agrees, and from 33 rows on results change with M (5 of 33 rows differ from 32-row calls, more at 100 or 1100).
  `small_row_linears` runs every linear layer in chunks of at most `agreeing_rows` rows, measured at start-up on the
  model's own layer shapes (32 on that Xeon, 1024 on the EPYC), a lone row as two copies of itself (the first kept),
  so a row takes the same kernel alone, in a decode batch or in a batched prefill. Cost: nothing for decoding (16
  rows or fewer: one call); on the AMX Xeon a batched prefill of 16 x 40 tokens takes 443 ms in chunks of 32
  against 223 ms in one call; the probe ~0.1-0.6 s at start-up.

Where this is exact: bf16 on a CPU with oneDNN's bf16 kernels (avx512_bf16/AMX; `bit_exact_here`). In fp32
(what `precision: auto` serves on an AVX2-only CPU) MKL's sgemm rounds a row differently with the number of rows
and the row's place among them (~1e-7 relative; 17 of 1128 SmolLM2 cases), so a reply can still differ from the
request alone where two tokens tie to that precision: rare, and not fixed here.
"""

from __future__ import annotations

import torch

NAME = "tunesmith_rowwise"


SEGMENTS = "tunesmith_segments"  # the forward keyword for prompts packed into one row: (new tokens, cached prefix or None) each
PROMPT_CHUNK = 8  # queries per attention call over a prompt, at fixed positions; a cached prefix is a multiple of it
KEY_BLOCK = 32  # keys per block of a decode position's attention (a multiple of every SIMD width)


def rowwise_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None, **kwargs):
    """query (B, H, q, D), key/value (B, Hkv, kv, D), attention_mask boolean (B, 1, q, kv) or None -> ((B, q, H, D), None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, _, q_len, _ = query.shape
    kv_len = key.shape[2]
    segments = kwargs.pop(SEGMENTS, None)
    if segments is not None:  # prompts packed end to end in one row (the batcher's prefill): each attends to itself alone
        return _segments(module, query, key, value, segments, dropout, scaling, kwargs), None
    if q_len > 1 and q_len != kv_len:  # a prompt on top of a cache: not a shape the batcher makes; attend with the mask
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal=is_causal, **kwargs)
    if attention_mask is None:  # no padding anywhere (transformers skips the mask): still one row at a time, as alone
        counts = torch.full((batch,), kv_len)
    else:
        valid = attention_mask[:, 0, -1, :] if attention_mask.dtype == torch.bool else attention_mask[:, 0, -1, :] == 0  # keys the last query sees
        counts = valid.sum(-1)
    if q_len == 1:
        threads = torch.get_num_threads()
        if threads > 1:  # one thread: every elementwise op runs its SIMD loop over the whole tensor, never split at a thread's edge
            torch.set_num_threads(1)
        try:
            return _decode_positions(query, key, value, counts, scaling), None
        finally:
            if threads > 1:
                torch.set_num_threads(threads)
    out = query.new_zeros(batch, q_len, query.shape[1], query.shape[3])
    for b, n in enumerate(counts.tolist()):  # a left-padded prompt: its last n positions are real, causal among themselves
        k, v = key[b : b + 1, :, kv_len - n :], value[b : b + 1, :, kv_len - n :]
        out[b, q_len - n :] = prompt_attention(module, query[b : b + 1, :, q_len - n :], k, v, dropout, scaling, kwargs)[0]
    return out, None


def prompt_attention(module, query, key, value, dropout, scaling, kwargs) -> torch.Tensor:
    """One prompt's queries, the last q of its k positions (the first k - q come from a cached prefix, a multiple of
    PROMPT_CHUNK), in chunks of PROMPT_CHUNK queries at fixed positions (0-7, 8-15, ...), each chunk one SDPA call over
    the keys up to its end, causal. A chunk's call depends only on the prompt's tokens up to its end, so the prompt
    computes the same whether its prefix was computed now or taken from the cache. query (1, H, q, D), key/value
    (1, Hkv, k, D) -> (1, q, H, D)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q_len, kv_len = query.shape[2], key.shape[2]
    start = kv_len - q_len
    out = []
    for first in range(start, kv_len, PROMPT_CHUNK):
        end = min(first + PROMPT_CHUNK - first % PROMPT_CHUNK, kv_len)
        causal = torch.arange(end).view(1, end) <= torch.arange(first, end).view(end - first, 1)  # (queries, keys)
        chunk, _ = sdpa_attention_forward(
            module,
            query[:, :, first - start : end - start],
            key[:, :, :end],
            value[:, :, :end],
            causal[None, None],
            dropout,
            scaling,
            is_causal=False,
            **kwargs,
        )
        out.append(chunk)
    return torch.cat(out, dim=1)


def _segments(module, query, key, value, segments: list[tuple[int, list | None]], dropout, scaling, kwargs) -> torch.Tensor:
    """query/key/value (1, H, T, D): consecutive prompts' new tokens, each (its count, its cached prefix's (keys,
    values) per layer or None), each attending to its prefix and itself as alone. -> (1, T, H, D)"""
    out, start = [], 0
    for n, prefix in segments:
        end = start + n
        k, v = key[:, :, start:end], value[:, :, start:end]
        if prefix is not None:
            k_prefix, v_prefix = prefix[module.layer_idx]
            k, v = torch.cat([k_prefix[None], k], dim=2), torch.cat([v_prefix[None], v], dim=2)
        out.append(prompt_attention(module, query[:, :, start:end], k, v, dropout, scaling, kwargs))
        start = end
    return torch.cat(out, dim=1)


def _window(cached: torch.Tensor, width: int) -> torch.Tensor:
    """The last `width` positions of (B, Hkv, T, D) in fp32, zeros in front where the cache is shorter (one pass)."""
    take = min(width, cached.shape[2])
    out = torch.empty(*cached.shape[:2], width, cached.shape[3], dtype=torch.float32)
    out[:, :, : width - take].zero_()
    out[:, :, width - take :].copy_(cached[:, :, cached.shape[2] - take :])
    return out


def _decode_positions(query, key, value, counts, scaling) -> torch.Tensor:
    """One decode position per row, every row at once, in fp32, with the same arithmetic whatever the batch.

    A row's keys are the last `count` positions of the cache (left padding). Keys are cut into blocks of KEY_BLOCK
    counted from the right end, where every row ends, so a row's keys fall into the same blocks alone and in any
    batch; every block is one product of the same small shape (a batch of identical small products, each computed
    as alone); masked keys weigh exactly 0; and the blocks' partial sums are added left to right, where the blocks a
    longer batch adds in front contribute exact zeros. -> (B, 1, H, D)."""
    batch, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    blocks = -(-int(counts.max()) // KEY_BLOCK)
    width = blocks * KEY_BLOCK
    k, v = _window(key, width), _window(value, width)
    scale = scaling if scaling is not None else dim**-0.5
    q = (query.float() * scale).reshape(batch, kv_heads, 1, group, dim).expand(batch, kv_heads, blocks, group, dim)
    k = k.reshape(batch, kv_heads, blocks, KEY_BLOCK, dim)
    v = v.reshape(batch, kv_heads, blocks, KEY_BLOCK, dim)
    scores = torch.matmul(q, k.transpose(-1, -2))  # (B, Hkv, blocks, G, KEY_BLOCK)
    masked = torch.arange(width).view(1, width) < (width - counts).view(batch, 1)
    scores = scores.masked_fill(masked.view(batch, 1, blocks, 1, KEY_BLOCK), float("-inf"))
    top = scores.amax(dim=(2, 4), keepdim=True)
    weights = torch.exp(scores - top)
    sums = weights.sum(-1)  # (B, Hkv, blocks, G)
    parts = torch.matmul(weights, v)  # (B, Hkv, blocks, G, D)
    total, norm = parts[:, :, 0], sums[:, :, 0]
    for block in range(1, blocks):
        total, norm = total + parts[:, :, block], norm + sums[:, :, block]
    out = total / norm.unsqueeze(-1)  # (B, Hkv, G, D)
    return out.reshape(batch, 1, heads, dim).to(query.dtype)


PROBE_SIZES = (3, 5, 8, 16, 17, 31, 32, 33, 48, 64, 65, 100, 128, 129, 200, 256, 257, 512, 777, 1024)
CHUNK_CANDIDATES = (1024, 256, 128, 64, 32, 16, 8)


def agreeing_rows(shapes: set[tuple[int, int]], dtype) -> int:
    """The most rows a linear call may take on this CPU with each row computing exactly what it computes in a call of
    two rows, for every (in_features, out_features) in `shapes`: the largest candidate C for which every probed row
    count up to C agrees (random weights and inputs; the kernels depend on shapes and row counts, not on values)."""
    linear = torch.nn.functional.linear
    generator = torch.Generator().manual_seed(0)
    probes = []
    for features_in, features_out in sorted(shapes):
        w = torch.randn(features_out, features_in, generator=generator).to(dtype)
        x = torch.randn(max(CHUNK_CANDIDATES), features_in, generator=generator).to(dtype)
        pairs = torch.cat([linear(x[i : i + 2], w) for i in range(0, 64, 2)])  # rows 0..63, two at a time
        probes.append((w, x, pairs))
    with torch.no_grad():
        for chunk in CHUNK_CANDIDATES:
            if all(torch.equal(linear(x[:m], w)[: min(m, 64)], pairs[: min(m, 64)]) for w, x, pairs in probes for m in PROBE_SIZES if m <= chunk):
                return chunk
    return 2


def _rows_forward(module, x: torch.Tensor) -> torch.Tensor:
    from tunesmith.infer.packed import by_rows

    return by_rows(x, module.__dict__["_tunesmith_chunk_rows"], lambda rows: torch.nn.functional.linear(rows, module.weight, module.bias))


def small_row_linears(model, chunk_rows: int | None = None) -> int:
    """Every nn.Linear runs its rows in chunks of 2..chunk_rows (default: `agreeing_rows` for the model's shapes and
    dtype, where `bit_exact_here`; else only a lone row is doubled), packed or plain (infer/packed.py `by_rows`);
    returns how many layers changed."""
    from functools import partial

    layers = [m for m in model.modules() if type(m) is torch.nn.Linear and "_tunesmith_chunk_rows" not in m.__dict__]
    if layers and chunk_rows is None:
        dtype = layers[0].weight.dtype
        chunk_rows = agreeing_rows({(m.in_features, m.out_features) for m in layers}, dtype) if bit_exact_here(dtype) else 2**31
    for module in layers:
        module.__dict__["_tunesmith_chunk_rows"] = chunk_rows  # read by the packed path too
        module.forward = partial(_rows_forward, module)
    return len(layers)


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
