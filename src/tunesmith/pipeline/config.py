"""The pipeline file: stages in order, each stage's output feeding later ones by name.

    name: pirate
    output_dir: runs/pipeline-pirate          # each stage writes <output_dir>/<stage name>/
    stages:
      - {name: sft, stage: sft}                                   # any training stage; recipe: file or inline sections
      - {name: dpo, stage: dpo, model: sft}                       # `sft` is the stage above: its run directory
      - {name: merged, stage: merge, merge_method: slerp, models: [sft, dpo], parameters: {t: 0.5}}
      - {name: eval, stage: eval, models: [merged, sft, dpo]}     # side by side, the first under test
      - {name: export, stage: export, model: merged, formats: [gguf, ollama]}

A value that names an earlier stage means that stage's output directory; anything else is what `--model` takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tunesmith.errors import RecipeError
from tunesmith.recipes.schema import STAGES


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="The stage's name: its output is <output_dir>/<name>, and later stages refer to it by this name.")

    def references(self) -> list[str]:
        """The values of this step that may name earlier stages."""
        return []


class TrainStep(Step):
    stage: Literal[STAGES] = Field(description="A training stage: sft, reward, dpo, kto, orpo, cpo, grpo, rloo, ppo.")
    model: str | None = Field(None, description="The model to start from: an earlier stage's name or any --model value (default: the recipe's).")
    dataset: str | None = Field(None, description="Training data (default: the recipe's, else the stage's built-in).")
    reward_model: str | None = Field(None, description="grpo, rloo, ppo: a reward model, an earlier reward stage's name or a run directory.")
    recipe: str | dict[str, Any] | None = Field(None, description="A recipe file (relative to the pipeline file) or the recipe's sections inline.")
    set: dict[str, Any] = Field({}, description="Overrides as in --set: {training.max_steps: 20}.")

    def references(self) -> list[str]:
        return [v for v in (self.model, self.reward_model) if v]


class MergeStep(Step):
    """A merge recipe in mergekit's shape (merge_method, models, base_model, parameters, dtype, ...)."""

    model_config = ConfigDict(extra="allow")
    stage: Literal["merge"]

    def merge_recipe(self) -> dict:
        return {k: v for k, v in self.model_dump().items() if k not in ("name", "stage")}

    def references(self) -> list[str]:
        recipe = self.merge_recipe()
        found = [recipe["base_model"]] if isinstance(recipe.get("base_model"), str) else []
        for entry in recipe.get("models") or []:
            found.append(entry if isinstance(entry, str) else entry.get("model"))
        return [f for f in found if isinstance(f, str)]


class EvalStep(Step):
    stage: Literal["eval"]
    models: list[str] = Field(min_length=1, description="Models side by side, the first under test: stage names or --model values.")
    data: str = Field("pirate-eval", description="Prompts with reference answers (any format the data layer reads).")
    pairs: str | None = Field("pirate-pairs-eval", description="Preference pairs to measure ranking on (None: skip).")
    max_prompts: int = Field(8, ge=1, description="Prompts each model answers.")
    max_new_tokens: int = Field(48, ge=1, description="Tokens per answer.")
    match: Literal["exact", "contains", "regex"] | None = Field(None, description="Score answers against the data's answer field.")

    def references(self) -> list[str]:
        return list(self.models)


class ExportStep(Step):
    stage: Literal["export"]
    model: str = Field(description="What to export: a stage name or a --model value.")
    formats: list[Literal["merged", "gguf", "ollama"]] = Field(["gguf", "ollama"], description="merged (safetensors), gguf, ollama (GGUF + Modelfile).")
    quant: str = Field("q8_0", description="GGUF tensor type: f32, f16, bf16, q8_0, ...")
    dtype: str = Field("float32", description="dtype of the merged model.")
    system: str | None = Field(None, description="Ollama: a SYSTEM prompt for the Modelfile.")

    def references(self) -> list[str]:
        return [self.model]


