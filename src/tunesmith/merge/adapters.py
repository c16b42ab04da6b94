"""The adapter path: LoRA adapters on one base merged as adapters (PEFT's `add_weighted_adapter`),
without writing a full model per input.

What each method means here, and why `linear` is not PEFT's `linear`:
    A LoRA adapter changes a weight by   ΔW_i = s_i · B_i A_i        (s_i = lora_alpha / r)
    mergekit's linear on the materialised models W_i = W + ΔW_i gives
        Σ w_i W_i / Σ w_j  =  W + Σ c_i ΔW_i,   c_i = w_i / Σ w_j   (the base counts in Σ w_j when listed)
    and task_arithmetic gives W + λ Σ w_i ΔW_i.
    PEFT's `cat` stacks [c_1 s_1 A_1; c_2 s_2 A_2; ...] and [B_1 B_2 ...]: rank Σ r_i, and the merged
    delta is exactly Σ c_i s_i B_i A_i. So both run as `cat` and equal the full path up to float rounding.
    PEFT's own `linear` instead averages the A's and the B's separately (it needs one rank), and
    (Σ √c_i A_i)(Σ √c_i B_i) is not Σ c_i B_i A_i: we never use it.
    ties / dare_ties / dare_linear have no exact adapter form (trimming and sign election act on the full
    ΔW_i). Only when asked for (path="adapter") they run as PEFT's `*_svd` variants: ΔW_i computed, then
    PEFT's TIES/DARE (signs elected on the unweighted deltas, mean over the agreeing inputs by count,
    DARE rescaled by 1/density), then an SVD back to rank Σ r_i. `path="auto"` takes the full path for them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.merge.inputs import MergeInput, copy_tokenizer

EXACT = {"linear": "cat", "task_arithmetic": "cat"}
APPROXIMATE = {"ties": "ties_svd", "dare_ties": "dare_ties_svd", "dare_linear": "dare_linear_svd"}


@dataclass
class AdapterPlan:
    """What PEFT is asked to do: `weights[i]` for `adapters[i]`, combined as `combination`."""

    adapters: list[MergeInput]
    weights: list[float]
    combination: str
    density: float | None = None
    svd_rank: int | None = None
    notes: list[str] = field(default_factory=list)


class _NoAdapterPath(Exception):
    """Why the adapter path cannot do this merge (the message is the reason logged and recorded)."""


def plan_adapter_merge(recipe, inputs: dict[str, MergeInput], *, approximate: bool = False) -> tuple[AdapterPlan | None, str]:
    """(plan, why): a plan when every input is a LoRA adapter on one base and the method has an adapter
    form (exact: linear, task_arithmetic; `approximate` adds ties/dare_*); else None and the reason."""
    try:
        return _plan(recipe, inputs, approximate), "every input is a LoRA adapter on one base"
    except _NoAdapterPath as why:
        return None, str(why)


def _plan(recipe, inputs, approximate: bool) -> AdapterPlan:
    method, data = recipe.method, recipe.data
    if not data.get("models"):
        raise _NoAdapterPath("the recipe picks layers with slices/modules")
    base = recipe.base_model
    specs = [path_spec for path, path_spec in recipe.model_slots() if path[:1] == ("models",)]
    entries = [(i, inputs[spec]) for i, spec in enumerate(specs) if spec != base]
    if not entries:
        raise _NoAdapterPath("there is no adapter to merge")
    for _, item in entries:
        _check_lora(item)
    if method not in EXACT and not (approximate and method in APPROXIMATE):
        raise _NoAdapterPath(f"{method} has no exact adapter form" if method in APPROXIMATE else f"PEFT cannot merge adapters by {method}")
    if data.get("tokenizer") or recipe.tokenizer_source not in (None, "base"):
        raise _NoAdapterPath("the recipe builds a tokenizer (tokenizer_source/tokenizer)")
    stacks = {item.stack[:-1] for _, item in entries}
    if len(stacks) != 1:
        raise _NoAdapterPath("the adapters were trained on different bases")
    if base and inputs[base].stack != next(iter(stacks)):
        raise _NoAdapterPath(f"base_model '{base}' is not the model the adapters were trained on")
    plan = AdapterPlan(
        [item for _, item in entries], _peft_weights(method, data, specs, base, [i for i, _ in entries]), EXACT.get(method) or APPROXIMATE[method]
    )
    if method in APPROXIMATE:
        densities = {_scalar(data, i, "density", 1.0) for i, _ in entries}
        if len(densities) != 1:
            raise _NoAdapterPath("PEFT takes one density for all adapters")
        plan.density = densities.pop()
        plan.svd_rank = sum(_config(item)["r"] for item in plan.adapters)
        plan.notes.append(
            f"{method} on the adapter path is PEFT's {plan.combination}, not mergekit's: signs elected on the "
            f"unweighted deltas, the mean over agreeing inputs by count, then an SVD to rank {plan.svd_rank}"
        )
    else:
        plan.notes.append(
            f"{method} as PEFT 'cat' (rank {sum(_config(i)['r'] for i in plan.adapters)}): the merged delta is exactly "
            "the weighted sum of the adapters' deltas, as the full path computes it"
        )
    return plan


def _peft_weights(method: str, data: dict, specs: list[str], base: str | None, indices: list[int]) -> list[float]:
    """The weight PEFT gives each adapter so that its merge is mergekit's (see the module docstring)."""
    top = data.get("parameters") or {}
    weights = [_scalar(data, i, "weight") for i in indices]
    if method == "linear":
        # the base, when set, is one of mergekit's inputs: a weight on a zero delta
        base_weight = _scalar(data, specs.index(base) if base in specs else None, "weight") if base else 0.0
        total = sum(weights) + base_weight
        if _flag(top, "normalize", True):
            if abs(total) < 1e-8:
                raise _NoAdapterPath("the weights sum to 0")
            return [w / total for w in weights]
        if abs(total - 1) > 1e-6:
            raise _NoAdapterPath(f"linear with normalize: false scales the base by the sum of weights ({total:g}), which an adapter cannot")
        return weights
    # task_arithmetic: W + λ Σ w_i ΔW_i (divided by Σ w_i with normalize); PEFT's TIES/DARE take the weights as they are
    lam = _scalar(data, None, "lambda", 1.0)
    divisor = sum(weights) if method == "task_arithmetic" and _flag(top, "normalize", False) and sum(weights) else 1.0
    return [lam * w / divisor for w in weights]


