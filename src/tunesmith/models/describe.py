"""What `tunesmith models` says: the families and what each supports, or what one model is.

Everything is read from the model's files (config, tokenizer, generation config) and its
architecture built on the meta device, so describing a 70B model takes as long as a 135M one.
"""

from __future__ import annotations

from tunesmith.models.family import FAMILIES, PROJECTIONS, family_of

STAGES = ("sft", "reward", "dpo", "kto", "orpo", "cpo", "grpo", "rloo", "ppo", "merge", "generate", "chat", "serve", "eval")


def families() -> list[dict]:
    """One row per supported family."""
    from tunesmith.export.gguf import QUANT_TYPES

    return [
        {
            "family": f.name,
            "models": f.title,
            "model_types": list(f.model_types),
            "stages": list(STAGES),
            "gguf_arch": f.gguf_arch,
            "gguf_types": list(QUANT_TYPES),
            "chat": f.chat,
            "fused_projections": dict(f.fused),
        }
        for f in FAMILIES.values()
    ]


def _features(config) -> list[str]:
    """The architecture details that change training, inference or export."""
    out = []
    if getattr(config, "attention_bias", False) or config.model_type == "qwen2":
        out.append("q/k/v biases")
    if config.model_type in ("qwen3", "gemma3_text"):
        out.append("q/k RMS norms")
    for key, what in (("attn_logit_softcapping", "attention"), ("final_logit_softcapping", "final logit")):
        if getattr(config, key, None):
            out.append(f"{what} soft-capping at {getattr(config, key):g}")
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True):
        types = getattr(config, "layer_types", None) or []
        sliding = sum(t == "sliding_attention" for t in types)
        out.append(f"sliding window {window}" + (f" on {sliding} of {len(types)} layers" if types else ""))
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if kind != "default":
        out.append(f"rope scaling: {kind}")
    return out


def _template(tokenizer, model_dir) -> dict:
    from tunesmith.infer.generate import stop_token_ids_of
    from tunesmith.models.template import FOLD_MARK

    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None

    stops = stop_token_ids_of(model_dir, tokenizer)
    return {
        "chat_template": template is not None,
        "system_role": "none (no template)" if template is None else ("folded into the first user turn" if FOLD_MARK in template else "yes"),
        "generation_markers": bool(template and "{% generation %}" in template.replace("{%- generation", "{% generation")),
        "bos": tokenizer.bos_token,
        "adds_bos": bool(tokenizer.bos_token_id is not None and tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]),
        "eos": tokenizer.eos_token,
        "pad": tokenizer.pad_token,
        "pad_is_eos": tokenizer.pad_token_id == tokenizer.eos_token_id,
        "stop_tokens": tokenizer.convert_ids_to_tokens(stops),
    }


def describe(spec: str) -> dict:
    """Family, sizes, features, LoRA targets and chat-template facts of one model (a name, directory, run or .gguf)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunesmith.models.load import load_tokenizer, resolve_model
    from tunesmith.models.lora import linear_modules

    source = resolve_model(spec)
    config = AutoConfig.from_pretrained(source.path)
    family = family_of(config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    kinds = list(dict.fromkeys(t.kind for t in linear_modules(model)))
    heads = config.num_attention_heads
    return {
        "model": spec,
        "path": source.path,
        "adapter": source.adapter,
        "family": family.name,
        "architecture": (config.architectures or [type(model).__name__])[0],
        "parameters": sum(p.numel() for p in model.parameters()),
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "heads": heads,
        "kv_heads": getattr(config, "num_key_value_heads", None) or heads,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // heads,
        "vocab_size": config.vocab_size,
        "context_length": config.max_position_embeddings,
        "tied_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "features": _features(config),
        "lora_modules": kinds,
        "lora_names": {p: family.module_for(p) for p in PROJECTIONS if p not in kinds and family.module_for(p) in kinds},
        "template": _template(load_tokenizer(source), source.path),
    }
