"""LoRA targets: which linear modules in which decoder layers get an adapter.

Selections are rules of (module names, layer range). Presets are named rule sets
from practice; a recipe's `target_modules` + `layers` is a one-rule selection.
The same `select_targets` feeds both `inspect modules` and the trainer, so what
the inspector marks is what gets trained.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tunesmith.errors import RecipeError
from tunesmith.models.family import family_of_model

KNOWN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")

# preset -> list of (module names, layer range). Ranges split the decoder into thirds.
PRESETS: dict[str, list[tuple[tuple[str, ...], str]]] = {
    # Few examples: adapt late layers (task-specific features) and the MLP up-projection there.
    "limited-data": [(("q_proj", "v_proj", "up_proj"), "high")],
    # Little memory: fewest adapters, attention q/v in the middle layers only.
    "limited-hardware": [(("q_proj", "v_proj"), "mid")],
    # Tone/style: early attention patterns (q,k), mid-layer values, and the MLP output projection everywhere.
    "precise-tone": [(("q_proj", "k_proj"), "low"), (("v_proj",), "mid"), (("down_proj",), "all")],
}


@dataclass(frozen=True)
class Target:
    name: str  # full module name, e.g. model.layers.3.self_attn.q_proj
    layer: int | None
    kind: str  # leaf name, e.g. q_proj
    in_features: int
    out_features: int


def layer_range(which, num_layers: int) -> set[int]:
    """`all|low|mid|high` (thirds of the stack) or explicit indices -> set of layer indices."""
    if isinstance(which, list):
        bad = [i for i in which if not 0 <= i < num_layers]
        if bad:
            raise RecipeError(f"lora.layers has {bad}, but the model has layers 0..{num_layers - 1}")
        return set(which)
    third = num_layers / 3
    bounds = {"all": (0, num_layers), "low": (0, round(third)), "mid": (round(third), round(2 * third)), "high": (round(2 * third), num_layers)}
    lo, hi = bounds[which]
    return set(range(lo, hi))


def linear_modules(model) -> list[Target]:
    """Every nn.Linear inside a decoder layer (lm_head and embeddings excluded)."""
    import torch.nn as nn

    found = []
    for name, module in model.named_modules():
        match = LAYER_INDEX.search(f".{name}.")
        if isinstance(module, nn.Linear) and match:
            found.append(Target(name, int(match.group(1)), name.rsplit(".", 1)[-1], module.in_features, module.out_features))
    return found


def num_layers(model) -> int:
    return model.config.num_hidden_layers


def selection_rules(lora) -> list[tuple[tuple[str, ...] | str, object]]:
    if lora.preset:
        return PRESETS[lora.preset]
    modules = lora.target_modules if lora.target_modules == "all-linear" else tuple(lora.target_modules)
    return [(modules, lora.layers)]


def fused_names(family, kinds: set[str], modules) -> dict[str, str]:
    """Canonical projections in `modules` that a model of `family` with linear modules `kinds` holds inside a fused
    module: {"q_proj": "qkv_proj", ...} (Phi-3). A name the model really has is never translated."""
    return {m: family.module_for(m) for m in modules if m not in kinds and family.module_for(m) != m}


def fused_note(model, lora) -> str | None:
    """One sentence for `inspect modules` and the trainer's log when the selection names projections this model fuses."""
    family, kinds = family_of_model(model), {t.kind for t in linear_modules(model)}
    mapped: dict[str, list[str]] = {}
    for modules, _ in selection_rules(lora):
        if modules != "all-linear":
            for name, fused in fused_names(family, kinds, modules).items():
                names = mapped.setdefault(fused, [])
                if name not in names:
                    names.append(name)
    if not mapped:
        return None
    said = lambda names: names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"  # noqa: E731
    parts = [f"{said(names)} here mean{'s' if len(names) == 1 else ''} the fused {fused}" for fused, names in mapped.items()]
    return f"{family.name} fuses its projections: {'; '.join(parts)}, so LoRA adapts the whole fused matrix (every projection in it)"


def select_targets(model, lora) -> list[Target]:
    """The modules the LoRA section (or its preset) selects, in model order. Canonical names (q_proj, up_proj, ...)
    that the model keeps in a fused module (Phi-3's qkv_proj, gate_up_proj) select that module."""
    candidates = linear_modules(model)
    kinds, family = {t.kind for t in candidates}, family_of_model(model)
    chosen: set[str] = set()
    for modules, layers in selection_rules(lora):
        if modules != "all-linear":
            fused = fused_names(family, kinds, modules)
            modules = tuple(dict.fromkeys(fused.get(m, m) for m in modules))
            unknown = [m for m in modules if m not in kinds]
            if unknown:
                what = f"the preset '{lora.preset}' selects" if lora.preset else "lora.target_modules names"
                raise RecipeError(
                    f"{what} {unknown}, which this model does not have",
                    hint=f"this model's linear modules: {', '.join(sorted(kinds))} (or 'all-linear')",
                )
        indices = layer_range(layers, num_layers(model))
        chosen |= {t.name for t in candidates if t.layer in indices and (modules == "all-linear" or t.kind in modules)}
    if not chosen:
        raise RecipeError("the LoRA selection matches no module", hint="widen lora.layers or lora.target_modules")
    return [t for t in candidates if t.name in chosen]


def lora_parameter_count(targets: list[Target], r: int, use_dora: bool = False) -> int:
    """Trainable parameters: A (r x in) + B (out x r) per target, plus DoRA's magnitude vector (out)."""
    return sum(r * (t.in_features + t.out_features) + (t.out_features if use_dora else 0) for t in targets)


def build_lora_config(model, lora, task_type: str = "CAUSAL_LM"):
    """A peft.LoraConfig with the selected modules spelled out by full name. A reward model (SEQ_CLS) also
    trains its new score head in full (it starts random, so an adapter on it would learn nothing useful)."""
    from peft import LoraConfig

    targets = select_targets(model, lora)
    saved = ["score"] if task_type == "SEQ_CLS" else []
    extra = {}
    if lora.train_embeddings:
        saved += embedding_names(model)
        extra["ensure_weight_tying"] = bool(getattr(model.config, "tie_word_embeddings", False))
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=[t.name for t in targets],
        use_dora=lora.use_dora,
        bias="none",
        task_type=task_type,
        modules_to_save=saved or None,
        **extra,
    )


def embedding_names(model) -> list[str]:
    """The names of the input embeddings and the LM head inside the model (embed_tokens, lm_head for most families)."""
    names = {id(m): n.rsplit(".", 1)[-1] for n, m in model.named_modules()}
    found = [names.get(id(m)) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None]
    return list(dict.fromkeys(n for n in found if n))


def embedding_parameter_count(model) -> int:
    """Parameters train_embeddings trains in full: the input embeddings and the LM head (once where they are tied)."""
    seen = {}
    for m in (model.get_input_embeddings(), model.get_output_embeddings()):
        if m is not None:
            seen[m.weight.data_ptr() if m.weight.device.type != "meta" else id(m.weight)] = m.weight.numel()
    tied = getattr(model.config, "tie_word_embeddings", False)
    return max(seen.values()) if tied else sum(seen.values())