def merge_adapters_path(plan: AdapterPlan, work: Path, *, dtype: str, tokenizer_dir: str, log=print) -> None:
    """work/adapter: the merged adapter; work/model: it merged onto the base (what every consumer loads)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunesmith.models.load import merge_adapters

    first = plan.adapters[0].source
    log(f"merge: loading the base and {len(plan.adapters)} adapters (fp32)")
    model = AutoModelForCausalLM.from_pretrained(first.path, dtype=torch.float32)
    if first.below:
        model = merge_adapters(model, first.below)
    names = [f"input{i}" for i in range(len(plan.adapters))]
    model = PeftModel.from_pretrained(model, first.adapter, adapter_name=names[0])
    for name, item in zip(names[1:], plan.adapters[1:]):
        model.load_adapter(item.source.adapter, adapter_name=name)
    log(f"merge: PEFT add_weighted_adapter ({plan.combination}), weights {', '.join(f'{w:.4g}' for w in plan.weights)}")
    model.add_weighted_adapter(names, plan.weights, "default", combination_type=plan.combination, density=plan.density, svd_rank=plan.svd_rank)
    model.set_adapter("default")
    for name in names:
        model.delete_adapter(name)
    with warnings.catch_warnings():  # PEFT looks for the base's config.json to see if the vocabulary grew; a stacked base has none
        warnings.filterwarnings("ignore", message="Could not find a config file")
        model.save_pretrained(work / "adapter")
    # The merged adapter sits on what the inputs sat on (maybe an earlier stage's adapter, which resolve_model follows).
    config_file = work / "adapter" / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = _config(plan.adapters[0])["base_model_name_or_path"]
    config_file.write_text(json.dumps(config, indent=2))
    copy_tokenizer(tokenizer_dir, work / "adapter")
    log("merge: merging the adapter into the base")
    merged = model.merge_and_unload().to(getattr(torch, dtype))
    merged.save_pretrained(work / "model")


def _check_lora(item: MergeInput) -> None:
    if not item.is_adapter:
        raise _NoAdapterPath(f"'{item.spec}' is a full model, not an adapter")
    config = _config(item)
    if config.get("peft_type") != "LORA" or config.get("use_dora"):
        raise _NoAdapterPath(f"'{item.spec}' is a {'DoRA' if config.get('use_dora') else config.get('peft_type')} adapter, not plain LoRA")
    if config.get("modules_to_save") or config.get("trainable_token_indices") or config.get("target_parameters"):
        raise _NoAdapterPath(f"'{item.spec}' also trains whole modules or tokens, which adapters cannot be merged with")


def _scalar(data: dict, index: int | None, name: str, default: float | None = None) -> float:
    """A parameter as mergekit resolves it (the model's own, else the top level) when it is one number."""
    own = (data["models"][index].get("parameters") or {}) if index is not None else {}
    value = own.get(name, (data.get("parameters") or {}).get(name, default))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _NoAdapterPath(f"'{name}' varies by tensor or layer (a filter or gradient), and an adapter merge takes one number per adapter")
    return float(value)


def _flag(top: dict, name: str, default: bool) -> bool:
    value = top.get(name, default)
    if not isinstance(value, bool):
        raise _NoAdapterPath(f"'{name}' varies by tensor")
    return value


def _config(item: MergeInput) -> dict:
    return json.loads((Path(item.source.adapter) / "adapter_config.json").read_text())
