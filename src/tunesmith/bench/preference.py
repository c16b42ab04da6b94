"""KTO and ORPO speed: the plain TRL script of each (`KTOTrainer`, `trl.experimental.orpo.ORPOTrainer`) against
tunesmith's `stage: kto` / `stage: orpo`, on the same job. (DPO has its own bench, bench/dpo.py, with token counts.)

The job (`Job`) fixes what both sides train: the embedded SmolLM2, the stage's built-in data (`pirate-kto`: answers
labelled desirable or not; `pirate-pairs` for ORPO), rows in the same order, LoRA r=16 / alpha 32 / dropout 0 on
q_proj and v_proj, optimizer steps, batch, gradient accumulation, max_length, learning rate and schedule, beta, seed.
Everything else is each side's own: the baseline takes the TRL config's defaults (on a CPU: fp32 weights, bf16
autocast, gradient checkpointing; `bf16=False` where bf16 is emulated, measure.tuned_precision), tunesmith its own.

The figure is optimizer steps per second over steps 2..N: both sides train the same examples in every step, so
the ratio of steps/s is the ratio of work done per second. The loss curves are compared step by step.
"""

from __future__ import annotations

import importlib
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field

from tunesmith.bench.measure import (
    baseline_arguments,
    baseline_model,
    job_recipe,
    median,
    peak_rss_mb,
    run_recipe,
    side_settings,
    trainer_meter,
    tuned_precision,
)

SIDES = ("baseline", "tunesmith")
STAGES = {  # stage: (TRL module, trainer, config, built-in dataset)
    "kto": ("trl", "KTOTrainer", "KTOConfig", "pirate-kto"),
    "orpo": ("trl.experimental.orpo", "ORPOTrainer", "ORPOConfig", "pirate-pairs"),
}
TARGETS = {"speed_ratio": 2.0, "loss_tolerance": 0.02}


@dataclass
class Job:
    stage: str = "kto"
    steps: int = 5
    batch_size: int = 4  # KTO: answers per micro-batch; ORPO: pairs (8 sequences)
    gradient_accumulation_steps: int = 2
    max_length: int = 512
    learning_rate: float = 5e-4
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    beta: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0  # both trainers turn dropout off by default anyway
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    seed: int = 42


def stage_rows(job: Job, tokenizer):
    """The stage's built-in rows, exactly as the TRL trainer takes them (same order on both sides)."""
    from tunesmith.data.preference import prepare_preference_data

    return prepare_preference_data(STAGES[job.stage][3], tokenizer, stage=job.stage).dataset


def run_baseline(job: Job, output_dir: str, meter) -> dict:
    """The LoRA script of the stage's TRL docs, plus the job's fixed settings."""
    import torch
    from transformers import set_seed

    module, trainer_name, config_name, _ = STAGES[job.stage]
    trl = importlib.import_module(module)
    set_seed(job.seed)
    model, tokenizer, peft_config = baseline_model(job)
    args = getattr(trl, config_name)(**baseline_arguments(job, output_dir, use_cpu=not torch.cuda.is_available()), **tuned_precision(), beta=job.beta)
    trainer = getattr(trl, trainer_name)(
        model=model, args=args, train_dataset=stage_rows(job, tokenizer), processing_class=tokenizer, peft_config=peft_config, callbacks=[meter]
    )
    trainer.train()
    return side_settings(meter)


def run_tunesmith(job: Job, output_dir: str, meter) -> dict:
    overrides = {**job_recipe(job, output_dir), "stage": job.stage, "data.dataset": STAGES[job.stage][3], f"{job.stage}.beta": job.beta}
    run_recipe(overrides, meter)
    return side_settings(meter)


