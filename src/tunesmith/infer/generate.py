"""Batched generation: our own decode loop, so every token is drawn from `sampling.next_token_distribution`.

Prompts are left-padded into one batch; position ids count only real tokens (as transformers
does), the KV cache carries the prefix. A row stops at an end-of-turn/eos token, at a stop
string (text cut before it), at max_new_tokens or at the model's context length.
`on_token(index, delta)` streams text as it becomes stable: no half multi-byte character, no
prefix of a stop string, and the deltas of a row add up to its `Completion.text` exactly.

Re-entrant: no state outside the call except the torch generator (a server may call `complete`
from a worker thread while the model sits in eval mode).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from tunesmith.errors import TunesmithError
from tunesmith.infer.packed import packed_linears
from tunesmith.infer.sampling import SamplingParams, next_tokens

Prompt = str | list[dict]  # raw text, or chat messages [{"role", "content"}, ...]


@dataclass
class Completion:
    text: str  # the reply: no special/template tokens, cut before a stop string
    token_ids: list[int] = field(default_factory=list)  # generated tokens, without the closing eos
    finish_reason: str = "length"  # "stop" (eos/end-of-turn or stop string) | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0  # tokens sampled, the closing eos included (what usage bills)
    stop_token: int | None = None  # the eos / end-of-turn token that closed the reply, if one did (RL trains on it)


def stop_token_ids(model, tokenizer) -> list[int]:
    """Token ids that end a reply: the tokenizer's eos, the model's generation_config eos ids, and the
    special token the chat template closes an assistant turn with (when eos is something else)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured if isinstance(configured, list) else [configured])
    if getattr(tokenizer, "chat_template", None):
        try:
            turn = tokenizer.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": "MARK"}], tokenize=False)
            after = tokenizer(turn[turn.rindex("MARK") + 4 :], add_special_tokens=False)["input_ids"]
            if after and after[0] in tokenizer.all_special_ids:
                ids.add(after[0])
        except Exception:  # a template that cannot render this tiny chat has no end-of-turn to learn from
            pass
    return sorted(i for i in ids if i is not None)


def stop_token_ids_of(model_dir, tokenizer) -> list[int]:
    """`stop_token_ids` of a model directory without loading its weights (its generation config's eos ids, if it has one)."""
    from types import SimpleNamespace

    from transformers import GenerationConfig

    try:
        generation = GenerationConfig.from_pretrained(model_dir)
    except OSError:  # no generation_config.json
        generation = None
    return stop_token_ids(SimpleNamespace(generation_config=generation), tokenizer)


def render_prompt(tokenizer, prompt: Prompt, chat: bool = True, system: str | None = None) -> str:
    """A string prompt (templated as one user turn when chat) or a list of messages (always templated)."""
    if isinstance(prompt, list):
        messages = prompt
    elif chat and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}]
    else:
        return prompt
    if system and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": system}, *messages]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def is_templated(tokenizer, prompt: Prompt, chat: bool) -> bool:
    return isinstance(prompt, list) or (chat and bool(getattr(tokenizer, "chat_template", None)))


def encode_prompt(tokenizer, prompt: Prompt, chat: bool = True, system: str | None = None) -> list[int]:
    """Token ids of one prompt; a templated prompt brings its own bos, raw text gets the tokenizer's."""
    templated = is_templated(tokenizer, prompt, chat)
    return tokenizer(render_prompt(tokenizer, prompt, chat, system), add_special_tokens=not templated)["input_ids"]


def _held_back(text: str, stops: list[str], strip: bool) -> int:
    """Characters at the end of `text` that are not stable yet: an unfinished character (U+FFFD),
    the start of a stop string, or (when replies are stripped) whitespace that may turn out to be the end."""
    unfinished = len(text) - len(text.rstrip("\ufffd"))
    partial_stop = max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
    trailing_space = len(text) - len(text.rstrip()) if strip else 0
    return max(unfinished, partial_stop, trailing_space)


