"""Batched generation: our own decode loop, so every token is drawn from `sampling.next_token_distribution`.

Prompts are left-padded into one batch; position ids follow the attention mask (as
transformers does), the KV cache carries the prefix. A row stops at an end-of-turn/eos
token, at a stop string (cut before it) or at max_new_tokens. `on_token(row, delta)`
streams text as it becomes stable (no half multi-byte characters, no partial stop string).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from tunesmith.infer.sampling import SamplingParams, next_token_distribution, sample


@dataclass
class Completion:
    text: str
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"  # "stop" (eos or stop string) | "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0


def stop_token_ids(model, tokenizer) -> list[int]:
    """Token ids that end a reply: the tokenizer's eos plus the model's generation_config eos ids."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    return sorted(i for i in ids if i is not None)


def render_prompt(tokenizer, prompt, chat: bool = True, system: str | None = None) -> str:
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


def _held_back(text: str, stops: list[str]) -> int:
    """Characters at the end of `text` that might still become a stop string (or finish a character)."""
    if text.endswith("\ufffd"):
        return 1
    return max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)


class _Row:
    def __init__(self, stops: list[str]):
        self.tokens: list[int] = []
        self.sampled = 0  # tokens drawn, the closing eos included (what usage counts)
        self.text = ""
        self.sent = 0
        self.finish: str | None = None
        self.stops = stops

    def update(self, tokenizer, token: int, eos: set[int]) -> str:
        """Add a token; return the newly stable text."""
        self.sampled += 1
        if token in eos:
            self.finish = "stop"
            delta = self.text[self.sent :]
            self.sent = len(self.text)
            return delta
        self.tokens.append(token)
        self.text = tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut = min((i for i in (self.text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
            self.finish = "stop"
            end = len(self.text)
        else:
            end = len(self.text) - _held_back(self.text, self.stops)
        delta = self.text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return delta


@torch.no_grad()
def _complete_batch(model, tokenizer, texts, params, max_new_tokens, stops, generator, chat, on_token, offset):
    eos = set(stop_token_ids(model, tokenizer))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos))
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=not chat)
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    prompt_lengths = mask.sum(-1).tolist()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    rows = [_Row(stops) for _ in texts]
    history = ids
    for _ in range(max_new_tokens):
        probs = next_token_distribution(out.logits[:, -1, :], params, history if params.repetition_penalty != 1.0 else None)
        tokens = sample(probs, generator)
        for i, row in enumerate(rows):
            if row.finish is None:
                delta = row.update(tokenizer, int(tokens[i]), eos)
                if delta and on_token:
                    on_token(offset + i, delta)
            else:
                tokens[i] = pad
        if all(r.finish for r in rows):
            break
        history = torch.cat([history, tokens[:, None]], dim=-1)
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=-1)
        positions = positions[:, -1:] + 1
        out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions, past_key_values=out.past_key_values, use_cache=True)
    results = []
    for i, (row, n_prompt) in enumerate(zip(rows, prompt_lengths)):
        if row.finish is None and on_token and row.sent < len(row.text):  # flush what was held back
            on_token(offset + i, row.text[row.sent :])
        results.append(Completion(row.text.strip() if chat else row.text, row.tokens, row.finish or "length", int(n_prompt), row.sampled))
    return results


def complete(
    model,
    tokenizer,
    prompts: list,
    params: SamplingParams | None = None,
    *,
    chat: bool = True,
    max_new_tokens: int = 64,
    stop: list[str] | None = None,
    seed: int | None = None,
    batch_size: int = 8,
    system: str | None = None,
    on_token: Callable[[int, str], None] | None = None,
) -> list[Completion]:
    """Generate for each prompt (a string, or a list of {role, content} messages)."""
    params = params or SamplingParams(temperature=0.0)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    texts = [render_prompt(tokenizer, p, chat, system) for p in prompts]
    was_training = model.training
    model.eval()
    try:
        results = []
        for start in range(0, len(texts), batch_size):
            results += _complete_batch(model, tokenizer, texts[start : start + batch_size], params, max_new_tokens, list(stop or []), generator, chat or isinstance(prompts[start], list), on_token, start)
        return results
    finally:
        model.train(was_training)


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
    """Answer each prompt; greedy when temperature == 0. Returns replies without special tokens."""
    params = SamplingParams(temperature=temperature, top_k=top_k or 0, top_p=top_p or 1.0, min_p=min_p or 0.0, repetition_penalty=repetition_penalty or 1.0)
    results = complete(model, tokenizer, prompts, params, chat=chat, max_new_tokens=max_new_tokens, stop=stop, seed=seed, batch_size=batch_size, system=system)
    return [r.text for r in results]
