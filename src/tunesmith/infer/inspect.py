"""Walk generation step by step, explaining each next-token distribution (for `inspect logits`)."""

from __future__ import annotations

import torch

from tunesmith.infer.generate import render_prompt
from tunesmith.infer.sampling import SamplingParams, explain, next_token_distribution, sample


@torch.no_grad()
def walk(model, tokenizer, prompt: str, params: SamplingParams, *, steps: int = 1, rows: int = 15, chat: bool = False, seed: int = 0) -> list[dict]:
    """Per step: the explained distribution (top `rows` tokens) and the token drawn from it, exactly as generate draws."""
    text = render_prompt(tokenizer, prompt, chat)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=not chat)["input_ids"]
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    out = []
    for step in range(1, steps + 1):
        logits = model(input_ids=ids).logits[0, -1]
        previous = ids[0] if params.repetition_penalty != 1.0 else None
        e = explain(logits, params, previous, rows=rows)
        final = next_token_distribution(logits.unsqueeze(0), params, previous.unsqueeze(0) if previous is not None else None)
        chosen = int(sample(final, generator)[0])
        final = final[0]
        out.append({
            "step": step,
            "context_tail": tokenizer.decode(ids[0, -8:]),
            "tokens": [
                {"rank": i + 1, "token_id": t, "token": tokenizer.decode([t]), "logit": e.logits[i], "p_softmax": e.p_softmax[i], "p_temperature": e.p_temperature[i],
                 "cumulative": e.cumulative[i], "top_k": e.kept_top_k[i], "top_p": e.kept_top_p[i], "min_p": e.kept_min_p[i], "p_final": e.p_final[i]}
                for i, t in enumerate(e.token_ids)
            ],
            "kept": e.kept_counts,
            "vocab_size": e.vocab_size,
            "entropy_softmax": e.entropy_softmax,
            "entropy_final": e.entropy_final,
            "chosen_id": chosen,
            "chosen": tokenizer.decode([chosen]),
            "chosen_p": float(final[chosen]),
        })
        ids = torch.cat([ids, torch.tensor([[chosen]])], dim=-1)
        if chosen == tokenizer.eos_token_id:
            break
    return out