class Row:
    """One sequence: its tokens, its decoded text and how much of that has been streamed."""

    def __init__(self, stops: list[str], strip: bool, budget: int):
        self.stops, self.strip, self.budget = stops, strip, budget
        self.tokens: list[int] = []
        self.sampled = 0
        self.text = ""
        self.sent = 0
        self.finish: str | None = None
        self.stop_token: int | None = None

    def add(self, tokenizer, token: int, eos: set[int]) -> str:
        """Take one sampled token; return the text that became stable."""
        self.sampled += 1
        if token in eos:
            self.stop_token = token
            return self.close("stop")
        self.tokens.append(token)
        text = tokenizer.decode(self.tokens, skip_special_tokens=True)
        self.text = text.lstrip() if self.strip else text
        cut = min((i for i in (self.text.find(s) for s in self.stops if s) if i >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
            return self.close("stop")
        if self.sampled >= self.budget:
            return self.close("length")
        stable = len(self.text) - _held_back(self.text, self.stops, self.strip)
        delta = self.text[self.sent : stable]
        self.sent = max(self.sent, stable)
        return delta

    def close(self, reason: str) -> str:
        """Finish the row; return what was held back and is now final."""
        self.finish = reason
        if self.strip:
            self.text = self.text.rstrip()
        delta = self.text[self.sent :]
        self.sent = len(self.text)
        return delta


def cache_keyword(model) -> str:
    """The name a model's forward takes the KV cache under: `cache` in recent transformers 5.x (which warns that
    `past_key_values` goes away in 5.40), `past_key_values` before."""
    forward = getattr(model, "get_base_model", lambda: model)().forward
    try:
        return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"
    except (TypeError, ValueError):
        return "past_key_values"


def last_logits_only(model) -> dict:
    """`logits_to_keep=1` where the model's forward takes it: the prompt pass projects only the last position onto
    the vocabulary (8 prompts of ~40 tokens: ~22 GFLOP of LM head saved, for logits nobody reads)."""
    forward = getattr(model, "get_base_model", lambda: model)().forward
    try:
        return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(forward).parameters else {}
    except (TypeError, ValueError):
        return {}


def returned_cache(out):
    """The KV cache a forward returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _prefill(model, prompt_ids, ids, mask, positions):
    """The prompt pass, each distinct prompt once: an RL group samples several completions of one prompt (GRPO's
    8 rows of 2 prompts), so its rows share the prompt's KV cache, copied row by row afterwards, instead of running
    the same prompt 8 times. The logits and the cache are those of a pass over every row."""
    owner: dict[tuple[int, ...], int] = {}
    rows = [owner.setdefault(tuple(p), len(owner)) for p in prompt_ids]
    if len(owner) == len(prompt_ids):
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **last_logits_only(model))
    first = torch.tensor([rows.index(u) for u in range(len(owner))], device=ids.device)
    out = model(input_ids=ids[first], attention_mask=mask[first], position_ids=positions[first], use_cache=True, **last_logits_only(model))
    cache = returned_cache(out)
    if not hasattr(cache, "batch_select_indices"):  # a cache that cannot be copied row by row: every row's own pass
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **last_logits_only(model))
    spread = torch.tensor(rows, device=ids.device)
    cache.batch_select_indices(spread)
    out.logits = out.logits[spread]
    return out


@torch.no_grad()
def _complete_batch(model, tokenizer, prompt_ids, strips, params, max_new_tokens, eos, stops, generator, on_token, offset) -> list[Completion]:
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos)
    context = getattr(model.config, "max_position_embeddings", None) or 10**9
    keyword = cache_keyword(model)
    width = max(len(p) for p in prompt_ids)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids], device=device)  # (B, T), left-padded
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt_ids], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # real tokens count 0, 1, 2...; padding is masked anyway
    rows = [Row(stops, strip, min(max_new_tokens, context - len(p))) for p, strip in zip(prompt_ids, strips)]
    # the repetition penalty looks at prompt and reply; padding reads as the (real) last prompt token instead
    seen = torch.where(mask.bool(), ids, ids[:, -1:])
    out = _prefill(model, prompt_ids, ids, mask, positions)
    active = list(range(len(rows)))  # rows still generating, in the order of the batch tensors
    while True:
        tokens = next_tokens(out.logits[:, -1, :], params, seen if params.repetition_penalty != 1.0 else None, generator)  # (len(active),)
        for k, i in enumerate(active):
            if rows[i].finish is not None:  # only where the cache cannot drop finished rows
                tokens[k] = pad
                continue
            delta = rows[i].add(tokenizer, int(tokens[k]), eos)
            if delta and on_token:
                on_token(offset + i, delta)
        still = [k for k, i in enumerate(active) if rows[i].finish is None]
        if not still:
            break
        past = returned_cache(out)
        if len(still) < len(active) and hasattr(past, "batch_select_indices"):
            # finished rows leave the batch: later steps compute only the rows still generating
            keep = torch.tensor(still, device=device)
            past.batch_select_indices(keep)
            tokens, seen, mask, positions = tokens[keep], seen[keep], mask[keep], positions[keep]
            active = [active[k] for k in still]
        seen = torch.cat([seen, tokens[:, None]], dim=-1)
        mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=-1)
        positions = positions[:, -1:] + 1
        out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions, use_cache=True, **{keyword: past})
    return [Completion(r.text, r.tokens, r.finish, len(p), r.sampled, r.stop_token) for r, p in zip(rows, prompt_ids)]


def complete(
    model,
    tokenizer,
    prompts: list[Prompt],
    params: SamplingParams | None = None,
    *,
    chat: bool = True,
    max_new_tokens: int = 64,
    stop: list[str] | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 8,
    system: str | None = None,
    on_token: Callable[[int, str], None] | None = None,
) -> list[Completion]:
    """Generate for each prompt: a string (one user turn when `chat`, raw text otherwise) or a message list.

    params: default greedy. seed (or a generator of your own) makes sampling reproducible for the same
    prompts and batch_size. Chat replies are stripped of surrounding whitespace; raw completions are not.
    on_token(prompt_index, text_delta) streams each reply as it is decoded."""
    params = params or SamplingParams(temperature=0.0)
    if max_new_tokens < 1 or batch_size < 1:
        raise TunesmithError(f"max_new_tokens ({max_new_tokens}) and batch_size ({batch_size}) must be at least 1")
    device = next(model.parameters()).device
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    elif generator is None:
        generator = torch.Generator(device=device)
        generator.seed()  # fresh entropy, without touching torch's global generator
    prompt_ids = [encode_prompt(tokenizer, p, chat, system) for p in prompts]
    strips = [is_templated(tokenizer, p, chat) for p in prompts]  # chat replies are stripped, raw continuations kept as is
    eos = set(stop_token_ids(model, tokenizer))
    context = getattr(model.config, "max_position_embeddings", None)
    for number, ids in enumerate(prompt_ids, 1):
        if not ids:
            raise TunesmithError(f"prompt {number} is empty", hint="give at least one character of text to continue")
        if context and len(ids) >= context:
            raise TunesmithError(f"prompt {number} has {len(ids)} tokens; the model's context is {context}", hint="shorten the prompt (or the chat history)")
    return _complete_all(model, tokenizer, prompt_ids, strips, params, max_new_tokens, eos, list(stop or []), generator, on_token, batch_size)


@contextmanager
def contiguous_head(model):
    """Within the block, the LM head gets its input contiguous. `logits_to_keep=1` hands it a strided view of the last
    position (hidden[:, -1:, :] of the whole prompt); torch's matmul cannot fold a strided 3-D input into one product,
    so on a CPU it broadcasts the weight over the batch and copies it: a rollout batch of 16 on SmolLM2 copied a
    16 x 576 x 49152 bf16 tensor (864 MB, 0.8 s) at every prompt pass (found by `tunesmith bench memory`)."""
    from tunesmith.train.loss import output_embeddings

    head = output_embeddings(model)
    if head is None or "forward" in head.__dict__:
        yield
        return
    plain = head.forward
    head.forward = lambda x, *args, **kwargs: plain(x.contiguous(), *args, **kwargs)
    try:
        yield
    finally:
        del head.forward


def _complete_all(
    model, tokenizer, prompt_ids, strips, params, max_new_tokens, eos, stops, generator, on_token, batch_size, pack_weights: bool = True
) -> list[Completion]:
    was_training = model.training
    if was_training:  # only touch the mode when we must: a served model stays in eval and is never flipped
        model.eval()
    try:
        results = []
        with (
            contiguous_head(model),
            packed_linears(model) if pack_weights else nullcontext(),
        ):  # bf16 on a CPU: weights reordered once, not in every call (same results)
            for start in range(0, len(prompt_ids), batch_size):
                chunk = slice(start, start + batch_size)
                results += _complete_batch(model, tokenizer, prompt_ids[chunk], strips[chunk], params, max_new_tokens, eos, stops, generator, on_token, start)
        return results
    finally:
        if was_training:
            model.train()


def complete_tokens(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    params: SamplingParams,
    *,
    max_new_tokens: int,
    generator: torch.Generator,
    batch_size: int | None = None,
    pack_weights: bool = True,
) -> list[Completion]:
    """Sample a reply to each already-tokenised prompt (RL rollouts: the trainer tokenised them): the same decode
    loop and sampling as `complete`, no stop strings, text not stripped. A reply's `token_ids` plus its
    `stop_token` are the tokens the policy produced."""
    eos = set(stop_token_ids(model, tokenizer))
    return _complete_all(
        model, tokenizer, prompt_ids, [False] * len(prompt_ids), params, max_new_tokens, eos, [], generator, None, batch_size or len(prompt_ids), pack_weights
    )


def generate(
    model,
    tokenizer,
    prompts: list[str],
    *,
    chat: bool = True,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    stop: list[str] | None = None,
    seed: int | None = None,
    batch_size: int = 8,
    system: str | None = None,
) -> list[str]:
    """Answer each prompt; greedy when temperature == 0. Returns the reply texts (no special tokens)."""
    params = SamplingParams(temperature=temperature, top_k=top_k or 0, top_p=top_p or 1.0, min_p=min_p or 0.0, repetition_penalty=repetition_penalty or 1.0)
    results = complete(model, tokenizer, prompts, params, chat=chat, max_new_tokens=max_new_tokens, stop=stop, seed=seed, batch_size=batch_size, system=system)
    return [r.text for r in results]
