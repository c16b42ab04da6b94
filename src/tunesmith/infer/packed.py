"""Decoding on prepacked weights: the bf16 linear layers of a CPU model run oneDNN's kernel on a weight reordered
once into its blocked layout, instead of reordering it again in every call.

Decoding a small batch reads every weight once per token; on the 2-core EPYC (avx512_bf16) a 1536 x 576 bf16
product for 8 rows took 176 us from a plain weight and 101 us from a packed one, with bit-identical results
(checked for 1, 8, 37 and 300 rows, 2-D and 3-D inputs, every SmolLM2 shape): the same oneDNN bf16 kernel,
without the per-call reorder. fp32 is left alone: its packed kernel is not MKL's sgemm, and its rounding
differs (~1e-4), which would break the promise that greedy decoding gives exactly `model.generate`'s tokens.

The packed copy is cached on the module, keyed by the weight's storage and version, so a model that keeps its
weights (serve, chat, eval) packs once; one whose weights change repacks. RL rollouts decode unpacked, and a
training run drops the copies its before-training samples made (see train/rollout.py, train/scaffold.py). It costs
a second copy of the bf16 linear weights (~270 MB for SmolLM2) and ~0.35 s the first time.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache, partial

import torch

ROWS_HINT = 8  # oneDNN's reorder takes the expected number of rows; the packed weight serves any


@lru_cache(maxsize=1)
def available() -> bool:
    """oneDNN's packed bf16 linear kernels exist in this torch build and run on this CPU. Where they do not (an
    AVX2-only CPU, or kernels capped there: "bf16 path needs the cpu support avx_ne_convert or avx512bw ..."),
    a tiny trial reorder fails and decoding keeps the plain layers."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise") and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")):
        return False
    try:
        torch.ops.mkldnn._reorder_linear_weight(torch.zeros(8, 8, dtype=torch.bfloat16), ROWS_HINT)
    except RuntimeError:
        return False
    return True


def packable(module) -> bool:
    """A bf16 nn.Linear on the CPU (LoRA's adapters, kept in fp32, are not)."""
    w = getattr(module, "weight", None)
    return type(module) is torch.nn.Linear and w is not None and w.dtype == torch.bfloat16 and w.device.type == "cpu"


def _packed_forward(module, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() or x.dtype != torch.bfloat16:
        return torch.nn.functional.linear(x, module.weight, module.bias)
    w = module.weight
    key = (w.data_ptr(), w._version)
    cached = module.__dict__.get("_tunesmith_packed")
    if cached is None or cached[0] != key:
        cached = (key, torch.ops.mkldnn._reorder_linear_weight(w, ROWS_HINT))
        module.__dict__["_tunesmith_packed"] = cached  # a plain attribute: not a parameter, not in the state dict
    return torch.ops.mkldnn._linear_pointwise(x, cached[1], module.bias, "none", [], "")


@contextmanager
def packed_linears(model):
    """Within the block, the model's packable linear layers compute from packed weights (no-grad bf16 calls only;
    anything else takes the plain path)."""
    patched = [m for m in model.modules() if packable(m) and "forward" not in m.__dict__] if available() else []  # re-entrant: an outer block keeps its own
    for module in patched:
        module.forward = partial(_packed_forward, module)
    try:
        yield len(patched)
    finally:
        for module in patched:
            module.__dict__.pop("forward", None)


def drop_packed(model) -> None:
    """Free the packed copies (they are rebuilt on the next decode)."""
    for module in model.modules():
        module.__dict__.pop("_tunesmith_packed", None)
