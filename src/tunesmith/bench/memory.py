"""`tunesmith bench memory`: the memory `tunesmith plan` estimates against the peak a run of the same recipe reaches.

One case per stage (and SFT twice: LoRA and full), each with the recipe defaults on the embedded model and a few
optimizer steps. The estimate is `make_plan`'s total for that recipe; the measurement is the peak resident memory
of a fresh `python -m tunesmith.bench.worker memory <case>` process running it: on a CPU its peak resident memory (the
model lives in RAM, and the plan estimates RAM), on a GPU the peak device memory torch's allocator held (reserved;
the plan estimates device memory there, and the report gives what tensors allocated beside it). A thread samples the resident memory every 20 ms and tags each
sample with the run's phase (loading and the answers before training, training, the measurements after), so the
report says where the peak was.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field

from tunesmith.bench.measure import peak_rss_mb

# case -> recipe fields beyond the defaults
CASES: dict[str, dict] = {
    "sft-lora": {"stage": "sft"},
    "sft-full": {"stage": "sft", "method": "full"},
    "reward": {"stage": "reward"},
    "dpo": {"stage": "dpo"},
    "kto": {"stage": "kto"},
    "orpo": {"stage": "orpo"},
    "grpo": {"stage": "grpo"},
    "ppo": {"stage": "ppo"},
    "pretrain": {"stage": "pretrain"},
}
BOUNDS = (0.75, 1.25)  # estimate / measured peak


@dataclass
class Job:
    steps: int = 3
    cases: list[str] = field(default_factory=lambda: list(CASES))
    model: str | None = None  # default: the recipes' own (the embedded model)


def recipe_of(case: str, steps: int, output_dir: str | None = None, model: str | None = None):
    from tunesmith.recipes import load_recipe

    overrides = {**CASES[case], "training.max_steps": steps}
    if model:
        overrides["model.name"] = model
    if output_dir:
        overrides["output_dir"] = output_dir
    return load_recipe(None, overrides)


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def run_side(case: str, job: Job) -> dict:
    """Run the case's recipe; its peak resident memory, overall and per phase."""
    import sys

    import torch
    from rich.console import Console
    from transformers import TrainerCallback

    from tunesmith.train.scaffold import run_stage

    phase = {"now": "before"}
    peaks = {"before": 0.0, "train": 0.0, "after": 0.0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            peaks[phase["now"]] = max(peaks[phase["now"]], _rss_mb())
            time.sleep(0.02)

    class Phases(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            phase["now"] = "train"

        def on_train_end(self, args, state, control, **kw):
            phase["now"] = "after"

    sampler = threading.Thread(target=sample, daemon=True)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    sampler.start()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run_stage(recipe_of(case, job.steps, f"{tmp}/run", job.model), console=Console(file=sys.stderr), live=False, callbacks=[Phases()])
    done.set()
    sampler.join()
    figures = {"case": case, "peak_rss_mb": peak_rss_mb(), "phases_mb": peaks, "seconds": time.perf_counter() - started}
    if cuda:  # the plan estimates device memory there: what the allocator held at its peak, and what tensors took of it
        figures["peak_device_mb"] = torch.cuda.max_memory_reserved() / 1024**2
        figures["peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 1024**2
        figures["device"] = torch.cuda.get_device_name()
    return figures


def compare(job: Job, progress=lambda message: None) -> dict:
    from tunesmith.bench.worker import spawn
    from tunesmith.train.plan import make_plan

    rows = []
    for case in job.cases:
        plan = make_plan(recipe_of(case, job.steps, model=job.model))
        estimate = sum(plan.memory_bytes.values()) / 1024**2
        progress(f"{case}: running {job.steps} steps (estimate {estimate / 1024:.2f} GiB) ...")
        figures = spawn("memory", case, job, on_step=lambda line, case=case: progress(f"  {case}: {line}"))
        measured = figures.get("peak_device_mb", figures["peak_rss_mb"])  # what the plan estimates: device memory on a GPU
        rows.append(
            {
                **figures,
                "measured_mb": measured,
                "estimate_mb": estimate,
                "ratio": estimate / measured,
                "parts_mb": {k: v / 1024**2 for k, v in plan.memory_bytes.items()},
            }
        )
        progress(f"{case}: estimate {estimate:.0f} MiB, measured {measured:.0f} MiB, ratio {estimate / measured:.2f}")
    within = all(BOUNDS[0] <= r["ratio"] <= BOUNDS[1] for r in rows)
    worst = max(rows, key=lambda r: abs(r["ratio"] - 1.0)) if rows else None
    return {
        "job": {"steps": job.steps, "cases": job.cases, "model": job.model, "device": rows[0].get("device") if rows else None},
        "rows": rows,
        "targets": {f"every estimate within {BOUNDS[0]:.2f}-{BOUNDS[1]:.2f}x of the measured peak": within},
        "speed_ratio": worst["ratio"] if worst else 1.0,
        "headline_baseline": "measured peak (the estimate furthest from it)",
    }


def report_lines(report: dict) -> list[str]:
    job = report["job"]
    device = job.get("device")
    lines = [
        f"job: each stage's recipe defaults on {job.get('model') or 'the embedded model'}, {job['steps']} optimizer steps, one fresh process each; "
        + (f"measured: peak device memory held by torch on {device}" if device else "measured: peak resident memory (RSS)")
    ]
    if device:
        lines.append(f"{'case':10} {'estimate':>10} {'measured':>10} {'ratio':>6}  (tensors allocated at the peak, host RSS)")
    else:
        lines.append(f"{'case':10} {'estimate':>10} {'measured':>10} {'ratio':>6}  peak in    (before / train / after, MB)")
    for r in report["rows"]:
        head = f"{r['case']:10} {r['estimate_mb'] / 1024:>6.2f} GiB {r['measured_mb'] / 1024:>6.2f} GiB {r['ratio']:>6.2f}"
        if "peak_device_mb" in r:
            lines.append(f"{head}  ({r['peak_allocated_mb'] / 1024:.2f} GiB, {r['peak_rss_mb'] / 1024:.2f} GiB)")
            continue
        phases = r["phases_mb"]
        where = max(phases, key=phases.get)
        lines.append(f"{head}  {where:9}  ({phases['before']:.0f} / {phases['train']:.0f} / {phases['after']:.0f})")
    return lines
