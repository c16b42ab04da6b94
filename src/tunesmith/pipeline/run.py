"""Run a pipeline's stages in order, each through the same library call as its own command.

A stage whose output is complete is skipped; a training stage cut off mid-run resumes from its newest complete
checkpoint; a stage that left nothing worth keeping (no checkpoint yet, a merge or export that never finished: those
are built aside and moved into place) starts again. What each stage was asked to do is hashed into
<output_dir>/lineage.json, so a skipped stage is known to be the one the file describes now.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunesmith.errors import RecipeError
from tunesmith.pipeline.config import EvalStep, MergeStep, Pipeline, Step, TrainStep, check_references

# what marks each kind of stage's output as complete (written last, or moved into place whole)
COMPLETE = {"train": "summary.json", "merge": "merge.json", "eval": "eval.json", "export": "export.json"}


@dataclass
class StepOutcome:
    name: str
    kind: str  # train (with its stage), merge, eval, export
    stage: str
    status: str  # ran | resumed | skipped
    directory: str
    seconds: float
    spec_hash: str
    metrics: dict = field(default_factory=dict)
    inputs: list[str] = field(default_factory=list)


def kind_of(step: Step) -> str:
    return "train" if isinstance(step, TrainStep) else step.stage


def resolve(value: str | None, done: dict[str, Path]) -> str | None:
    """A stage name -> that stage's output directory; anything else is passed through as a --model value."""
    return str(done[value]) if value in done else value


def resolved_spec(step: Step, done: dict[str, Path]) -> dict:
    """The step as written, with every reference to an earlier stage replaced by its directory (what the hash covers)."""
    spec = step.model_dump()
    refs = set(step.references())

    def walk(value):
        if isinstance(value, str) and value in refs:
            return resolve(value, done)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(spec)


