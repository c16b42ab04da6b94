"""Model families: what tunesmith knows about each architecture it supports, in one table.

The family is decided from `config.model_type`. A family row says which real modules hold the
canonical projections (Phi-3 keeps q/k/v in one fused `qkv_proj` and gate/up in `gate_up_proj`),
whether its chat template takes a system message (Gemma 2's raises), and llama.cpp's name for it.
Adding a family is one `Family(...)` line in FAMILIES, a tiny fixture in tests/families.py, and
its GGUF tensor/metadata rules in export/gguf.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunesmith.errors import ModelError

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PHI3_FUSED = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj", "gate_proj": "gate_up_proj", "up_proj": "gate_up_proj"}


@dataclass(frozen=True)
class Family:
    name: str  # what `tunesmith models` and errors call it
    title: str  # the models people know it by
    model_types: tuple[str, ...]  # config.model_type values of this family
    gguf_arch: str  # llama.cpp's architecture name (general.architecture)
    fused: dict[str, str] = field(default_factory=dict)  # canonical projection -> the fused module that holds it
    chat: str = ""  # the chat format its instruct models use (what the Ollama TEMPLATE is written as)
    system_role: bool = True  # False: the chat template refuses a system message; tunesmith folds it into the first user turn
    sdpa: bool = True  # False: torch's scaled-dot-product attention cannot do what the family needs (Gemma 2's soft-capping): eager

    def module_for(self, projection: str) -> str:
        """The real module name of a canonical projection (q_proj -> qkv_proj on Phi-3); other names pass through."""
        return self.fused.get(projection, projection)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("llama", "Llama 2/3.x, SmolLM", ("llama",), "llama", chat="Llama 3 headers / ChatML"),
        Family("mistral", "Mistral 7B, Nemo", ("mistral",), "llama", chat="[INST], system in turn 1"),  # llama.cpp: "llama"
        Family("qwen2", "Qwen2, Qwen2.5", ("qwen2",), "qwen2", chat="ChatML, default system"),
        Family("qwen3", "Qwen3 (dense)", ("qwen3",), "qwen3", chat="ChatML"),
        Family("gemma2", "Gemma 2", ("gemma2",), "gemma2", chat="Gemma turns, system folded", system_role=False, sdpa=False),
        Family("gemma3", "Gemma 3 (text)", ("gemma3_text",), "gemma3", chat="Gemma turns, system folded"),
        Family("phi3", "Phi-3/3.5, Phi-4", ("phi3",), "phi3", chat="Phi-3 <|user|> tags", fused=PHI3_FUSED),
    )
}
BY_MODEL_TYPE = {t: f for f in FAMILIES.values() for t in f.model_types}

# Architectures people bring that tunesmith does not train: what to say instead of a trainer's traceback.
OTHER = {
    "gpt2": "GPT-2",
    "bloom": "BLOOM",
    "gpt_neox": "GPT-NeoX / Pythia",
    "opt": "OPT",
    "falcon": "Falcon",
    "gemma3": "the Gemma 3 vision-language checkpoint (use a text-only Gemma 3, model_type gemma3_text, e.g. gemma-3-1b)",
    "t5": "T5 (an encoder-decoder)",
    "bert": "BERT (an encoder)",
}


def supported() -> str:
    return ", ".join(FAMILIES)


def family_of(config, where: str | None = None) -> Family:
    """The family of a transformers config (or a config.json dict); a ModelError sentence for any other architecture."""
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    family = BY_MODEL_TYPE.get(model_type)
    if family is not None:
        return family
    archs = (config.get("architectures") if isinstance(config, dict) else getattr(config, "architectures", None)) or []
    what = OTHER.get(model_type, f"model_type '{model_type}'")
    named = f"{archs[0]}, {what}" if archs and model_type in OTHER else (archs[0] if archs else what)
    raise ModelError(
        f"the model is {named}, which tunesmith does not support: it trains, merges and exports the families {supported()}",
        where=where,
        hint="pick a model of one of those families (tunesmith models lists them, with what each supports)",
    )


def family_of_spec(spec: str) -> Family | None:
    """The family of a `--model` value from its config.json alone (None where it cannot be read here, e.g. a Hub id offline)."""
    import json
    from pathlib import Path

    from tunesmith.errors import TunesmithError
    from tunesmith.models.load import resolve_model

    try:
        file = Path(resolve_model(spec).path) / "config.json"
        return family_of(json.loads(file.read_text())) if file.is_file() else None
    except (TunesmithError, OSError, ValueError):
        return None


def family_of_model(model) -> Family:
    """The family of a loaded model (a PeftModel or a reward model too)."""
    return family_of(getattr(model, "config", None) or model.base_model.config)
