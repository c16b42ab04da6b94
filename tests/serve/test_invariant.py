"""The batch-invariant decode attention: a row's numbers alone equal its numbers in any batch, and they are attention."""

from __future__ import annotations

import torch

from tunesmith.serve.invariant import KEY_BLOCK, _decode_positions


def test_a_decode_row_computes_the_same_alone_and_in_any_batch_and_it_is_attention(one_thread):
    """Rows of different lengths, left-padded to the longest (and further, as a cache that kept old columns): each
    row's output equals the row run alone on exactly its own keys, bit for bit, and SDPA's within bf16 rounding."""
    generator = torch.Generator().manual_seed(0)
    heads, kv_heads, dim = 6, 2, 16
    counts = [1, KEY_BLOCK - 1, KEY_BLOCK, KEY_BLOCK + 1, 3 * KEY_BLOCK + 7, 77]
    width = max(counts) + 5  # padding columns no row uses
    query = torch.randn(len(counts), heads, 1, dim, generator=generator).bfloat16()
    key = torch.randn(len(counts), kv_heads, width, dim, generator=generator).bfloat16()
    value = torch.randn(len(counts), kv_heads, width, dim, generator=generator).bfloat16()
    batch = _decode_positions(query, key, value, torch.tensor(counts), None)
    for row, n in enumerate(counts):
        k, v = key[row : row + 1, :, width - n :], value[row : row + 1, :, width - n :]
        alone = _decode_positions(query[row : row + 1], k, v, torch.tensor([n]), None)
        assert torch.equal(batch[row], alone[0]), n
        expected = torch.nn.functional.scaled_dot_product_attention(
            query[row : row + 1].float(), k.float().repeat_interleave(heads // kv_heads, 1), v.float().repeat_interleave(heads // kv_heads, 1)
        )
        assert torch.allclose(alone[0, 0].float(), expected[0, :, 0], atol=1e-2), n
