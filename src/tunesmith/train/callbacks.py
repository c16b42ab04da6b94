"""Trainer callbacks every method uses: metrics to JSONL, progress on screen, a NaN guard; and the checkpoint guard
(a checkpoint counts only once all of it is written) with the crash tests' fault points."""

from __future__ import annotations

import json
import math
import os
import sys
import time

from transformers import TrainerCallback

from tunesmith.errors import TrainingError
from tunesmith.runs.faults import ENV as FAULT_ENV
from tunesmith.runs.faults import fault_point, torn_write
from tunesmith.runs.rundir import metric_rows


def _rewritten(row: dict) -> bool:
    """Rows a resumed run writes again even when it resumes from the last step: the end-of-run eval (final) and
    transformers' end-of-training summary (train_loss, the mean over the run, with no per-step loss)."""
    return bool(row.get("final")) or ("train_loss" in row and "loss" not in row)


class MetricsLog(TrainerCallback):
    """Append every log event to <run>/metrics.jsonl, with step, epoch and real tokens/s.

    On resume, entries after the checkpoint's step (and the killed run's end-of-run eval row, which the resumed
    run writes again) are dropped first, so the file stays one consistent curve. The kept rows replace the file
    atomically (a kill while rewriting never loses the rows before the checkpoint), and a torn last line is dropped.
    """

    def __init__(self, path, resume_step: int | None = None):
        self.path = path
        self._t0 = None
        self._tokens0 = 0
        if resume_step is not None and path.is_file():
            kept = [row for row in metric_rows(path) if row.get("step", 0) <= resume_step and not _rewritten(row)]  # a torn last line is dropped
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
            fault_point("metrics-rewrite")
            os.replace(tmp, path)

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()
        self._tokens0 = state.num_input_tokens_seen

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        elapsed = time.perf_counter() - (self._t0 or time.perf_counter())
        if state.num_input_tokens_seen and elapsed > 0:
            record["tokens_per_second"] = round((state.num_input_tokens_seen - self._tokens0) / elapsed, 1)
        record["time"] = round(time.time(), 3)
        line = json.dumps(record) + "\n"
        if not torn_write("metrics-line", self.path, line, mode="a"):
            with open(self.path, "a") as fh:
                fh.write(line)


