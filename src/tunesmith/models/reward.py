"""Reward models: a causal LM's body with a one-score head (transformers' *ForSequenceClassification, num_labels=1).

The score is read at the last non-pad token of the conversation. A new head starts random and is
trained in full (in fp32; it is tiny); the body may carry earlier stages' adapters, merged first.
"""

from __future__ import annotations

import copy

from tunesmith.errors import ModelError
from tunesmith.models.load import ModelSource, load_model, resolve_model


def with_score_head(causal_lm, dtype):
    """A one-score sequence-classification model on the body of `causal_lm` (its LM head dropped)."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(causal_lm.config)
    config.num_labels = 1
    model = AutoModelForSequenceClassification.from_config(config, dtype=dtype)
    model.base_model.load_state_dict(causal_lm.base_model.state_dict())
    return score_in_fp32(model)


def score_in_fp32(model):
    """Keep the score head in fp32 (AdamW on bf16 weights loses small updates) and feed it fp32 hidden states,
    so a bf16 body needs no autocast."""
    import torch

    model.score.to(torch.float32)
    model.score.register_forward_pre_hook(lambda module, args: (args[0].to(module.weight.dtype), *args[1:]))
    return model


def new_reward_model(source: ModelSource, dtype):
    """The starting point of reward-model training: the model (earlier adapters merged) with a new score head."""
    from transformers import AutoModelForSequenceClassification

    if source.adapter:
        return with_score_head(load_model(source, merge_adapter=True).to(dtype), dtype)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source.path, num_labels=1, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load '{source.spec}' as a reward model: {exc}".splitlines()[0]) from exc
    return score_in_fp32(model)


def load_reward_model(spec: str | ModelSource, dtype=None):
    """A trained reward model (run directory, adapter or full model) ready to score, in eval mode."""
    import torch
    from transformers import AutoModelForSequenceClassification

    source = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    if not source.is_reward_model():
        raise ModelError(
            f"'{source.spec}' is not a reward model (no one-score classification head)",
            hint="train one with `tunesmith reward`, and pass its run directory",
        )
    dtype = dtype or torch.float32
    if source.adapter:
        from peft import PeftModel

        body = load_model(ModelSource(source.spec, source.path, below=source.below), dtype=dtype)  # earlier stages merged
        model = PeftModel.from_pretrained(with_score_head(body, dtype), source.adapter)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(source.path, dtype=dtype)
    return model.eval()