def run_side(side: str, job: Job) -> dict:
    """Train one side once in this process; its figures (seconds per optimizer step over steps 2..N, peak memory, losses)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    started = time.perf_counter()
    meter = trainer_meter()
    with tempfile.TemporaryDirectory(prefix=f"bench-{job.stage}-{side}-") as tmp:
        settings = (run_baseline if side == "baseline" else run_tunesmith)(job, tmp, meter)
    figures = meter.figures()
    figures.update(
        side=side,
        settings=settings,
        steps_per_s=1 / figures["seconds_per_step"] if figures["seconds_per_step"] else None,
        peak_rss_mb=peak_rss_mb(),
        process_seconds=time.perf_counter() - started,
    )
    return figures


def summarise(job: Job, runs: dict[str, list[dict]]) -> dict:
    sides = {}
    for side, figures in runs.items():
        sides[side] = {
            "steps_per_s": median([f["steps_per_s"] for f in figures]),
            "seconds_per_step": median([f["seconds_per_step"] for f in figures]),
            "peak_rss_mb": median([f["peak_rss_mb"] for f in figures]),
            "losses": figures[0]["losses"],
            "settings": figures[0]["settings"],
            "runs": [{k: f.get(k) for k in ("steps_per_s", "seconds_per_step", "peak_rss_mb", "losses", "process_seconds")} for f in figures],
        }
    ours, base = sides["tunesmith"], sides["baseline"]
    gaps = [abs(a - b) / abs(b) for a, b in zip(ours["losses"], base["losses"]) if b]
    gap = max(gaps) if gaps and len(ours["losses"]) == len(base["losses"]) else None
    ratio = ours["steps_per_s"] / base["steps_per_s"]
    return {
        "benchmark": job.stage,
        "job": asdict(job),
        "repeats": len(runs["baseline"]),
        "timed": f"optimizer steps 2..{job.steps} (step 1 holds one-off warm-up)",
        "sides": sides,
        "speed_ratio": ratio,
        "memory_ratio": ours["peak_rss_mb"] / base["peak_rss_mb"],
        "loss_curve_max_gap": gap,
        "targets": {
            f"optimizer steps/s >= {TARGETS['speed_ratio']:g}x the baseline": ratio >= TARGETS["speed_ratio"],
            "peak memory <= 0.9x the baseline": ours["peak_rss_mb"] <= 0.9 * base["peak_rss_mb"],
            "loss within 2% at every step": gap is not None and gap <= TARGETS["loss_tolerance"],
        },
    }


def run_line(i: int, repeats: int, side: str, f: dict) -> str:
    return f"run {i + 1}/{repeats} {side}: {f['seconds_per_step']:.2f} s/step, peak {f['peak_rss_mb']:.0f} MB, final loss {f['final_loss']:.4f} ({f['process_seconds']:.0f} s)"


def compare(job: Job, repeats: int = 3, progress=lambda message: None) -> dict:
    """Both sides, `repeats` times each, alternating A B A B; medians, ratios and the targets they meet."""
    from tunesmith.bench.worker import alternate

    return summarise(job, alternate("preference", job, SIDES, repeats, progress, lambda i, side, f: run_line(i, repeats, side, f)))


def report_lines(report: dict) -> list[str]:
    s, job = report["sides"], report["job"]
    lines = [
        f"job: {job['stage']} on {STAGES[job['stage']][3]}, {job['steps']} steps x {job['batch_size']} x {job['gradient_accumulation_steps']} accumulation, "
        f"max_length {job['max_length']}, lr {job['learning_rate']:g} {job['lr_scheduler_type']}, beta {job['beta']:g}, LoRA r={job['lora_r']} on "
        f"{','.join(job['target_modules'])}, seed {job['seed']}; timed {report['timed']}, median of {report['repeats']}"
    ]
    for name in SIDES:
        side = s[name]
        settings = ", ".join(f"{k} {v}" for k, v in side["settings"].items())
        lines.append(f"{name:9} {side['steps_per_s']:.3f} steps/s ({side['seconds_per_step']:.2f} s/step)  peak {side['peak_rss_mb']:6.0f} MB  ({settings})")
    lines.append(
        "loss per step  "
        + "  ".join(f"{i + 1}: {b:.4f}/{o:.4f}" for i, (b, o) in enumerate(zip(s["baseline"]["losses"], s["tunesmith"]["losses"])))
        + "  (baseline/tunesmith)"
    )
    gap = report["loss_curve_max_gap"]
    lines.append(f"memory tunesmith/baseline {report['memory_ratio']:.2f}; largest loss gap {'n/a' if gap is None else f'{gap:.2%}'}")
    return lines