class NanGuard(TrainerCallback):
    """Stop at the first non-finite loss instead of training on into a NaN model."""

    def __init__(self, precision: str):
        self.precision = precision
        self.failed_at: int | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.failed_at = state.global_step
            control.should_training_stop = True
            control.should_save = False

    def check(self) -> None:
        if self.failed_at is None:
            return
        if self.precision == "fp16":
            raise TrainingError(
                f"the loss became inf/NaN at step {self.failed_at}: fp16 overflowed (its largest value is 65504)",
                hint="train in bf16 (precision: bf16 on GPUs with compute capability >= 8) or fp32, or lower training.learning_rate",
            )
        raise TrainingError(
            f"the loss became inf/NaN at step {self.failed_at}",
            hint="lower training.learning_rate, raise warmup, or check the data for empty/garbled examples",
        )


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress(TrainerCallback):
    """A live bar (steps, loss, lr, tokens/s, ETA) on a terminal; one plain line per log event otherwise."""

    def __init__(self, console=None, live: bool | None = None, metrics: tuple[str, ...] = ()):
        from rich.console import Console

        self.metrics = metrics  # a stage's own logged values (e.g. DPO's rewards/margins), shown after the loss
        self.console = console or Console(stderr=False)
        self.live = sys.stdout.isatty() if live is None else live
        self._bar = None
        self._t0 = 0.0
        self._start_step = 0
        self._last = {}

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()
        self._start_step = state.global_step
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(
                TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console
            )
            self._bar.start()
            self._task = self._bar.add_task("train", total=state.max_steps, completed=state.global_step, info="")

    def _info(self, state) -> str:
        parts = []
        if "loss" in self._last:
            parts.append(f"loss {self._last['loss']:.4f}")
        for key in self.metrics:
            if key in self._last:
                parts.append(f"{key.split('/')[-1]} {self._last[key]:.3f}")
        if "learning_rate" in self._last:
            parts.append(f"lr {self._last['learning_rate']:.2e}")
        elapsed = time.perf_counter() - self._t0
        if state.num_input_tokens_seen and elapsed > 0:
            parts.append(f"{state.num_input_tokens_seen / elapsed:,.0f} tok/s")
        return "  ".join(parts)

    def on_step_end(self, args, state, control, **kwargs):
        if self._bar:
            self._bar.update(self._task, completed=state.global_step, info=self._info(state))

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs and "eval_loss" not in logs:
            return
        self._last.update({k: v for k, v in logs.items() if k in ("loss", "learning_rate", *self.metrics)})
        if self._bar:
            self._bar.update(self._task, info=self._info(state))
            if "eval_loss" in logs:
                self._bar.console.print(f"step {state.global_step}: eval loss {logs['eval_loss']:.4f}")
            return
        done = state.global_step - self._start_step
        elapsed = time.perf_counter() - self._t0
        eta = elapsed / done * (state.max_steps - state.global_step) if done else 0.0
        if "eval_loss" in logs:
            self.console.print(f"step {state.global_step}/{state.max_steps}  eval loss {logs['eval_loss']:.4f}", highlight=False)
        else:
            self.console.print(f"step {state.global_step}/{state.max_steps}  {self._info(state)}  eta {_fmt_time(eta)}", highlight=False, soft_wrap=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self._bar:
            self._bar.stop()
            self._bar = None


# ---------------------------------------------------------------- checkpoints


def guard_checkpoints(trainer, run, is_main: bool = True) -> None:
    """A checkpoint counts for resume only once every file of it is written (RunDir.checkpoints).

    transformers writes trainer_state.json last, but a kill while it is being written leaves a torn one, a save into
    an existing checkpoint-N directory (resuming from an older checkpoint) finds the old trainer_state.json there, and
    with several processes the main one writes it before the others' RNG files. So while `_save_checkpoint` runs the
    directory holds RunDir.SAVING; an incomplete leftover of the same step (a killed save) is removed first; the
    marker goes once every process is done; only then are older checkpoints rotated away (transformers would rotate
    before: a kill then could leave the only checkpoints an incomplete new one and a half-deleted old one).
    """
    from transformers.trainer_utils import rotate_checkpoints

    if not hasattr(trainer, "_save_checkpoint"):
        return
    original = trainer._save_checkpoint

    def save_checkpoint(model, trial=None, *args, **kwargs):
        folder = run.path / f"checkpoint-{trainer.state.global_step}"
        if is_main:
            run.begin_checkpoint(folder)
        trainer.accelerator.wait_for_everyone()  # the others write into the folder only once it is marked
        limit = trainer.args.save_total_limit
        trainer.args.save_total_limit = None  # rotation waits until this checkpoint is complete
        try:
            original(model, trial, *args, **kwargs)
        finally:
            trainer.args.save_total_limit = limit
        trainer.accelerator.wait_for_everyone()
        if is_main:
            run.end_checkpoint(folder)
            fault_point("checkpoint-saved")
            if trainer.args.should_save:
                rotate_checkpoints(output_dir=str(run.path), save_total_limit=limit, best_model_checkpoint=trainer.state.best_model_checkpoint, use_mtime=True)

    trainer._save_checkpoint = save_checkpoint


def no_step_past_the_end(trainer) -> None:
    """Resumed from a checkpoint at the last step (killed while writing the final model, or just after), transformers
    5 still runs one more optimizer step: its epoch loop only checks max_steps after a step. Here an epoch that starts
    with the training already done trains nothing, so the run ends exactly where the uninterrupted one did."""
    if not hasattr(trainer, "_run_epoch"):
        return
    original = trainer._run_epoch

    def run_epoch(*args, **kwargs):
        if trainer.state.max_steps > 0 and trainer.state.global_step >= trainer.state.max_steps:
            return None
        return original(*args, **kwargs)

    trainer._run_epoch = run_epoch


class FaultSteps(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        fault_point("step")


def arm_faults(trainer) -> None:
    """With TUNESMITH_FAULT set (crash tests only, see runs/faults.py): the fault points inside a checkpoint save."""
    if not os.environ.get(FAULT_ENV):
        return
    from transformers.trainer_callback import TrainerState

    trainer.add_callback(FaultSteps())
    for method, point in (("_save_optimizer_and_scheduler", "checkpoint-weights"), ("_save_rng_state", "checkpoint-rng")):
        original = getattr(trainer, method)

        def wrapped(*args, _original=original, _point=point, **kwargs):
            fault_point(_point)
            return _original(*args, **kwargs)

        setattr(trainer, method, wrapped)
    save_to_json = TrainerState.save_to_json

    def torn_state(self, json_path):
        import dataclasses

        text = json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"
        if not torn_write("checkpoint-state", json_path, text):
            save_to_json(self, json_path)

    TrainerState.save_to_json = torn_state