class Pipeline(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("pipeline", description="Shown in the summary and the lineage.")
    output_dir: str | None = Field(None, description="Where every stage writes; default runs/pipeline-<name>.")
    stages: list[dict[str, Any]] = Field(min_length=1, description="The stages, in order.")
    source: str | None = Field(None, exclude=True)  # the file it was read from (relative recipe paths start there)

    def steps(self) -> list[Step]:
        return [parse_step(s, i, self.source) for i, s in enumerate(self.stages)]

    @property
    def root(self) -> Path:
        return Path(self.output_dir or f"runs/pipeline-{self.name}")


STEP_KINDS = {"merge": MergeStep, "eval": EvalStep, "export": ExportStep}


def parse_step(raw: dict, index: int, source: str | None) -> Step:
    where = f"{source or 'pipeline'}: stages[{index}]" + (f" ({raw.get('name')})" if isinstance(raw, dict) and raw.get("name") else "")
    if not isinstance(raw, dict) or "stage" not in raw:
        raise RecipeError("a stage is a mapping with name: and stage: (sft, dpo, ..., merge, eval, export)", where=where, hint="e.g. - {name: sft, stage: sft}")
    kind = STEP_KINDS.get(raw["stage"], TrainStep)
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        messages = []
        for e in exc.errors():
            field = ".".join(str(p) for p in e["loc"])
            messages.append(f"unknown field '{field}'" if e["type"] == "extra_forbidden" else f"{field}: {e['msg']}")
        raise RecipeError("; ".join(messages), where=where, hint=f"stage kinds: {', '.join(STAGES)}, merge, eval, export") from None


def check_references(pipeline: Pipeline) -> list[Step]:
    """The steps, with names unique and every reference to a stage pointing at an earlier one."""
    steps = pipeline.steps()
    names = [s.name for s in steps]
    seen: set[str] = set()
    for i, step in enumerate(steps):
        where = f"{pipeline.source or 'pipeline'}: stages[{i}] ({step.name})"
        if step.name in seen:
            raise RecipeError(f"two stages are named '{step.name}'", where=where, hint="stage names name output directories: make them unique")
        if "/" in step.name or step.name.startswith("."):
            raise RecipeError(
                f"the stage name '{step.name}' is not a plain directory name",
                where=where,
                hint="use letters, digits, - and _ (it names the stage's output directory)",
            )
        for ref in step.references():
            if ref in names and ref not in seen:
                raise RecipeError(
                    f"'{ref}' is a later stage (or this one); a stage can only use the output of one above it", where=where, hint="reorder the stages"
                )
        seen.add(step.name)
    return steps


def load_pipeline(path: str | Path) -> Pipeline:
    from tunesmith.recipes.load import read_yaml

    source = str(path)
    data = read_yaml(path, "pipeline file", hint="pass a pipeline YAML to -c, or none for the built-in demo")[1] or {}
    if not isinstance(data, dict) or "stages" not in data:
        raise RecipeError("a pipeline file is a mapping with a stages: list", where=source, hint="see `tunesmith pipeline --help` for an example")
    try:
        pipeline = Pipeline.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise RecipeError(
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
            where=source,
            hint="a pipeline file has name:, output_dir: and a non-empty stages: list; see `tunesmith pipeline --help`",
        ) from None
    check_steps(pipeline, check_references(pipeline))
    return pipeline


def _names_a_model(value: str) -> bool:
    """Whether `value` can be a --model value (a built-in, an existing path, a Hub id; mergekit's base+adapter form)."""
    from tunesmith.models.builtin import BUILTIN_MODELS
    from tunesmith.models.load import HUB_ID

    parts = value.split("+") if "+" in value and not Path(value).expanduser().exists() else [value]
    return all(p in BUILTIN_MODELS or Path(p).expanduser().exists() or (HUB_ID.match(p) and not p.startswith((".", "/", "~"))) for p in parts)


def check_steps(pipeline: Pipeline, steps: list[Step]) -> None:
    """What each stage will be given, checked before the first one runs: a training stage's recipe, a merge stage's
    recipe (mergekit's schema, its method and parameters), and every model a stage names that is not a stage above.
    A mistake in the last stage must not cost the time of the ones before it."""
    from tunesmith.pipeline.run import train_recipe  # run.py imports this module

    done: dict[str, Path] = {}
    for i, step in enumerate(steps):
        where = f"{pipeline.source or 'pipeline'}: stages[{i}] ({step.name})"
        for ref in step.references():
            if ref not in done and not _names_a_model(ref):
                above = ", ".join(done) or "none"
                raise RecipeError(
                    f"'{ref}' is neither the name of a stage above this one nor a model (no such file, directory or built-in model)",
                    where=where,
                    hint=f"stages above: {above}; or give a model directory, a run directory or a .gguf file",
                )
        if isinstance(step, TrainStep):
            train_recipe(step, pipeline, done, pipeline.root / step.name)
        elif isinstance(step, MergeStep):
            from tunesmith.merge import MergeRecipe

            spec = step.merge_recipe()
            spec["models"] = [{"model": m} if isinstance(m, str) else m for m in spec.get("models") or []]
            MergeRecipe(spec, file=f"{pipeline.source or 'pipeline'}: stage {step.name}")
        done[step.name] = pipeline.root / step.name


def is_pipeline_file(path: str | Path) -> bool:
    """Whether a YAML file is a pipeline (has a stages: list) rather than a recipe."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):  # not readable as YAML: the recipe reader says why
        return False
    return isinstance(data, dict) and isinstance(data.get("stages"), list)
