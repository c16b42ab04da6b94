"""SFT's loss, one token at a time: what each position predicts, whether it counts, and the mean.

Training scores position t by how well the tokens before it predict token t:
-log p(token_t | tokens_<t), a cross-entropy against the one right token. Only positions whose label
is not -100 count (by default the assistant's reply and its end-of-turn token), and the loss is their
mean. `explain_loss` computes that by hand from the full softmax and, beside it, training's own
`causal_lm_loss` on the same labels, so the two can be seen to agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tunesmith.data.tokenize import IGNORE
from tunesmith.train.loss import causal_lm_loss


@dataclass
class TokenLoss:
    position: int  # 1-based
    token: str
    trained: bool  # its label is the token (not -100): it is in the loss
    probability: float | None  # p(token | the tokens before it); None for the first token (nothing predicts it)

    @property
    def nll(self) -> float | None:
        """-log p in nats: this position's share of the loss when it is trained."""
        return None if self.probability is None else -math.log(max(self.probability, 1e-45))


@dataclass
class LossExplanation:
    tokens: list[TokenLoss]
    loss: float  # mean -log p over the trained positions, computed here from the softmax
    training_loss: float  # training's own loss function on the same input and labels

    @property
    def trained(self) -> list[TokenLoss]:
        return [t for t in self.tokens if t.trained and t.probability is not None]

    @property
    def perplexity(self) -> float:
        return math.exp(min(self.loss, 50))

    def to_dict(self) -> dict:
        return {
            "loss": self.loss,
            "training_loss": self.training_loss,
            "perplexity": self.perplexity,
            "trained_tokens": len(self.trained),
            "masked_tokens": len(self.tokens) - len(self.trained),
            "tokens": [{"position": t.position, "token": t.token, "trained": t.trained, "probability": t.probability, "nll": t.nll} for t in self.tokens],
        }


@torch.no_grad()
def explain_loss(model, tokenizer, input_ids: list[int], labels: list[int]) -> LossExplanation:
    """Per-token probabilities of one tokenized example (as `data.tokenize_example` makes it) and its loss."""
    model.eval()
    device = next(model.parameters()).device
    ids = torch.tensor([input_ids], device=device)
    logits = model(input_ids=ids, use_cache=False).logits[0].float()  # (T, vocab): position t predicts token t+1
    logp = logits[:-1].log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]  # (T-1,): log p(token_t | tokens_<t)
    rows = []
    for t, (token_id, label) in enumerate(zip(input_ids, labels)):
        rows.append(TokenLoss(t + 1, tokenizer.decode([token_id]), label != IGNORE, math.exp(float(logp[t - 1])) if t else None))
    scored = torch.tensor([label != IGNORE for label in labels[1:]], device=device)
    loss = float(-logp[scored].mean()) if scored.any() else float("nan")
    own, _ = causal_lm_loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([labels], device=device)})
    return LossExplanation(rows, loss, float(own))
