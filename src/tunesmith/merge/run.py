"""Run a merge recipe into an output directory, by the adapter path or the full path, and say which.

<out>/model/       the merged model: weights, config, tokenizer + chat template, generation_config
<out>/adapter/     (adapter path) the merged LoRA adapter itself
<out>/merge.yaml   the recipe as run, each model by the absolute spec it resolved from
<out>/merge.json   method, path taken and why, inputs (what each resolved to, with notes), seconds
"""

from __future__ import annotations

import importlib.metadata as md
import json
import time
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import RecipeError, TunesmithError
from tunesmith.merge.adapters import merge_adapters_path, plan_adapter_merge
from tunesmith.merge.full import merge_full
from tunesmith.merge.inputs import MergeInput, check_compatible, copy_tokenizer, resolve_inputs, unique_inputs
from tunesmith.merge.recipe import NOT_MODELS, MergeRecipe
from tunesmith.runs.rundir import built_aside

PATHS = ("auto", "adapter", "full")


@dataclass
class MergeResult:
    output_dir: Path
    model_dir: Path
    method: str
    path: str  # "adapter" | "full": which engine ran
    inputs: list[str]  # each model's absolute spec, recipe order
    seconds: float
    notes: list[str]
    adapter_dir: Path | None = None  # the merged adapter (adapter path only)


def run_merge(recipe: MergeRecipe, output_dir: str | Path, *, path: str = "auto", log=print, seed: int | None = 0) -> MergeResult:
    """Merge into `output_dir` (new or empty), atomically: built in a sibling temp dir, then renamed.
    `path`: "auto" takes the adapter path where it is exact (linear/task_arithmetic of LoRA adapters on one
    base), else the full path; "adapter" also runs ties/dare as PEFT does them; "full" always uses mergekit.
    `seed`: for the random drop masks of DARE/DELLA (None: not seeded)."""
    from tunesmith.quiet import quiet_libraries

    start = time.perf_counter()
    out = Path(output_dir)
    if path not in PATHS:
        raise RecipeError(f"path '{path}' is not one of {', '.join(PATHS)}", hint="auto picks the adapter path where it is exact")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TunesmithError(f"the output directory '{out}' already exists and is not empty", hint="choose another output directory, or remove this one")
    quiet_libraries()
    inputs = resolve_inputs(recipe)
    log(f"merge: checking {len(unique_inputs(inputs))} models can be merged ({recipe.method})")
    check_compatible([item.source for item in unique_inputs(inputs)], tokenizer_source=recipe.tokenizer_source, same_depth=bool(recipe.data.get("models")))
    plan, why = (None, "path='full' was asked for") if path == "full" else plan_adapter_merge(recipe, inputs, approximate=path == "adapter")
    if path == "adapter" and plan is None:
        raise RecipeError(f"the adapter path cannot run this merge: {why}", where=recipe.where(), hint="use path 'full' (or 'auto', which picks it)")
    taken = "adapter" if plan else "full"
    log(f"merge: {recipe.method} on the {taken} path: {why}")
    donor = _donor(recipe, inputs)
    with built_aside(out) as work:
        notes = [f"{taken} path: {why}"]
        if plan:
            dtype = recipe.data.get("out_dtype") or recipe.data.get("dtype") or "float32"
            merge_adapters_path(plan, work, dtype=dtype, tokenizer_dir=donor.tokenizer_dir, log=log)
            notes += plan.notes
        else:
            notes += merge_full(recipe, inputs, work, seed=seed, log=log)
        notes += _finish_model_dir(work / "model", recipe, inputs, donor)
        seconds = round(time.perf_counter() - start, 2)
        _write_record(work, recipe, inputs, taken, notes, seconds)
    log(f"merge: wrote {out / 'model'} in {seconds:.1f} s")
    specs = [item.absolute_spec() for item in unique_inputs(inputs)]
    return MergeResult(out, out / "model", recipe.method, taken, specs, seconds, notes, adapter_dir=out / "adapter" if plan else None)


