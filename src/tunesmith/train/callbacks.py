"""Trainer callbacks every method uses: metrics to JSONL, progress on screen, a NaN guard."""

from __future__ import annotations

import json
import math
import sys
import time

from transformers import TrainerCallback

from tunesmith.errors import TrainingError


class MetricsLog(TrainerCallback):
    """Append every log event to <run>/metrics.jsonl, with step, epoch and real tokens/s.

    On resume, entries after the checkpoint's step are dropped first, so the file stays one
    consistent curve.
    """

    def __init__(self, path, resume_step: int | None = None):
        self.path = path
        self._t0 = None
        self._tokens0 = 0
        if resume_step is not None and path.is_file():
            kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            path.write_text("".join(f"{line}\n" for line in kept))

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
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")


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
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self._bar = Bar(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=self.console)
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
