"""A standard model directory from anything `--model` takes: the adapter merged into a full-precision base.

The merge is done in fp32 on the base's unquantised weights (a QLoRA adapter was trained against 4-bit weights, but
merging into them would round the update away), then cast to the chosen dtype and saved as safetensors with the
tokenizer, its chat template, and a generation config whose stop tokens include the end-of-turn token.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.errors import ModelError

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def stop_token_ids(tokenizer, config_eos=None) -> list[int]:
    """Every id generation must stop at: the tokenizer's eos (ChatML's <|im_end|> for SmolLM2) and the config's."""
    ids = [config_eos] if isinstance(config_eos, int) else list(config_eos or [])
    if tokenizer.eos_token_id is not None:
        ids.insert(0, tokenizer.eos_token_id)
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):  # end-of-turn tokens a chat template may use
        tid = tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        if tid is not None and token in (tokenizer.chat_template or ""):
            ids.append(tid)
    return list(dict.fromkeys(ids))


def check_unquantised(path: str) -> None:
    config = Path(path) / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("quantization_config"):
        raise ModelError(
            f"the base model '{path}' is stored quantised ({json.loads(config.read_text())['quantization_config'].get('quant_method', '?')})",
            hint="export merges into full-precision weights: point the adapter's base at the unquantised model",
        )


def save_merged(spec: str, target: Path, dtype: str = "float32") -> dict:
    """Write the full model behind `spec` to `target` (a new directory) in `dtype`; returns what was written."""
    import torch

    from tunesmith.models.load import load_model, load_tokenizer, resolve_model

    if dtype not in DTYPES:
        raise ModelError(f"--dtype is '{dtype}'", hint=f"one of: {', '.join(sorted(set(DTYPES.values())))}")
    source = resolve_model(spec)
    if source.is_reward_model():
        raise ModelError(
            f"'{spec}' is a reward model (one score per answer); export writes language models",
            hint="export the policy it was trained to judge, or load the reward model with AutoPeftModelForSequenceClassification",
        )
    check_unquantised(source.path)
    model = load_model(source, merge_adapter=True)  # fp32 base, adapters merged in fp32
    model = model.to(getattr(torch, DTYPES[dtype]))
    tokenizer = load_tokenizer(source)
    stops = stop_token_ids(tokenizer, model.generation_config.eos_token_id)
    model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.name_or_path = Path(spec).name
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return {
        "dtype": DTYPES[dtype],
        "adapters_merged": len(source.below) + bool(source.adapter),
        "stop_token_ids": stops,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
