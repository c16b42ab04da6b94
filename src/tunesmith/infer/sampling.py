"""The sampling maths, in one place: logits -> the distribution the next token is drawn from.

`generate` draws from `next_token_distribution`; `inspect logits` shows `explain`; both run
`_steps`, so what the inspector prints is what generation does.

Order, as Hugging Face applies its logits processors, each seeing what the previous left:
    repetition penalty -> temperature -> top-k -> top-p -> min-p -> renormalise
- top-k keeps the k most likely tokens (ties with the k-th are kept, as HF does);
- top-p keeps the smallest set of most likely tokens whose probability reaches top_p, measured
  on the distribution top-k left (renormalised), and the token that crosses the threshold is kept;
- min-p keeps tokens with p >= min_p * p_max (a ratio, so top-k/top-p renormalising cannot change it).
A token survives when every filter keeps it; the most likely token always survives.
temperature == 0 means greedy: all mass on the arg-max (after the repetition penalty).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from tunesmith.errors import TunesmithError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    min_p: float = 0.0  # 0: off
    repetition_penalty: float = 1.0  # 1: off

    def __post_init__(self):
        def check(ok: bool, name: str, rule: str):
            if not ok:
                raise TunesmithError(f"{name} is {getattr(self, name)!r}; it must be {rule}")

        for name in ("temperature", "top_p", "min_p", "repetition_penalty"):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), name, "a finite number")
        check(isinstance(self.top_k, int) and not isinstance(self.top_k, bool), "top_k", "an integer")
        check(self.temperature >= 0, "temperature", ">= 0 (0 = greedy)")
        check(self.top_k >= 0, "top_k", ">= 0 (0 = off)")
        check(0 < self.top_p <= 1, "top_p", "in (0, 1] (1 = off)")
        check(0 <= self.min_p <= 1, "min_p", "in [0, 1] (0 = off)")
        check(self.repetition_penalty > 0, "repetition_penalty", "> 0 (1 = off, > 1 discourages repeats)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def penalise(logits: torch.Tensor, previous_ids: torch.Tensor | None, penalty: float) -> torch.Tensor:
    """HF convention: for tokens already present, positive logits are divided by `penalty`, negative multiplied.

    logits (B, V); previous_ids (B, T) token ids (repeats are fine; padding must be replaced by the caller)."""
    if penalty == 1.0 or previous_ids is None or previous_ids.numel() == 0:
        return logits
    seen = logits.gather(1, previous_ids)
    return logits.scatter(1, previous_ids, torch.where(seen > 0, seen / penalty, seen * penalty))


@dataclass
class _Steps:
    """Every intermediate of one sampling step, all (B, V)."""

    logits: torch.Tensor  # after repetition penalty
    p_temperature: torch.Tensor  # softmax(logits / T); plain softmax when greedy
    cumulative: torch.Tensor | None  # mass top-p sees up to and including each token (top-k survivors, renormalised)
    keep_top_k: torch.Tensor
    keep_top_p: torch.Tensor
    keep_min_p: torch.Tensor
    keep: torch.Tensor  # all filters together, the arg-max forced in
    final: torch.Tensor  # what the next token is drawn from


def _steps(logits: torch.Tensor, params: SamplingParams, previous_ids: torch.Tensor | None, cumulative_column: bool = False) -> _Steps:
    """The whole pipeline for (B, V) logits; `next_token_distribution` and `explain` both read it.

    The cumulative mass needs a sort of the vocabulary; generation only pays for it when top-p is on
    (`cumulative_column` asks for it anyway, for the inspector's table; it changes no probability)."""
    logits = penalise(logits.float(), previous_ids, params.repetition_penalty)
    scaled = logits / (params.temperature or 1.0)
    probs = torch.softmax(scaled, dim=-1)
    top = scaled.argmax(-1, keepdim=True)  # (B, 1), the token greedy decoding picks
    off = torch.ones_like(probs, dtype=torch.bool)  # a filter that is switched off (or greedy) keeps everything
    sampling = not params.greedy
    # on logits, not probabilities: tokens whose probability underflows to 0 must not tie with the k-th
    keep_k = scaled >= scaled.topk(min(params.top_k, probs.shape[-1]), dim=-1).values[..., -1:] if sampling and params.top_k > 0 else off
    # top-p sees what top-k left, renormalised; sorted descending, a token is kept while the mass above it is < top_p
    top_p_on = sampling and params.top_p < 1.0
    cumulative = None
    keep_p = off
    if top_p_on or cumulative_column:
        after_k = probs * keep_k
        after_k = after_k / after_k.sum(-1, keepdim=True)
        if cumulative_column:
            ranked, order = after_k.sort(stable=True, dim=-1, descending=True)  # order: (B, V) token ids by rank, ties by id
            cumulative = torch.empty_like(ranked).scatter_(-1, order, ranked.cumsum(-1))  # back to token-id order
            keep_p = keep_k & (cumulative - after_k < params.top_p) if top_p_on else off
        else:
            keep_p = keep_k & _nucleus(after_k, params.top_p)
    keep_min = probs >= params.min_p * probs.gather(-1, top) if sampling and params.min_p > 0 else off
    keep = (keep_k & keep_p & keep_min) if sampling else torch.zeros_like(off)
    keep = keep.scatter(-1, top, True)
    kept = probs * keep
    return _Steps(logits, probs, cumulative, keep_k, keep_p, keep_min, keep, kept / kept.sum(-1, keepdim=True))


NUCLEUS_CANDIDATES = 256  # tried first: enough for a peaked distribution


def _nucleus(after_k: torch.Tensor, top_p: float) -> torch.Tensor:
    """(B, V) -> (B, V) bool: the tokens top-p keeps, exactly as the full sort in `_steps` keeps them (descending
    probability, ties by token id, a token kept while the running mass before it is < top_p), sorting only
    candidates: every token at or above a probability floor, with all its ties. Their running sums are the first
    ones of the full sort's, so when their mass reaches top_p no token after them is kept. The floor is the 256th
    largest probability, else one bisected on the mass above it (a flat distribution), else the row sorts its whole
    vocabulary. A 49k-vocabulary row: ~0.1-0.8 ms instead of ~4 ms for the full sort."""
    rows, vocab = after_k.shape
    keep = torch.zeros_like(after_k, dtype=torch.bool)
    for b in range(rows):
        p = after_k[b]
        for ids in _candidates(p, top_p):
            ranked, order = p[ids].sort(stable=True, dim=-1, descending=True)
            running = ranked.cumsum(-1)
            if len(ids) == vocab or bool(running[-1] >= top_p):
                break
        keep[b, ids[order]] = running - ranked < top_p
    return keep


def _candidates(p: torch.Tensor, top_p: float):
    """Token ids (ascending) for `_nucleus` to sort, from few to all, each set computed only when the one before fell
    short: those at or above the 256th largest probability, those above a bisected mass floor, the whole vocabulary."""
    for floor in (lambda: float(p.topk(min(NUCLEUS_CANDIDATES, len(p))).values[-1]), lambda: _mass_floor(p, top_p)):
        yield ((p >= floor()) & (p > 0)).nonzero().squeeze(-1)
    yield torch.arange(len(p))


def _mass_floor(p: torch.Tensor, top_p: float, halvings: int = 14) -> float:
    """A probability floor whose tokens (p >= floor) hold at least top_p of the mass, by bisection (a little under)."""
    low, high = 0.0, float(p.max())
    for _ in range(halvings):
        middle = (low + high) / 2
        if float(torch.where(p >= middle, p, 0.0).sum()) >= top_p:
            low = middle
        else:
            high = middle
    return low * 0.999


def next_token_distribution(logits: torch.Tensor, params: SamplingParams, previous_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V) logits -> (B, V) float32 probabilities the next token is drawn from (one-hot when greedy).

    previous_ids (B, T): the tokens the repetition penalty looks at (prompt and generated so far)."""
    return _steps(logits, params, previous_ids).final


def next_tokens(logits: torch.Tensor, params: SamplingParams, previous_ids: torch.Tensor | None, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) logits -> (B,) the tokens generation takes: a draw from `next_token_distribution`. Greedy skips
    building the one-hot distribution: its token is the arg-max of the penalised logits, which is where that
    distribution puts all its mass (the same token; the generator is not touched either way)."""
    if params.greedy:
        return penalise(logits.float(), previous_ids, params.repetition_penalty).argmax(-1)
    return sample(next_token_distribution(logits, params, previous_ids), generator)


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) -> (B,) token ids. One-hot rows (greedy, or one survivor) take the arg-max and leave the generator alone."""
    if bool(one_hot(probs).all()):
        return probs.argmax(-1)
    return pick(probs, uniforms(probs.shape[0], generator))


def one_hot(probs: torch.Tensor) -> torch.Tensor:
    """(B, V) -> (B,) bool: the row puts all its mass on one token."""
    return (probs == 1.0).sum(-1) == 1


def uniforms(rows: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """(rows,) draws in [0, 1) from the generator, one per token to sample: float32 draws (24 random bits, as
    torch.multinomial's), held in float64 for the comparison with the running mass."""
    return torch.rand(rows, generator=generator).double()


def pick(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(B, V) probabilities and (B,) uniforms -> (B,) token ids by inverse transform: the first token whose running
    mass (float64) exceeds u times the row's total, so a token is drawn with its probability and one of probability 0
    never. One uniform a row, where torch.multinomial draws one exponential per vocabulary entry (~1.4 ms a row for
    a 49k vocabulary on the 2-core EPYC); a row's token depends only on its own probabilities and its own u."""
    running = probs.double().cumsum(-1)
    chosen = torch.searchsorted(running, (u.to(running.device).view(-1, 1) * running[:, -1:]).contiguous(), right=True).squeeze(-1)
    last = probs.shape[-1] - 1 - (probs.flip(-1) > 0).int().argmax(-1)  # the last token with mass: where u * total rounds up to the total
    return torch.where(chosen <= last, chosen, last)


@dataclass
class Explanation:
    """One step, token by token, sorted by probability after temperature (descending); the first `rows` tokens."""

    token_ids: list[int]
    logits: list[float]  # after repetition penalty
    p_softmax: list[float]  # plain softmax of the logits
    p_temperature: list[float]
    cumulative: list[float]  # the mass top-p compares with top_p (equals the running sum of p_temperature when top-k is off)
    kept_top_k: list[bool]
    kept_top_p: list[bool]
    kept_min_p: list[bool]
    p_final: list[float]  # renormalised over the survivors; 0 for filtered tokens
    kept_counts: dict[str, int]  # top_k, top_p, min_p, final: tokens each keeps out of vocab_size
    entropy_softmax: float  # nats, of p_softmax over the whole vocabulary
    entropy_final: float  # nats, of p_final
    vocab_size: int
    distribution: torch.Tensor = field(repr=False)  # (V,) the whole final distribution: what generation samples from


def entropy(p: torch.Tensor) -> float:
    """Shannon entropy in nats of a (V,) distribution (0 * log 0 = 0)."""
    return float(torch.special.entr(p).sum()) + 0.0  # entr = -p ln p (0 at p = 0); + 0.0 turns -0.0 into 0.0


def entropy_bits(nats: float) -> float:
    return nats / math.log(2)


def explain(logits: torch.Tensor, params: SamplingParams, previous_ids: torch.Tensor | None = None, rows: int | None = None) -> Explanation:
    """What `next_token_distribution` does to one (V,) logits vector; previous_ids (T,) for the repetition penalty."""
    s = _steps(logits.unsqueeze(0), params, previous_ids.unsqueeze(0) if previous_ids is not None else None, cumulative_column=True)
    s = _Steps(**{name: t[0] for name, t in vars(s).items()})  # the one row, (V,) each
    p_softmax = torch.softmax(s.logits, -1)
    order = s.p_temperature.argsort(descending=True)[:rows]

    def pick(t: torch.Tensor, kind=float) -> list:
        return [kind(x) for x in t[order]]

    return Explanation(
        token_ids=[int(i) for i in order],
        logits=pick(s.logits),
        p_softmax=pick(p_softmax),
        p_temperature=pick(s.p_temperature),
        cumulative=pick(s.cumulative),
        kept_top_k=pick(s.keep_top_k, bool),
        kept_top_p=pick(s.keep_top_p, bool),
        kept_min_p=pick(s.keep_min_p, bool),
        p_final=pick(s.final),
        kept_counts={"top_k": int(s.keep_top_k.sum()), "top_p": int(s.keep_top_p.sum()), "min_p": int(s.keep_min_p.sum()), "final": int(s.keep.sum())},
        entropy_softmax=entropy(p_softmax),
        entropy_final=entropy(s.final),
        vocab_size=len(s.logits),
        distribution=s.final,
    )
