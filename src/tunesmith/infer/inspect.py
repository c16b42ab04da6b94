"""Walk generation step by step, explaining each next-token distribution (for `inspect logits`).

Each step's token is drawn from `Explanation.distribution` with `sampling.sample` and a generator
seeded like `complete`'s, so a walk picks the tokens `complete(..., chat=chat, seed=seed)` picks.
"""

from __future__ import annotations

import torch

from tunesmith.errors import TunesmithError
from tunesmith.infer.generate import encode_prompt, stop_token_ids
from tunesmith.infer.sampling import SamplingParams, entropy_bits, explain, sample


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
        walked.append({
            "step": step,
            "context_tail": tokenizer.decode(ids[0, -8:]),
            "tokens": [
                {"rank": i + 1, "token_id": t, "token": tokenizer.decode([t]), "logit": e.logits[i], "p_softmax": e.p_softmax[i],
                 "p_temperature": e.p_temperature[i], "cumulative": e.cumulative[i], "top_k": e.kept_top_k[i], "top_p": e.kept_top_p[i],
                 "min_p": e.kept_min_p[i], "p_final": e.p_final[i]}
                for i, t in enumerate(e.token_ids)
            ],
            "kept": e.kept_counts,
            "vocab_size": e.vocab_size,
            "entropy_bits_softmax": entropy_bits(e.entropy_softmax),
            "entropy_bits_final": entropy_bits(e.entropy_final),
            "chosen_id": chosen,
            "chosen": tokenizer.decode([chosen]),
            "chosen_p": float(e.distribution[chosen]),
        })
        if chosen in eos:
            break
        ids = torch.cat([ids, ids.new_tensor([[chosen]])], dim=-1)
        if step < steps:
            out = model(input_ids=ids[:, -1:], past_key_values=out.past_key_values, use_cache=True)
    return walked
