"""A run directory holds everything about one training run.

<run>/recipe.yaml        the fully resolved recipe (re-runnable: tunesmith sft --recipe <run>/recipe.yaml)
<run>/environment.json   versions and hardware
<run>/metrics.jsonl      one JSON object per logged step (train and eval)
<run>/checkpoint-N/      Trainer checkpoints (model/adapter, optimizer, scheduler, RNG, trainer state)
<run>/model/             the final adapter or model, with tokenizer and chat template
<run>/merged/            (LoRA + --merge) base with the adapter merged in
<run>/loss.png           train/eval loss curves
<run>/metrics.png        the stage's own curves (reward margin, accuracy, ...)
<run>/before.json        the stage's measurement of the starting model on the eval split (kept for resume)
<run>/changes.json       what training changed on the eval split (before/after measurements)
<run>/diagnostics.json   end-of-run eval diagnostics (leakage, repetition, memorization)
<run>/summary.json       steps, final losses, wall time (written at the end: the run is complete; read by pipelines and lineage)
<run>/README.md          model card: what was trained on what, and how it went
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.runs.faults import fault_point

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class RunDir:
    path: Path

    @classmethod
    def new(cls, output_dir: str | None, method: str) -> RunDir:
        path = Path(output_dir or f"runs/{method}-{time.strftime('%Y%m%d-%H%M%S')}")
        if path.exists() and any(path.iterdir()):
            found = cls(path)
            if found.recipe_file.is_file() and not (found.path / "summary.json").is_file() and not found.checkpoints():
                hint = f"it holds a run stopped before its first complete checkpoint, so there is nothing to resume: remove it (rm -r {path}) to start again, or choose another --output-dir"
            else:
                hint = f"continue it with --resume {path}, or choose another --output-dir"
            raise TunesmithError(f"the run directory '{path}' already exists and is not empty", hint=hint)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @property
    def recipe_file(self) -> Path:
        return self.path / "recipe.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def model_dir(self) -> Path:
        return self.path / "model"

    SAVING = ".saving"  # in a checkpoint-N directory while it is being written (train/callbacks.py guard_checkpoints)

    @classmethod
    def is_complete(cls, checkpoint: Path) -> bool:
        """trainer_state.json (transformers writes it last) and no SAVING marker: the save finished."""
        return (checkpoint / "trainer_state.json").is_file() and not (checkpoint / cls.SAVING).exists()

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first; one without trainer_state.json, or still marked SAVING, was cut off mid-save."""
        found = []
        for child in self.path.iterdir() if self.path.is_dir() else []:
            match = CHECKPOINT.match(child.name)
            if match and child.is_dir() and self.is_complete(child):
                found.append((int(match.group(1)), child))
        return sorted(found)

    def incomplete_checkpoints(self) -> list[Path]:
        """checkpoint-N directories a killed save (or a killed rotation) left behind."""
        children = self.path.iterdir() if self.path.is_dir() else []
        return sorted(c for c in children if CHECKPOINT.match(c.name) and c.is_dir() and not self.is_complete(c))

    def drop_incomplete_checkpoints(self) -> list[Path]:
        """Remove the incomplete checkpoints (on resume: never chosen, and a later save of that step starts clean)."""
        dropped = self.incomplete_checkpoints()
        for checkpoint in dropped:
            shutil.rmtree(checkpoint, ignore_errors=True)
        return dropped

    def begin_checkpoint(self, checkpoint: Path) -> None:
        """Before a checkpoint is written: clear an incomplete leftover of that step, and mark the directory SAVING."""
        if checkpoint.is_dir() and not self.is_complete(checkpoint):
            shutil.rmtree(checkpoint, ignore_errors=True)
        checkpoint.mkdir(parents=True, exist_ok=True)
        (checkpoint / self.SAVING).write_text("written by tunesmith while this checkpoint is saved; removed when complete\n")

    def end_checkpoint(self, checkpoint: Path) -> None:
        (checkpoint / self.SAVING).unlink(missing_ok=True)

    def write_text(self, name: str, text: str) -> Path:
        """Write a file atomically (tmp + rename), so a crash never leaves half a file."""
        target = self.path / name
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
        return target

    def write_environment(self, precision) -> None:
        import importlib.metadata as md

        versions = {}
        for pkg in ("tunesmith", "torch", "transformers", "peft", "trl", "datasets", "accelerate"):
            try:
                versions[pkg] = md.version(pkg)
            except md.PackageNotFoundError:
                versions[pkg] = None
        env = {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "precision": precision.name,
            "precision_reason": precision.reason,
            "device": precision.device,
            "versions": versions,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self.write_text("environment.json", json.dumps(env, indent=2) + "\n")

    def save_final(self, name: str, save) -> Path:
        """Call `save(tmp_dir)` then move the result to <run>/<name> atomically.

        Replacing an existing <run>/<name> takes two renames (old aside, new in); a kill between them leaves the old
        one as .<name>.old, which the next call puts back first, so the last complete result is never lost."""
        target = self.path / name
        tmp = self.path / f".{name}.tmp"
        old = self.path / f".{name}.old"
        if old.exists():
            if target.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        save(tmp)
        fault_point("final-rename")
        if target.exists():
            os.replace(target, old)
            fault_point("final-swap")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        return target

    def plot_losses(self) -> Path | None:
        """<run>/loss.png: train (and eval) loss against optimizer step, from metrics.jsonl."""
        return self._plot("loss.png", {"loss": "train loss", "eval_loss": "eval loss"}, "loss")

    def plot_metrics(self, keys: tuple[str, ...], name: str = "metrics.png") -> Path | None:
        """<run>/<name>: a stage's own curves (e.g. DPO reward margin and accuracy, GRPO reward) against optimizer step."""
        return self._plot(name, {key: key for key in keys}, "value")

    def _plot(self, name: str, keys: dict[str, str], ylabel: str) -> Path | None:
        from tunesmith.report.plots import plot_series

        metrics = [m for m in self.read_metrics() if not m.get("final")]
        series = {}
        for key, label in keys.items():
            points = [(m["step"], m[key]) for m in metrics if key in m]
            if points:
                series[label] = ([x for x, _ in points], [y for _, y in points])
        if not series:
            return None
        title = f"{self.path.name}: {', '.join(series)}"
        if len(title) > 80:  # the legend names the curves; a title that long would be cut off
            title = f"{self.path.name}: {name.removesuffix('.png')}"
        return plot_series(self.path / name, series, title, "optimizer step", ylabel)

    def read_metrics(self) -> list[dict]:
        return metric_rows(self.metrics_file)


def metric_rows(path: Path) -> list[dict]:
    """The complete rows of a metrics.jsonl: a line that does not parse (torn by a kill, or still being appended)
    is left out. The one reader of that file for plots, resume, and the studio."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


@contextmanager
def built_aside(target: str | Path):
    """A whole output directory that appears at once: yields a sibling temp directory to fill; when the block ends it
    is renamed to `target` (absent or empty), and if the block fails it is removed, so `target` is never half-written.
    (RunDir.save_final does the same for one entry inside a run directory that already exists.)"""
    target = Path(target)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if target.exists():
            target.rmdir()  # empty: the rename needs the name free
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_checkpoint(checkpoint: Path, older: list[Path] = ()) -> None:
    """A checkpoint to resume from has a trainer_state.json that is a JSON object (a damaged one would fail deep
    inside the Trainer). `older`: the run's earlier complete checkpoints, offered in the hint."""
    hint = f"resume from an older one: --resume {older[-1]}" if older else "start a new run (this run has no other checkpoint)"
    state = checkpoint / "trainer_state.json"
    try:
        data = json.loads(state.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise TunesmithError("cannot resume: trainer_state.json is damaged (not valid JSON)", where=str(state), hint=hint) from None
    except OSError as exc:
        raise TunesmithError(f"cannot resume: cannot read trainer_state.json: {exc.strerror}", where=str(state), hint=hint) from None
    if not isinstance(data, dict):
        raise TunesmithError(f"cannot resume: trainer_state.json holds a JSON {type(data).__name__}, not a Trainer's state", where=str(state), hint=hint)


def find_resume_point(path: str) -> tuple[RunDir, Path]:
    """`--resume` takes a run directory (its newest complete checkpoint) or one checkpoint directory."""
    p = Path(path)
    if CHECKPOINT.match(p.name) and p.is_dir():
        if not (p / "trainer_state.json").is_file():
            raise TunesmithError(
                f"'{p}' is an incomplete checkpoint (no trainer_state.json)", hint="resume from the run directory to take the newest complete one"
            )
        if not RunDir.is_complete(p):
            raise TunesmithError(
                f"cannot resume: '{p}' was cut off while being saved",
                hint=f"resume from the run directory to take the newest complete checkpoint: --resume {p.parent}",
            )
        run = RunDir(p.parent)
        checkpoint = p
        older = [c for n, c in run.checkpoints() if n < int(CHECKPOINT.match(p.name).group(1))]
    else:
        run = RunDir(p)
        if not p.exists():
            raise TunesmithError(f"cannot resume: '{p}' does not exist", hint="pass a run directory (runs/sft-...) or one of its checkpoint-N directories")
        if not p.is_dir():
            raise TunesmithError(
                f"cannot resume: '{p}' is a file, not a run directory", hint="pass a run directory (runs/sft-...) or one of its checkpoint-N directories"
            )
        if not run.recipe_file.is_file():
            raise TunesmithError(
                f"cannot resume: '{p}' has no recipe.yaml, so it is not a tunesmith run directory",
                hint="pass the directory a tunesmith training command wrote (runs/<stage>-<time>)",
            )
        complete = run.checkpoints()
        if not complete:
            raise TunesmithError(
                f"cannot resume: '{p}' has no complete checkpoint", hint="checkpoints are written per training.save_strategy; start a new run instead"
            )
        checkpoint = complete[-1][1]
        older = [c for _, c in complete[:-1]]
    if not run.recipe_file.is_file():
        raise TunesmithError(
            f"cannot resume: '{run.path}' has no recipe.yaml, so it is not a tunesmith run directory",
            hint="pass the directory a tunesmith training command wrote (runs/<stage>-<time>)",
        )
    check_checkpoint(checkpoint, older)
    return run, checkpoint
