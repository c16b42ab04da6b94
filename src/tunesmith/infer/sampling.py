"""The sampling maths, in one place: logits -> the distribution the next token is drawn from.

`generate` draws from `next_token_distribution`; `inspect logits` shows `explain`, which
runs the very same function, so what the inspector prints is what generation does.

Order (as Hugging Face applies its logits processors):
    repetition penalty -> temperature -> top-k -> top-p -> min-p -> renormalise
top-p keeps the smallest set of most likely tokens whose probability reaches top_p (the token
that crosses the threshold is kept); min-p keeps tokens with p >= min_p * p_max; at least one
token always survives. temperature == 0 means greedy: all mass on the arg-max.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tunesmith.errors import TunesmithError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    min_p: float = 0.0  # 0: off
    repetition_penalty: float = 1.0  # 1: off

    def __post_init__(self):
        if self.temperature < 0:
            raise TunesmithError(f"temperature is {self.temperature}; it must be >= 0 (0 = greedy)")
        if self.top_k < 0:
            raise TunesmithError(f"top_k is {self.top_k}; it must be >= 0 (0 = off)")
        if not 0 < self.top_p <= 1:
            raise TunesmithError(f"top_p is {self.top_p}; it must be in (0, 1] (1 = off)")
        if not 0 <= self.min_p <= 1:
            raise TunesmithError(f"min_p is {self.min_p}; it must be in [0, 1] (0 = off)")
        if self.repetition_penalty <= 0:
            raise TunesmithError(f"repetition_penalty is {self.repetition_penalty}; it must be > 0 (1 = off)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def penalise(logits: torch.Tensor, previous_ids: torch.Tensor | None, penalty: float) -> torch.Tensor:
    """HF convention: for tokens already present, positive logits are divided by `penalty`, negative multiplied.
    logits (B, V); previous_ids (B, T) of token ids (padding must not be a real token or be masked by caller)."""
    if penalty == 1.0 or previous_ids is None or previous_ids.numel() == 0:
        return logits
    seen = torch.gather(logits, 1, previous_ids)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, previous_ids, seen)


def filter_masks(probs: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep-masks (B, V) of top-k, top-p and min-p, each computed on `probs` (after temperature)."""
    vocab = probs.shape[-1]
    order = probs.argsort(dim=-1, descending=True)
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(vocab).expand_as(order))
    keep_k = ranks < params.top_k if params.top_k > 0 else torch.ones_like(probs, dtype=torch.bool)
    sorted_probs = probs.gather(-1, order)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass strictly above each token
    keep_p_sorted = before < params.top_p if params.top_p < 1.0 else torch.ones_like(probs, dtype=torch.bool)
    keep_p = keep_p_sorted.gather(-1, ranks)
    keep_min = probs >= params.min_p * probs.max(-1, keepdim=True).values if params.min_p > 0 else torch.ones_like(probs, dtype=torch.bool)
    return keep_k, keep_p, keep_min


def next_token_distribution(logits: torch.Tensor, params: SamplingParams, previous_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V) logits -> (B, V) probabilities the next token is sampled from (float32)."""
    logits = penalise(logits.float(), previous_ids, params.repetition_penalty)
    if params.greedy:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    probs = torch.softmax(logits / params.temperature, dim=-1)
    keep_k, keep_p, keep_min = filter_masks(probs, params)
    keep = keep_k & keep_p & keep_min
    keep.scatter_(-1, probs.argmax(-1, keepdim=True), True)  # never filter everything away
    kept = probs * keep
    return kept / kept.sum(-1, keepdim=True)


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) -> (B,) token ids; arg-max for one-hot (greedy) rows without touching the generator."""
    if bool(((probs == 1.0).sum(-1) == 1).all()):
        return probs.argmax(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@dataclass
class Explanation:
    """Per-token view of one step, sorted by probability after temperature (descending)."""

    token_ids: list[int]
    logits: list[float]  # after repetition penalty
    p_softmax: list[float]
    p_temperature: list[float]
    cumulative: list[float]
    kept_top_k: list[bool]
    kept_top_p: list[bool]
    kept_min_p: list[bool]
    p_final: list[float]
    kept_counts: dict[str, int]
    entropy_softmax: float  # nats
    entropy_final: float  # nats
    vocab_size: int


def _entropy(p: torch.Tensor) -> float:
    nz = p[p > 0]
    return float(-(nz * nz.log()).sum())


def explain(logits: torch.Tensor, params: SamplingParams, previous_ids: torch.Tensor | None = None, rows: int | None = None) -> Explanation:
    """The maths of `next_token_distribution` for one (V,) logits vector, token by token."""
    row = penalise(logits.float().unsqueeze(0), previous_ids.unsqueeze(0) if previous_ids is not None else None, params.repetition_penalty)
    final = next_token_distribution(logits.unsqueeze(0), params, previous_ids.unsqueeze(0) if previous_ids is not None else None)[0]
    p_soft = torch.softmax(row, -1)[0]
    p_temp = p_soft if params.greedy else torch.softmax(row / params.temperature, -1)[0]
    keep_k, keep_p, keep_min = (m[0] for m in filter_masks(p_temp.unsqueeze(0), params if not params.greedy else SamplingParams()))
    order = p_temp.argsort(descending=True)[: rows or p_temp.numel()]
    cumulative = p_temp[p_temp.argsort(descending=True)].cumsum(0)
    pick = lambda t: [float(x) for x in t[order]]  # noqa: E731
    return Explanation(
        token_ids=[int(i) for i in order],
        logits=pick(row[0]),
        p_softmax=pick(p_soft),
        p_temperature=pick(p_temp),
        cumulative=[float(x) for x in cumulative[: len(order)]],
        kept_top_k=[bool(x) for x in keep_k[order]],
        kept_top_p=[bool(x) for x in keep_p[order]],
        kept_min_p=[bool(x) for x in keep_min[order]],
        p_final=pick(final),
        kept_counts={"top_k": int(keep_k.sum()), "top_p": int(keep_p.sum()), "min_p": int(keep_min.sum()), "final": int((final > 0).sum())},
        entropy_softmax=_entropy(p_soft),
        entropy_final=_entropy(final),
        vocab_size=p_temp.numel(),
    )


def entropy_bits(nats: float) -> float:
    return nats / math.log(2)