def _write_record(work: Path, recipe: MergeRecipe, inputs: dict[str, MergeInput], taken: str, notes: list[str], seconds: float) -> None:
    """merge.yaml (re-runnable: absolute specs) and merge.json (what each input was, the path and why)."""
    specs = {spec: item.absolute_spec() for spec, item in inputs.items()}
    (work / "merge.yaml").write_text(
        "# the recipe as run; each model is the absolute spec it resolved from (merge.json: what each was)\n" + MergeRecipe(recipe.with_models(specs)).to_yaml()
    )
    record = {
        "method": recipe.method,
        "path": taken,
        "seconds": seconds,
        "notes": notes,
        "inputs": [{"role": _role(recipe, spec), **item.record()} for spec, item in inputs.items()],
        "versions": {p: _version(p) for p in ("tunesmith", "mergekit", "peft", "transformers", "torch")},
    }
    (work / "merge.json").write_text(json.dumps(record, indent=2) + "\n")


def _donor(recipe: MergeRecipe, inputs: dict[str, MergeInput]) -> MergeInput:
    """Where the tokenizer, chat template and generation config come from: the recipe's tokenizer_source
    when it names a model, else base_model, else the first model (mergekit's rule)."""
    source = recipe.tokenizer_source
    if source and source not in NOT_MODELS:
        return inputs[source]
    return inputs[recipe.base_model or recipe.references()[0]]


def _finish_model_dir(model_dir: Path, recipe: MergeRecipe, inputs: dict[str, MergeInput], donor: MergeInput) -> list[str]:
    """Tokenizer (adapter path; mergekit writes its own), chat template, and the donor's generation config
    (its eos is what generation stops on), so the directory works for every consumer as it is."""
    from transformers import AutoConfig, GenerationConfig

    notes = []
    if not (model_dir / "tokenizer_config.json").is_file():
        copy_tokenizer(donor.tokenizer_dir, model_dir)
        if recipe.data.get("chat_template"):
            _apply_chat_template(model_dir, recipe, inputs)
    base = Path(donor.source.path)
    if (base / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(base)
    else:
        generation = GenerationConfig.from_model_config(AutoConfig.from_pretrained(base))
    generation.save_pretrained(model_dir)
    notes.append(f"tokenizer and generation config (eos_token_id={generation.eos_token_id}) from {donor.spec}")
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text()) if (model_dir / "tokenizer_config.json").is_file() else {}
    if not (tokenizer_config.get("chat_template") or (model_dir / "chat_template.jinja").is_file() or (model_dir / "chat_template.json").is_file()):
        notes.append(f"the merged model has no chat template ({donor.spec} has none); set chat_template: in the recipe")
    return notes


def _apply_chat_template(model_dir: Path, recipe: MergeRecipe, inputs: dict[str, MergeInput]) -> None:
    """mergekit's own reading of `chat_template:` (a template, a built-in name such as chatml, or auto)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import _set_chat_template
    from transformers import AutoTokenizer

    config = MergeConfiguration.model_validate(recipe.with_models({s: {"model": {"path": i.tokenizer_dir}} for s, i in inputs.items()}))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    try:
        _set_chat_template(tokenizer, config)
    except RuntimeError as exc:
        raise RecipeError(
            f"chat_template: {exc}", where=recipe.where(("chat_template",)), hint="give a Jinja template, a mergekit name (chatml, llama3, ...) or auto"
        ) from None
    tokenizer.save_pretrained(model_dir)


def _role(recipe: MergeRecipe, spec: str) -> str:
    if spec == recipe.base_model:
        return "base"
    merged = {s for path, s in recipe.model_slots() if path[0] != "tokenizer" and path[-1] == "model"}  # models[i] and slice sources
    return "model" if spec in merged else "tokenizer"


def _version(package: str) -> str | None:
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return None
