"""Preference measurements score the response positions through the chunked head, never a batch's full logits."""

from __future__ import annotations

import pytest
import torch

from tunesmith.evaluate.preference import encode, response_logprobs

PROMPTS = ["What is the capital of France?", "Tell me a joke about ships", "Hi"]
RESPONSES = ["Arr, Paris it be!", "Why did the ship blush? It saw the sea's bottom.", "Ahoy"]


def _full_logits(model, tokenizer):
    """The textbook way: every position's logits, fp32 log-softmax, the response tokens gathered."""
    out = []
    with torch.no_grad():
        for p, r in zip(PROMPTS, RESPONSES):
            row, start = encode(tokenizer, p, r)
            ids = torch.tensor([row])
            scores = model(input_ids=ids).logits[0, start - 1 : len(row) - 1].float().log_softmax(-1)
            out.append(scores.gather(-1, ids[0, start:, None]).sum().item())
    return out


@pytest.mark.parametrize("family", ["llama", "gemma2"])  # gemma2 soft-caps its logits: the full-logits path stays
def test_the_same_log_probabilities_without_full_logits(family, family_model, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = family_model(family)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    tokenizer = AutoTokenizer.from_pretrained(path)
    expected = _full_logits(model, tokenizer)
    projected: list[int] = []
    head = model.get_output_embeddings()
    monkeypatch.setattr(head, "forward", lambda x, _f=head.forward: projected.append(x.shape[-2]) or _f(x))
    got = response_logprobs(model, tokenizer, PROMPTS, RESPONSES, batch_size=2)
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-4)
    if family == "llama":
        assert projected == [0, 0]  # the model's own head projects no position; the chunked head scores the answers
    else:
        assert projected and all(n > 0 for n in projected)
