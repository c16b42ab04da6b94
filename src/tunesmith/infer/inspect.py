"""Walk generation step by step, explaining each next-token distribution (for `inspect logits`).

Each step's token is drawn from `Explanation.distribution` with `sampling.sample` and a generator
seeded like `complete`'s, so a walk picks the tokens `complete(..., chat=chat, seed=seed)` picks.
`explain_logits` runs the same table on logits typed by hand (no model: a textbook example).
"""

from __future__ import annotations

import torch

from tunesmith.errors import TunesmithError
from tunesmith.infer.generate import cache_keyword, encode_prompt, returned_cache, stop_token_ids
from tunesmith.infer.sampling import Explanation, SamplingParams, entropy_bits, explain, sample


@torch.no_grad()
def walk(model, tokenizer, prompt: str, params: SamplingParams, *, steps: int = 1, rows: int = 15, chat: bool = False, seed: int = 0) -> list[dict]:
    """Per step: the explained distribution (its `rows` most likely tokens) and the token drawn from it.

    Stops early at an end-of-turn/eos token. Probabilities are plain floats; entropies in bits."""
    device = next(model.parameters()).device
    ids = torch.tensor([encode_prompt(tokenizer, prompt, chat)], device=device)  # (1, T)
    if ids.shape[1] == 0:
        raise TunesmithError("the prompt is empty", hint="give at least one character of text to continue")
    eos = set(stop_token_ids(model, tokenizer))
    generator = torch.Generator(device=device).manual_seed(seed)
    out = model(input_ids=ids, use_cache=True)
    walked = []
    for step in range(1, steps + 1):
        e = explain(out.logits[0, -1], params, ids[0] if params.repetition_penalty != 1.0 else None, rows=rows)
        chosen = int(sample(e.distribution[None], generator)[0])
        tail = ("…" if ids.shape[1] > 8 else "") + tokenizer.decode(ids[0, -8:])  # the last 8 tokens of the context
        walked.append(_describe(e, step, tail, chosen, lambda t: tokenizer.decode([t])))
        if chosen in eos:
            break
        ids = torch.cat([ids, ids.new_tensor([[chosen]])], dim=-1)
        if step < steps:
            out = model(input_ids=ids[:, -1:], use_cache=True, **{cache_keyword(model): returned_cache(out)})
    return walked


@torch.no_grad()
def explain_logits(logits: list[float], params: SamplingParams, tokens: list[str] | None = None, *, rows: int = 15, seed: int = 0) -> dict:
    """One step of the walk's table for logits given by hand, e.g. [4.2, -2.0, 1.5, -3.5] for Paris, London, Rome, Berlin.

    The same `explain` generation uses; tokens name the logits in order (default token0, token1, ...);
    the chosen token is drawn like `walk` draws it (seeded). There is no context, so no repetition penalty."""
    names = tokens if tokens is not None else [f"token{i}" for i in range(len(logits))]
    if not logits:
        raise TunesmithError("no logits given", hint="give at least one number, e.g. --logits 4.2,-2.0,1.5,-3.5")
    if len(names) != len(logits):
        raise TunesmithError(f"{len(names)} token names for {len(logits)} logits", hint="give one name per logit, in the same order")
    if params.repetition_penalty != 1.0:
        raise TunesmithError("the repetition penalty needs previous tokens, and logits given by hand have none", hint="leave --repetition-penalty at 1")
    e = explain(torch.tensor(logits, dtype=torch.float32), params, rows=rows)
    chosen = int(sample(e.distribution[None], torch.Generator().manual_seed(seed))[0])
    return _describe(e, 1, None, chosen, lambda t: names[t])


def _describe(e: Explanation, step: int, context_tail: str | None, chosen: int, decode) -> dict:
    """One step as plain values (the `inspect logits --json` shape); decode(token_id) -> the token's text."""
    return {
        "step": step,
        "context_tail": context_tail,  # None: logits given by hand
        "tokens": [
            {
                "rank": i + 1,
                "token_id": t,
                "token": decode(t),
                "logit": e.logits[i],
                "p_softmax": e.p_softmax[i],
                "p_temperature": e.p_temperature[i],
                "cumulative": e.cumulative[i],
                "top_k": e.kept_top_k[i],
                "top_p": e.kept_top_p[i],
                "min_p": e.kept_min_p[i],
                "p_final": e.p_final[i],
            }
            for i, t in enumerate(e.token_ids)
        ],
        "kept": e.kept_counts,
        "vocab_size": e.vocab_size,
        "entropy_bits_softmax": entropy_bits(e.entropy_softmax),
        "entropy_bits_final": entropy_bits(e.entropy_final),
        "chosen_id": chosen,
        "chosen": decode(chosen),
        "chosen_p": float(e.distribution[chosen]),
    }
