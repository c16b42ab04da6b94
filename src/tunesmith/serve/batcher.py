"""Continuous batching: requests join and leave one running batch between decode steps.

One worker thread owns the model. Each step it (1) drops rows whose client went away, (2) admits waiting
requests up to `max_batch` rows: their prompts are prefilled together, packed end to end in one row (each from the
end of its longest cached prefix), and their KV cache is joined to the running batch's, the shorter side padded on
the left with masked zeros, (3) feeds every
running row its last token in one forward pass, and (4) samples each row's next token with that row's own
settings, seed and repetition-penalty history, through the same `next_tokens` and the same `Row` bookkeeping
(eos, stop strings, stable streaming deltas) as `tunesmith generate`. A finished row leaves the batch at once;
columns that only padding still uses are cut off the left of the cache. Each row attends over its own tokens only and
linear layers run their rows in chunks that this CPU's kernel rounds alike (serve/invariant.py), so a
row's numbers do not depend on its neighbours, on the padding or on being alone.

Rows never read each other's tokens: every row has its own attention-mask row and its own position ids, and
padding is masked out. A request that has waited is answered in the order it came (FIFO). The waiting line is
bounded: `submit` raises `QueueFull` (the server answers 429 with Retry-After) rather than queueing forever.
With `max_batch=1` this is the one-at-a-time server (the baseline `tunesmith bench serve` measures against).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate

import torch

from tunesmith.infer.generate import Completion, Row, cache_keyword, returned_cache, stop_token_ids
from tunesmith.infer.packed import packed_linears
from tunesmith.infer.sampling import SamplingParams, next_token_distribution, next_tokens, one_hot, pick, uniforms

ADMIT_WAIT_S = 0.25


class QueueFull(Exception):
    """The waiting line is full; `retry_after` is a guess in whole seconds of when a place frees up."""

    def __init__(self, waiting: int, retry_after: int):
        super().__init__(f"the server is busy: {waiting} requests are already waiting")
        self.waiting, self.retry_after = waiting, retry_after


@dataclass(eq=False)
class Job:
    """One request: an already-encoded prompt and how to sample its reply. `on_delta(text)` streams stable text;
    `on_done(Completion | Exception)` is called once, from the worker thread."""

    prompt_ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    on_done: Callable[[object], None]
    stops: list[str] = field(default_factory=list)
    strip: bool = True  # chat replies are stripped; raw completions kept as they are
    seed: int | None = None
    on_delta: Callable[[str], None] | None = None
    cancelled: bool = False  # set from any thread (a client went away); the worker drops the row before its next step
    submitted: float = field(default_factory=time.perf_counter)
    # the worker's own state
    row: Row | None = None
    generator: torch.Generator | None = None
    seen: torch.Tensor | None = None  # (1, T) prompt + reply so far, for the repetition penalty
    next_token: int = 0
    position: int = 0


def off_the_main_thread(fn, *args):
    """fn(*args) in a short-lived thread, its result or exception handed back. Where the main thread has run torch's
    parallel kernels, its OpenMP team makes every later parallel kernel of another thread (the batcher's worker)
    slow: on the 2-core EPYC an elementwise op 3.8x, a packed linear 1.8x, a whole decode step 1.6x, whatever
    OMP_WAIT_POLICY or GOMP_SPINCOUNT say; a team of a thread that has ended does no harm. So a server loads and
    prepares its model off the main thread, and only the worker runs it."""
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = fn(*args)
        except BaseException as exc:  # re-raised in the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="tunesmith-prepare")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _nbytes(layers: list) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)


class PrefixCache:
    """Keys and values of prompts served recently, found again by their tokens: a new prompt that starts like one of
    them (a shared system prompt, a chat's history) is prefilled from the end of the longest common prefix, in whole
    chunks of PROMPT_CHUNK tokens (serve/invariant.py computes a prompt chunk by chunk, so the result is the same).
    Least recently used prompts leave first once their keys and values pass `budget_bytes`."""

    def __init__(self, budget_bytes: int = 64 * 2**20):
        from collections import OrderedDict

        from tunesmith.serve.invariant import PROMPT_CHUNK

        self.chunk, self.budget = PROMPT_CHUNK, budget_bytes
        self.entries: OrderedDict[tuple, list] = OrderedDict()  # a prompt's tokens -> per layer (keys, values) (Hkv, len, D)
        self.index: dict[tuple, tuple] = {}  # every chunk-aligned prefix -> the prompt that holds it
        self.bytes = 0
        self.hits = self.reused_tokens = 0

    def longest(self, prompt: list[int]) -> tuple[int, list | None]:
        """(tokens, per layer (keys, values) of them): the longest cached chunk-aligned prefix that leaves at least
        one token to compute (its logits pick the first reply token); (0, None) when none."""
        for n in range((len(prompt) - 1) // self.chunk * self.chunk, 0, -self.chunk):
            owner = self.index.get(tuple(prompt[:n]))
            if owner is not None and owner in self.entries:
                self.entries.move_to_end(owner)
                self.hits, self.reused_tokens = self.hits + 1, self.reused_tokens + n
                return n, [(k[:, :n], v[:, :n]) for k, v in self.entries[owner]]
        return 0, None

    def add(self, prompt: list[int], layers: list) -> None:
        key = tuple(prompt)
        if key in self.entries or len(prompt) < self.chunk:
            return
        size = _nbytes(layers)
        if size > self.budget:
            return
        self.entries[key] = layers = [(k.clone(), v.clone()) for k, v in layers]  # not views that keep a whole batch alive
        self.bytes += size
        for n in range(self.chunk, len(prompt) + 1, self.chunk):
            self.index[key[:n]] = key
        while self.bytes > self.budget:
            old, dropped = self.entries.popitem(last=False)
            self.bytes -= _nbytes(dropped)
            for n in range(self.chunk, len(old) + 1, self.chunk):
                if self.index.get(old[:n]) == old:
                    del self.index[old[:n]]


class Batcher:
    def __init__(self, model, tokenizer, *, max_batch: int = 16, max_queue: int = 64, prefix_cache_mb: int = 64):
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch ({max_batch}) must be >= 1 and max_queue ({max_queue}) >= 0")
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.eos = set(stop_token_ids(model, tokenizer))
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos)
        self.context = getattr(model.config, "max_position_embeddings", None) or 10**9
        self.keyword = cache_keyword(model)
        self.max_queue = max_queue
        self.max_batch = max_batch
        if max_batch > 1:
            off_the_main_thread(batch_invariant_attention, model)  # its probe runs torch kernels (see off_the_main_thread)
        # needs the chunked prompt attention of the batch-invariant model
        self.prefixes = PrefixCache(prefix_cache_mb * 2**20) if max_batch > 1 and prefix_cache_mb > 0 else None
        self.waiting: deque[Job] = deque()
        self.running: list[Job] = []
        self.cache = None
        self.mask: torch.Tensor | None = None  # (B, T) over the cached positions
        self.cond = threading.Condition()
        self.closed = False
        self.seconds_per_request = 1.0  # running estimate, for Retry-After
        self.served = 0
        self.peak_batch = 0
        self.thread = threading.Thread(target=self._loop, name="tunesmith-batcher", daemon=True)
        self.thread.start()

    # -- any thread -----------------------------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self.cond:
            if self.closed:
                raise RuntimeError("the batcher is closed")
            if len(self.waiting) >= self.max_queue and len(self.running) + len(self.waiting) >= self.max_batch:
                ahead = len(self.waiting) + len(self.running)
                raise QueueFull(len(self.waiting), max(1, math.ceil(ahead * self.seconds_per_request / self.max_batch)))
            self.waiting.append(job)
            self.cond.notify()

    def cancel(self, job: Job) -> None:
        """The client went away: the row leaves the batch before the next decode step (or never joins it)."""
        job.cancelled = True
        with self.cond:
            self.cond.notify()

    def load(self) -> dict:
        with self.cond:
            return {
                "running": len(self.running),
                "waiting": len(self.waiting),
                "max_batch": self.max_batch,
                "max_queue": self.max_queue,
                "served": self.served,
                "peak_batch": self.peak_batch,
                "prefix_hits": self.prefixes.hits if self.prefixes else 0,  # prompts prefilled from the prefix cache
                "prefix_tokens_reused": self.prefixes.reused_tokens if self.prefixes else 0,
            }

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify()
        self.thread.join(5)

    # -- the worker -----------------------------------------------------------------------------------------
    def _loop(self) -> None:
        with packed_linears(self.model):  # bf16 weights reordered once for the server's life (infer/packed.py)
            self._serve()

    def _serve(self) -> None:
        while True:
            with self.cond:
                while not self.closed and not self.waiting and not self.running:
                    self.cond.wait()
                if self.closed:
                    break
                room = self.max_batch - len(self.running)
                joining = []
                admit = bool(self.waiting) and self._admit_now(room)
                while admit and self.waiting and len(joining) < room:
                    job = self.waiting.popleft()
                    if job.cancelled:
                        self._finish(job, None)
                    else:
                        joining.append(job)
            try:
                with torch.no_grad():
                    self._drop_cancelled()
                    if joining:
                        self._admit(joining)
                        joining = []
                    if self.running:
                        self._step()
            except Exception as exc:  # a failed forward fails the rows in it, not the server
                for job in [*self.running, *joining]:
                    self._finish(job, exc)
                self.running, self.cache, self.mask = [], None, None
        for job in [*self.running, *self.waiting]:
            self._finish(job, RuntimeError("the server is shutting down"))

    def _admit_now(self, room: int) -> bool:
        """Whether to prefill the waiting requests now. A prompt's prefill is a forward pass the running rows wait for,
        and one pass for several prompts costs far less than one each (SmolLM2, 100-token prompts: 182 ms for one,
        832 ms for sixteen), so while rows are decoding, newcomers are let in once a quarter of the batch is free
        or the oldest has waited ADMIT_WAIT_S; an idle batch takes them at once."""
        if not self.running or room >= max(1, self.max_batch // 4):
            return True
        return time.perf_counter() - self.waiting[0].submitted >= ADMIT_WAIT_S

    def _finish(self, job: Job, outcome) -> None:
        """Hand the result (a Completion, an exception, or None for a cancelled job) to the request."""
        if outcome is not None and not isinstance(outcome, BaseException):
            self.served += 1
            took = time.perf_counter() - job.submitted
            self.seconds_per_request = 0.8 * self.seconds_per_request + 0.2 * took
        try:
            job.on_done(outcome)
        except Exception:  # the request's own callback failing must not stop the others
            pass

    def _sample_all(self, jobs: list[Job], logits: torch.Tensor) -> list[bool]:
        """Each row's next token from its (V,) logits row, with its own settings and generator; returns which rows
        finished. Rows with the same settings (and no repetition penalty, which needs the row's history) share one
        distribution computation; every draw still takes the row's own generator, so a row samples as it would alone."""
        tokens = [0] * len(jobs)
        groups: dict[SamplingParams, list[int]] = {}
        for k, job in enumerate(jobs):
            if job.params.repetition_penalty != 1.0:
                tokens[k] = int(next_tokens(logits[k : k + 1], job.params, job.seen, job.generator)[0])
            else:
                groups.setdefault(job.params, []).append(k)
        for params, rows in groups.items():
            picked = logits[rows]
            if params.greedy:
                for k, token in zip(rows, picked.float().argmax(-1).tolist()):
                    tokens[k] = token
                continue
            probs = next_token_distribution(picked, params)
            drawn = [i for i, single in enumerate(one_hot(probs).tolist()) if not single]  # a one-hot row leaves its generator alone, as alone
            chosen = probs.argmax(-1)
            if drawn:
                u = torch.cat([uniforms(1, jobs[rows[i]].generator) for i in drawn])
                chosen[drawn] = pick(probs[drawn], u)
            for k, token in zip(rows, chosen.tolist()):
                tokens[k] = token
        return [self._take(job, token) for job, token in zip(jobs, tokens)]

    def _take(self, job: Job, token: int) -> bool:
        """Add a sampled token to the row; stream what became stable; True when the row has finished."""
        if job.params.repetition_penalty != 1.0:
            job.seen = torch.cat([job.seen, job.seen.new_tensor([[token]])], dim=-1)
        delta = job.row.add(self.tokenizer, token, self.eos)
        if delta and job.on_delta:
            try:
                job.on_delta(delta)
            except Exception:
                job.cancelled = True
        job.next_token = token
        return job.row.finish is not None

    def _admit(self, jobs: list[Job]) -> None:
        """Prefill the newcomers together, sample their first tokens, and join the ones still going to the batch."""
        for job in jobs:
            job.row = Row(job.stops, job.strip, min(job.max_new_tokens, self.context - len(job.prompt_ids)))
            job.generator = torch.Generator(device=self.device)
            if job.seed is not None:
                job.generator.manual_seed(job.seed)
            else:
                job.generator.seed()
            job.seen = torch.tensor([job.prompt_ids], device=self.device)
            job.position = len(job.prompt_ids)
        out, cache, mask = self._prefill([j.prompt_ids for j in jobs])
        finished = self._sample_all(jobs, out.logits[0])
        going = [k for k, done in enumerate(finished) if not done]
        for k, job in enumerate(jobs):
            if k not in going:
                self._finish(job, self._completion(job))
        if not going:
            return
        if len(going) < len(jobs):
            cache.batch_select_indices(torch.tensor(going, device=self.device))
            mask = mask[going]
        if not self.running:
            self.cache, self.mask = cache, mask
        else:
            self.cache, self.mask = _join(self.cache, self.mask, cache, mask)
        self.running += [jobs[k] for k in going]
        self.peak_batch = max(self.peak_batch, len(self.running))

    def _prefill(self, prompts: list[list[int]]):
        """The prompts packed end to end into one row, with no padding, each starting after the longest prefix of it
        the prefix cache holds: each position counted from its own prompt's start, each prompt attending to its own
        tokens only (serve/invariant.py), one linear call for every new token (in the row chunks that keep each row's
        numbers as alone) and the vocabulary projection for each prompt's last token only. -> (output with logits
        (1, len(prompts), V), the cache as one left-padded row per prompt, the mask)."""
        from tunesmith.serve.invariant import SEGMENTS

        found = [self.prefixes.longest(p) if self.prefixes else (0, None) for p in prompts]
        new = [len(p) - n for p, (n, _) in zip(prompts, found)]
        starts = [0, *accumulate(new)][:-1]  # where each prompt's new tokens begin in the packed row
        ids = torch.tensor([[t for p, (n, _) in zip(prompts, found) for t in p[n:]]], device=self.device)
        positions = torch.cat([torch.arange(n, len(p), device=self.device) for p, (n, _) in zip(prompts, found)])[None]
        ends = torch.tensor([s + m - 1 for s, m in zip(starts, new)], device=self.device)
        packing = {SEGMENTS: [(m, prefix) for m, (_, prefix) in zip(new, found)]} if self.max_batch > 1 else {}  # one prompt at a time needs no separating
        out = self.model(input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=ends, **packing)
        cache = returned_cache(out)

        def own(t: torch.Tensor, s: int, m: int, cached: torch.Tensor | None) -> torch.Tensor:
            """One prompt's keys or values (Hkv, len, D) from the packed row, its cached prefix in front."""
            return t[0, :, s : s + m] if cached is None else torch.cat([cached, t[0, :, s : s + m]], dim=1)

        rows = [  # per prompt, per layer: its (keys, values)
            [
                (own(layer.keys, s, m, prefix[i][0] if prefix else None), own(layer.values, s, m, prefix[i][1] if prefix else None))
                for i, layer in enumerate(cache.layers)
            ]
            for (_, prefix), s, m in zip(found, starts, new)
        ]
        if self.prefixes:
            for prompt, layers in zip(prompts, rows):
                self.prefixes.add(prompt, layers)
        width = max(len(p) for p in prompts)
        for i, layer in enumerate(cache.layers):
            layer.keys = torch.stack([_left_pad(r[i][0], width, 1) for r in rows])
            layer.values = torch.stack([_left_pad(r[i][1], width, 1) for r in rows])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        return out, cache, mask

    def _step(self) -> None:
        jobs = self.running
        tokens = torch.tensor([[j.next_token] for j in jobs], device=self.device)
        positions = torch.tensor([[j.position] for j in jobs], device=self.device)
        mask = torch.cat([self.mask, self.mask.new_ones(len(jobs), 1)], dim=-1)
        out = self.model(input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=True, **{self.keyword: self.cache})
        self.cache, self.mask = returned_cache(out), mask
        keep = []
        for job in jobs:
            job.position += 1
        for k, (job, done) in enumerate(zip(jobs, self._sample_all(jobs, out.logits[:, -1]))):
            if done:
                self._finish(job, self._completion(job))
            elif not job.cancelled:
                keep.append(k)
            else:
                self._finish(job, None)
        self._keep(keep)

    def _drop_cancelled(self) -> None:
        keep = [k for k, job in enumerate(self.running) if not job.cancelled]
        for job in self.running:
            if job.cancelled:
                self._finish(job, None)
        self._keep(keep)

    def _keep(self, keep: list[int]) -> None:
        """Only rows `keep` stay in the batch; the cache's leading columns that no row uses any more are cut."""
        if len(keep) == len(self.running):
            return
        self.running = [self.running[k] for k in keep]
        if not keep:
            self.cache, self.mask = None, None
            return
        index = torch.tensor(keep, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        used = self.mask.any(0).nonzero()
        first = int(used[0]) if len(used) else 0
        if first > 0:
            self.mask = self.mask[:, first:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]

    def _completion(self, job: Job) -> Completion:
        r = job.row
        return Completion(r.text, r.tokens, r.finish, len(job.prompt_ids), r.sampled, r.stop_token)


def _left_pad(t: torch.Tensor, to: int, dim: int) -> torch.Tensor:
    """`t` with zeros in front along `dim`, `to` long (the padding a mask hides)."""
    missing = to - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _join(cache_a, mask_a, cache_b, mask_b):
    """One cache of the rows of both: each layer's keys and values (B, H, T, D) padded on the left to the longer
    length (the padding is masked out) and stacked along the batch."""
    length = max(mask_a.shape[1], mask_b.shape[1])
    for a, b in zip(cache_a.layers, cache_b.layers):
        a.keys = torch.cat([_left_pad(a.keys, length, -2), _left_pad(b.keys, length, -2)], dim=0)
        a.values = torch.cat([_left_pad(a.values, length, -2), _left_pad(b.values, length, -2)], dim=0)
    return cache_a, torch.cat([_left_pad(mask_a, length, 1), _left_pad(mask_b, length, 1)], dim=0)


def batch_invariant_attention(model) -> None:
    """Row-wise attention and linear layers in row chunks that round alike (serve/invariant.py): a row's numbers
    do not depend on its neighbours, the padding or whether it is alone."""
    from tunesmith.serve.invariant import make_batch_invariant

    make_batch_invariant(model)


def batchable(model) -> bool:
    """The cache can be joined row-wise: every layer a plain DynamicLayer (keys/values grown by concatenation).
    Sliding-window, quantised or recurrent caches are served one request at a time instead."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    try:
        probe = DynamicCache(config=model.config)
    except Exception:
        return False
    return all(type(layer) is DynamicLayer for layer in getattr(probe, "layers", [None]))
