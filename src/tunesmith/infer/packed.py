"""Decoding on prepacked weights: the bf16 linear layers of a CPU model run oneDNN's kernel on a weight reordered
once into its blocked layout, and sibling layers that read the same input run as one product.

- Packing. Decoding a small batch reads every weight once per token; on the 2-core EPYC (avx512_bf16) a 1536 x 576
  bf16 product for 8 rows took 176 us from a plain weight and 101 us from a packed one, with bit-identical results
  (checked for 1, 8, 37 and 300 rows, 2-D and 3-D inputs, every SmolLM2 shape): the same oneDNN bf16 kernel,
  without the per-call reorder.
- Siblings. Attention's q/k/v projections and the MLP's gate/up projections read the same hidden state; one product
  on their weights stacked is one weight stream and one kernel call instead of three (two). SmolLM2, one row: all
  211 linear calls of a token took 18.4 ms packed one by one, 15.0 ms with the siblings fused (the EPYC). Each
  output column is the same dot product either way, and a probe at packing time checks that the fused product
  equals the separate ones bit for bit for the row counts decoding uses; a group that does not is left unfused.
  The first sibling called computes the whole product; the others take their columns of it, when they are called
  on the same input tensor (as every transformers attention and MLP does); called on another input a sibling
  computes alone.
- fp32 is left alone: its packed kernel is not MKL's sgemm, and its rounding differs (~1e-4), which would break the
  promise that greedy decoding gives exactly `model.generate`'s tokens.
- Rows. A layer marked by the server's batch invariance (serve/invariant.py: `_tunesmith_chunk_rows`) runs its rows
  in chunks of that size, a lone row as two copies of itself, packed or not (`by_rows`).

The packed copies are cached on the modules, keyed by the weights' storage and version, so a model that keeps its
weights (serve, chat, eval) packs once; one whose weights change repacks. RL rollouts decode unpacked, and a
training run drops the copies its before-training samples made (see train/rollout.py, train/scaffold.py). It costs
a second copy of the bf16 linear weights (~270 MB for SmolLM2) and ~0.4 s the first time.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import cache, lru_cache, partial
from types import SimpleNamespace

import torch

ROWS_HINT = 8  # oneDNN's reorder takes the expected number of rows; the packed weight serves any
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))  # names transformers gives layers that share an input
PROBE_ROWS = (1, 2, 3, 8, 17, 33, 100, 320)


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


def by_rows(x: torch.Tensor, chunk_rows: int | None, product) -> torch.Tensor:
    """`product(x)` with x's rows in chunks of 2..chunk_rows, a lone row as two copies of itself (the first kept);
    `product(x)` as it is when chunk_rows is None."""
    rows = x.reshape(-1, x.shape[-1])
    if chunk_rows is None or 2 <= rows.shape[0] <= chunk_rows:
        return product(x)
    out = [product(torch.cat([chunk, chunk]))[:1] if len(chunk) == 1 else product(chunk) for chunk in rows.split(chunk_rows)]
    out = torch.cat(out)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def _kernel(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _Pack:
    """The packed weight (and bias) of one layer, or of sibling layers stacked, rebuilt when a weight changes."""

    def __init__(self, modules: list):
        self.modules = modules
        self.key = None
        self.weight = self.bias = None
        self.columns: dict[int, slice] = {}
        start = 0
        for m in modules:
            self.columns[id(m)] = slice(start, start + m.out_features)
            start += m.out_features
        self.input = self.output = self.seen = None  # the last input the stack was computed on, its product, and versions

    def packed(self):
        key = tuple((m.weight.data_ptr(), m.weight._version) for m in self.modules)
        if key != self.key:
            weight = self.modules[0].weight if len(self.modules) == 1 else torch.cat([m.weight for m in self.modules])
            biases = [m.bias for m in self.modules]
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, ROWS_HINT)
            self.bias = None if biases[0] is None else torch.cat(biases).detach()
            self.key = key
        return self.weight, self.bias

    def forward(self, module, x: torch.Tensor) -> torch.Tensor:
        chunk = module.__dict__.get("_tunesmith_chunk_rows")
        if len(self.modules) == 1:
            return by_rows(x, chunk, partial(_kernel, *self.packed()))
        weight, bias = self.packed()
        seen = (x._version, self.key)
        if self.input is not x or self.seen != seen:  # a new input (or new weights): the whole stack's product
            self.output = by_rows(x, chunk, partial(_kernel, weight, bias))
            self.input, self.seen = x, seen
        return self.output[..., self.columns[id(module)]]

    def forget(self) -> None:
        self.input = self.output = None


@cache
def _fused_agree(in_features: int, outs: tuple[int, ...], bias: bool) -> bool:
    """A stacked product of layers of these shapes equals each layer's own, bit for bit, for the row counts decoding
    and prefill use (random weights and inputs: the kernels depend on shapes and row counts, not on values)."""
    generator = torch.Generator().manual_seed(0)
    layers = [
        SimpleNamespace(
            weight=torch.randn(out, in_features, generator=generator).to(torch.bfloat16),
            bias=torch.randn(out, generator=generator).to(torch.bfloat16) if bias else None,
            out_features=out,
        )
        for out in outs
    ]  # not nn.Linear: its initialisation would draw from torch's global generator
    together, alone = _Pack(layers), [_Pack([m]) for m in layers]
    with torch.no_grad():
        for rows in PROBE_ROWS:
            x = torch.randn(rows, in_features, generator=generator).to(torch.bfloat16)
            if not torch.equal(_kernel(*together.packed(), x), torch.cat([_kernel(*a.packed(), x) for a in alone], -1)):
                return False
    return True


def _groups(model, layers: list) -> list[list]:
    """The layers in packing groups: siblings stacked where their product agrees, every other layer alone."""
    chosen = {id(m) for m in layers}
    grouped: set[int] = set()
    groups = []
    for parent in model.modules():
        for names in SIBLINGS:
            members = [getattr(parent, n, None) for n in names]
            if not all(m is not None and id(m) in chosen and id(m) not in grouped for m in members):
                continue
            first = members[0]
            same_shape = all(m.in_features == first.in_features and (m.bias is None) == (first.bias is None) for m in members)
            if same_shape and _fused_agree(first.in_features, tuple(m.out_features for m in members), first.bias is not None):
                groups.append(members)
                grouped |= {id(m) for m in members}
    return groups + [[m] for m in layers if id(m) not in grouped]


def _packed_forward(module, plain, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() or x.dtype != torch.bfloat16:
        return plain(x)
    return module.__dict__["_tunesmith_packed"].forward(module, x)


@contextmanager
def packed_linears(model):
    """Within the block, the model's packable linear layers compute from packed weights, siblings as one product
    (no-grad bf16 calls only; anything else takes the layer's own path). Re-entrant: an inner block changes nothing."""
    layers = [m for m in model.modules() if packable(m) and not m.__dict__.get("_tunesmith_packing")] if available() else []
    packs = {}
    for group in _groups(model, layers):
        cached = group[0].__dict__.get("_tunesmith_packed")
        pack = cached if cached is not None and [id(m) for m in cached.modules] == [id(m) for m in group] else _Pack(group)
        for m in group:
            packs[id(m)] = pack
    saved = {}
    for module in layers:
        saved[id(module)] = module.__dict__.get("forward")
        plain = saved[id(module)] or partial(type(module).forward, module)
        module.__dict__["_tunesmith_packed"] = packs[id(module)]  # a plain attribute: not a parameter, not in the state dict
        module.__dict__["_tunesmith_packing"] = True
        module.forward = partial(_packed_forward, module, plain)
    try:
        yield len(layers)
    finally:
        for module in layers:
            module.__dict__.pop("_tunesmith_packing", None)
            module.__dict__["_tunesmith_packed"].forget()
            if saved[id(module)] is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = saved[id(module)]


def drop_packed(model) -> None:
    """Free the packed copies (they are rebuilt on the next decode), and hand the freed heap back to the system."""
    from tunesmith.heap import release_free_memory

    for module in model.modules():
        module.__dict__.pop("_tunesmith_packed", None)
    release_free_memory()
