"""How a model ranks the answers of preference pairs: log-probabilities (policies) and scores (reward models).

Sequences are built exactly as TRL's trainers build them: the chat template over prompt + answer,
the answer being what follows the templated prompt (with its generation prompt). A response's
log-probability is the sum over its tokens, the quantity DPO's implicit reward is made of:

    reward(x, y) = beta * (log pi(y|x) - log pi_ref(y|x))
"""

from __future__ import annotations

from dataclasses import dataclass


def encode(tokenizer, prompt, response) -> tuple[list[int], int]:
    """(ids of prompt + response, index where the response starts), as TRL's DPO/KTO/ORPO tokenise a row: the
    response starts where the templated prompt (with its generation prompt) and prompt + response diverge."""
    from trl.data_utils import common_prefix_length

    from tunesmith.data.preference import template_ids

    if isinstance(prompt, list):
        prompt_ids = template_ids(tokenizer, prompt, generation_prompt=True)
        full = template_ids(tokenizer, prompt + (response if isinstance(response, list) else [{"role": "assistant", "content": response}]))
    else:
        prompt_ids = template_ids(tokenizer, prompt)
        full = template_ids(tokenizer, prompt + response)
    return full, common_prefix_length(prompt_ids, full)


def _padded_batches(model, tokenizer, rows: list[list[int]], batch_size: int):
    """Right-padded (chunk indices, input_ids, attention_mask) batches on the model's device, in eval mode, no grad."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(rows), batch_size):
                chunk = range(i, min(i + batch_size, len(rows)))
                width = max(len(rows[j]) for j in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for k, j in enumerate(chunk):
                    ids[k, : len(rows[j])] = torch.tensor(rows[j])
                    mask[k, : len(rows[j])] = 1
                yield chunk, ids.to(device), mask.to(device)
    finally:
        model.train(was_training)


def response_logprobs(model, tokenizer, prompts: list, responses: list, batch_size: int = 8) -> list[float]:
    """Sum of log p(token) over each response's tokens, given its prompt (no gradient; fp32 softmax). A plain LM
    head scores the response positions only, a chunk at a time (train/loss.py): a batch's full logits are
    [8, length, vocab] (~240 MB in fp32 for 150 tokens of SmolLM2), the largest thing a DPO run on a CPU held
    before and after training."""
    from tunesmith.train.loss import last_hidden_states, plain_lm_head, token_log_probs

    encoded = [encode(tokenizer, p, r) for p, r in zip(prompts, responses)]
    rows = [ids for ids, _ in encoded]
    out: list[float] = []
    head = plain_lm_head(model)  # else (soft-capped, biased) the model's own logits
    for chunk, ids, mask in _padded_batches(model, tokenizer, rows, batch_size):
        if head is not None:
            hidden = last_hidden_states(model, ids, attention_mask=mask)
        else:
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        for k, j in enumerate(chunk):
            row, start = encoded[j]
            start = max(start, 1)
            span, targets = slice(start - 1, len(row) - 1), ids[k, start : len(row)]
            if head is not None:
                out.append(token_log_probs(hidden[k, span], head.weight, targets).log_probs.sum().item())
            else:
                out.append(logits[k, span].float().log_softmax(-1).gather(-1, targets[:, None]).sum().item())
    return out


def reward_scores(model, tokenizer, prompts: list, responses: list, batch_size: int = 8) -> list[float]:
    """The reward model's score for each (prompt, response), tokenised as TRL's RewardTrainer does. The score is
    read at the last non-pad token, so the model is told the tokenizer's pad id."""
    model.config.pad_token_id = tokenizer.pad_token_id
    rows = [encode(tokenizer, p, r)[0] for p, r in zip(prompts, responses)]
    out: list[float] = []
    for _, ids, mask in _padded_batches(model, tokenizer, rows, batch_size):
        out += model(input_ids=ids, attention_mask=mask).logits[:, 0].float().tolist()
    return out


def pairwise_accuracy(chosen: list[float], rejected: list[float]) -> float:
    """Share of pairs where the chosen answer scores strictly higher (ties count as wrong)."""
    if not chosen:
        return float("nan")
    return sum(c > r for c, r in zip(chosen, rejected)) / len(chosen)


@dataclass
class Pairs:
    """Preference pairs to measure on: prompt, chosen and rejected answers (messages or strings)."""

    prompts: list
    chosen: list
    rejected: list

    def __len__(self) -> int:
        return len(self.prompts)

    @classmethod
    def from_examples(cls, examples: list[dict]) -> Pairs:
        """From preference rows, or from unpaired rows by matching a desirable and an undesirable answer per prompt."""
        if examples and "chosen" in examples[0]:
            return cls([e["prompt"] for e in examples], [e["chosen"] for e in examples], [e["rejected"] for e in examples])
        good: dict[str, dict] = {}
        bad: dict[str, dict] = {}
        for e in examples:
            key = repr(e["prompt"])
            (good if e["label"] else bad).setdefault(key, e)
        keys = [k for k in good if k in bad]
        return cls([good[k]["prompt"] for k in keys], [good[k]["completion"] for k in keys], [bad[k]["completion"] for k in keys])


def text_of(value) -> str:
    """The text of a prompt or answer: the last message's content for conversations."""
    if isinstance(value, list):
        return value[-1]["content"] if value else ""
    return value