def spec_hash(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def train_recipe(step: TrainStep, pipeline: Pipeline, done: dict[str, Path], directory: Path):
    """The Recipe of a training stage: its file or inline sections, the pipeline's wiring, then its `set:` overrides."""
    from tunesmith.recipes import load_recipe

    overrides: dict = {}
    path = None
    if isinstance(step.recipe, str):
        path = Path(step.recipe)
        if not path.is_absolute() and pipeline.source and not path.exists():
            path = Path(pipeline.source).parent / path
    elif isinstance(step.recipe, dict):
        overrides.update(flatten(step.recipe))
    overrides["stage"] = step.stage
    if step.model:
        overrides["model.name"] = resolve(step.model, done)
    if step.dataset:
        overrides["data.dataset"] = step.dataset
    if step.reward_model:
        overrides[f"{step.stage}.reward_model"] = resolve(step.reward_model, done)
    overrides.update(step.set)
    overrides["output_dir"] = str(directory)
    try:
        return load_recipe(path, overrides)
    except RecipeError as exc:
        raise RecipeError(exc.message.replace("command line: ", ""), where=f"{pipeline.source or 'pipeline'}: stage {step.name}", hint=exc.hint) from None


def flatten(sections: dict, prefix: str = "") -> dict:
    """{training: {max_steps: 8}} -> {"training.max_steps": 8} (lists and the rewards entries stay values)."""
    out = {}
    for key, value in sections.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and key not in ("options",):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def state(kind: str, directory: Path) -> str:
    """complete | resumable (a training run with a complete checkpoint) | partial (something, not worth keeping) | new."""
    if (directory / COMPLETE[kind]).is_file():
        return "complete"
    if not directory.exists():
        return "new"
    if kind == "train":
        from tunesmith.runs.rundir import RunDir

        if RunDir(directory).checkpoints() and (directory / "recipe.yaml").is_file():
            return "resumable"
    return "partial" if any(directory.iterdir()) else "new"


class PipelineRun:
    """One pass over a pipeline; `on_result(step, result)` is called after each stage that ran (the CLI shows it)."""

    def __init__(self, pipeline: Pipeline, *, console=None, on_result=None, callbacks=()):
        from rich.console import Console

        self.pipeline = pipeline
        self.steps = check_references(pipeline)
        self.root = pipeline.root
        self.console = console or Console()
        self.on_result = on_result or (lambda step, result: None)
        self.callbacks = callbacks
        self.lineage_file = self.root / "lineage.json"
        self.outcomes: list[StepOutcome] = []

    def say(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, highlight=False)

    def previous_hashes(self) -> dict[str, str]:
        if not self.lineage_file.is_file():
            return {}
        return {s["name"]: s["spec_hash"] for s in json.loads(self.lineage_file.read_text()).get("stages", [])}

    def run(self) -> list[StepOutcome]:
        self.root.mkdir(parents=True, exist_ok=True)
        hashes = self.previous_hashes()
        done: dict[str, Path] = {}
        total = len(self.steps)
        for i, step in enumerate(self.steps, 1):
            kind, directory = kind_of(step), self.root / step.name
            spec = resolved_spec(step, done)
            digest = spec_hash(spec)
            now = state(kind, directory)
            label = f"[{i}/{total}] {step.name} ({step.stage})"
            started = time.perf_counter()
            if now in ("complete", "resumable") and step.name in hashes and hashes[step.name] != digest:
                raise RecipeError(
                    f"stage {step.name} changed since {directory} was made",
                    where=self.pipeline.source,
                    hint=f"set a new output_dir, or delete {directory} (and the stages after it) to make it again",
                )
            if now == "complete":
                self.say(f"{label}: complete in {directory}, skipped")
                status = "skipped"
            else:
                if now == "partial":
                    self.say(f"{label}: {directory} holds an unfinished attempt with nothing to resume from; starting it again")
                    shutil.rmtree(directory)
                self.say(f"{label}: {'resuming' if now == 'resumable' else 'running'} -> {directory}")
                self.run_step(step, directory, done, resume=now == "resumable")
                status = "resumed" if now == "resumable" else "ran"
            done[step.name] = directory
            seconds = self.seconds_of(kind, directory, time.perf_counter() - started, status)
            inputs = list(dict.fromkeys(resolve(r, done) for r in step.references()))
            self.outcomes.append(StepOutcome(step.name, kind, step.stage, status, str(directory), seconds, digest, self.metrics_of(kind, directory), inputs))
            self.write_lineage()
        return self.outcomes

    def run_step(self, step: Step, directory: Path, done: dict[str, Path], resume: bool) -> None:
        if isinstance(step, TrainStep):
            from tunesmith.train.scaffold import run_stage

            if resume:
                result = run_stage(resume=str(directory), console=self.console, callbacks=self.callbacks)
            else:
                result = run_stage(train_recipe(step, self.pipeline, done, directory), console=self.console, callbacks=self.callbacks)
        elif isinstance(step, MergeStep):
            from tunesmith.merge import MergeRecipe, run_merge

            spec = {k: v for k, v in resolved_spec(step, done).items() if k not in ("name", "stage")}
            spec["models"] = [{"model": m} if isinstance(m, str) else m for m in spec.get("models") or []]  # `models: [sft, dpo]` is short for mergekit's form
            recipe = MergeRecipe(spec, file=f"{self.pipeline.source or 'pipeline'}: stage {step.name}")
            result = run_merge(recipe, directory, log=self.say)
        elif isinstance(step, EvalStep):
            from tunesmith.evaluate.compare import compare_models
            from tunesmith.runs.rundir import built_aside

            models = {m: resolve(m, done) for m in step.models}
            result = compare_models(
                models, data=step.data, pairs=step.pairs, max_prompts=step.max_prompts, max_new_tokens=step.max_new_tokens, match=step.match, log=self.say
            )
            with built_aside(directory) as tmp:
                (tmp / "eval.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
        else:
            from tunesmith.export.run import export_model

            result = export_model(
                resolve(step.model, done), directory, list(step.formats), quant=step.quant, dtype=step.dtype, system=step.system, log=self.say
            )
        self.on_result(step, result)

    @staticmethod
    def seconds_of(kind: str, directory: Path, elapsed: float, status: str) -> float:
        """This pass's time, or for a skipped stage the time it took when it ran (from its own files)."""
        if status != "skipped":
            return elapsed
        file = {"train": "summary.json", "merge": "merge.json", "export": "export.json"}.get(kind)
        if file and (directory / file).is_file():
            return float(json.loads((directory / file).read_text()).get("seconds") or 0.0)
        return 0.0

    @staticmethod
    def metrics_of(kind: str, directory: Path) -> dict:
        if kind == "train":
            from tunesmith.runs.lineage import key_metrics

            return key_metrics(directory)
        if kind == "eval":
            report = json.loads((directory / "eval.json").read_text())
            first = report["models"][0]
            return {
                "under test": first,
                **{m: report["values"][first].get(m) for m in ("eval_loss", "preference_accuracy", "leakage_rate") if m in report["values"][first]},
                "standing": report.get("standing", {}),
            }
        if kind == "merge":
            info = json.loads((directory / "merge.json").read_text())
            return {"method": info.get("method"), "path": info.get("path")}
        info = json.loads((directory / "export.json").read_text())
        logits = (info.get("verify") or {}).get("logits") or {}
        return {"formats": info.get("formats"), "quant": info.get("quant"), **({"logits": logits.get("summary")} if logits.get("summary") else {})}

    def write_lineage(self) -> None:
        """<output_dir>/lineage.json: every stage so far, its inputs, status, time and key metrics; and the graph behind
        the last stage's output (runs/lineage.py), read from the stages' own files."""
        from tunesmith.runs.lineage import lineage

        last = self.outcomes[-1]
        data = {
            "pipeline": self.pipeline.name,
            "source": self.pipeline.source,
            "stages": [asdict(o) for o in self.outcomes],
            "graph": lineage(last.directory) if last.kind != "eval" else [],
        }
        tmp = self.lineage_file.with_name(".lineage.json.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, self.lineage_file)

    def render_summary(self) -> None:
        from rich.table import Table

        from tunesmith.runs.lineage import format_metrics

        table = Table(title=f"pipeline {self.pipeline.name}: {self.root}", title_justify="left")
        for col in ("stage", "kind", "status", "time", "key metrics"):
            table.add_column(col, overflow="fold")
        for o in self.outcomes:
            metrics = {k: v for k, v in o.metrics.items() if k not in ("standing", "seconds")}  # the time has its column
            standing = o.metrics.get("standing")
            text = format_metrics(metrics) + (("; vs sources: " + ", ".join(f"{k} {v}" for k, v in standing.items() if v)) if standing else "")
            table.add_row(o.name, o.stage, o.status, f"{o.seconds:.0f} s", text)
        self.console.print(table)
        self.say(f"lineage: {self.lineage_file}")


def run_pipeline(pipeline: Pipeline, *, console=None, on_result=None, callbacks=()) -> list[StepOutcome]:
    runner = PipelineRun(pipeline, console=console, on_result=on_result, callbacks=callbacks)
    outcomes = runner.run()
    runner.render_summary()
    return outcomes
