"""Preference-training speed: a plain TRL `DPOTrainer` script against `tunesmith`'s `stage: dpo`, on the same job.

The job (`Job`) fixes what both sides train: the embedded SmolLM2, the built-in `pirate-pairs` (conversational
prompt/chosen/rejected rows, in the same order), LoRA r=16 / alpha 32 / dropout 0 on q_proj and v_proj, the same
optimizer steps, batch of pairs, gradient accumulation, max_length, learning rate and schedule, beta and seed.
Everything else is each side's own:

- baseline: the LoRA script of TRL's DPO docs, with DPOConfig's defaults for everything the job does not fix
  (on a CPU: fp32 weights, bf16 autocast, gradient checkpointing, sdpa attention; the reference is the policy
  with its adapter disabled). On a CPU without fast bf16 it sets `bf16=False`, as an informed user would
  there (measure.tuned_precision): TRL's bf16 autocast would run emulated kernels, ~15x slower;
- tunesmith: `run_stage` on a `stage: dpo` recipe with tunesmith's defaults (train/speed.py).

Each run is a fresh `python -m tunesmith.bench.worker dpo <side>` process and runs alternate A B A B...; the
report gives medians. Real tokens are the non-padding tokens of the chosen and the rejected sequences
(prompt included: both are run through the policy and the reference).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass, field

from tunesmith.bench.measure import (
    adapter_parameters,
    baseline_arguments,
    baseline_model,
    batch_counter,
    bench_peak,
    job_recipe,
    median,
    peak_lines,
    peak_rss_mb,
    reference_flops,
    repeated_prompt_flops,
    run_recipe,
    side_settings,
    trainer_meter,
    training_flops,
    tuned_precision,
)

SIDES = ("baseline", "tunesmith")
DATASET = "pirate-pairs"
TARGETS = {"speed_ratio": 2.0, "loss_tolerance": 0.02}


@dataclass
class Job:
    steps: int = 5
    batch_size: int = 4  # pairs per micro-batch: 8 sequences (chosen + rejected) through the model
    gradient_accumulation_steps: int = 2
    max_length: int = 512
    learning_rate: float = 5e-4
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    beta: float = 0.1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0  # DPOConfig's disable_dropout is on anyway; 0 on both sides keeps the steps comparable
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    seed: int = 42
    precompute_ref_log_probs: bool | None = None  # None: each side's default (False in both); for experiments
    attn_implementation: str | None = None  # tunesmith side only: None = tunesmith's choice; for experiments
    precision: str | None = None  # tunesmith side only (model.precision): None = auto; fp32 gives an unrounded loss curve


def pirate_pairs(tokenizer):
    """The built-in preference pairs, rows exactly as TRL's DPOTrainer takes them (same order on both sides)."""
    from tunesmith.data.preference import prepare_preference_data

    return prepare_preference_data(DATASET, tokenizer, stage="dpo").dataset


def baseline_config(job: Job, output_dir: str, use_cpu: bool) -> dict:
    """DPOConfig arguments of the baseline script: the job's settings, logging, nothing else."""
    args = {**baseline_arguments(job, output_dir, use_cpu), **tuned_precision(), "beta": job.beta}
    if job.precompute_ref_log_probs is not None:
        args["precompute_ref_log_probs"] = job.precompute_ref_log_probs
    return args


def tunesmith_overrides(job: Job, output_dir: str) -> dict:
    """The `stage: dpo` recipe of the tunesmith side, as overrides of tunesmith's defaults."""
    overrides = {**job_recipe(job, output_dir), "stage": "dpo", "data.dataset": DATASET, "dpo.beta": job.beta}
    if job.precompute_ref_log_probs is not None:
        overrides["dpo.precompute_ref_log_probs"] = job.precompute_ref_log_probs
    if job.attn_implementation is not None:
        overrides["model.attn_implementation"] = job.attn_implementation
    if job.precision is not None:
        overrides["model.precision"] = job.precision
    return overrides


def run_baseline(job: Job, output_dir: str, meter) -> dict:
    """The script a TRL user writes (the DPO docs' LoRA example), plus the job's fixed settings."""
    import torch
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    set_seed(job.seed)  # the job's seed, before the adapter is initialised (tunesmith seeds there too)
    model, tokenizer, peft_config = baseline_model(job)
    args = DPOConfig(**baseline_config(job, output_dir, use_cpu=not torch.cuda.is_available()))
    trainer = DPOTrainer(model=model, args=args, train_dataset=pirate_pairs(tokenizer), processing_class=tokenizer, peft_config=peft_config, callbacks=[meter])
    trainer.train()
    return settings_of(meter)


def run_tunesmith(job: Job, output_dir: str, meter) -> dict:
    """`run_stage` on a `stage: dpo` recipe with tunesmith's defaults, on the job's settings."""
    run_recipe(tunesmith_overrides(job, output_dir), meter)
    return settings_of(meter)


def settings_of(meter) -> dict:
    return side_settings(meter, precompute_ref_log_probs=True)


def run_side(side: str, job: Job) -> dict:
    """Train one side once in this process; its figures (tokens/s over steps 2..N, peak memory, losses)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from trl import DPOTrainer

    started = time.perf_counter()
    meter, counter = trainer_meter(), batch_counter(DPOTrainer)
    with tempfile.TemporaryDirectory(prefix=f"bench-dpo-{side}-") as tmp:
        settings = (run_baseline if side == "baseline" else run_tunesmith)(job, tmp, meter)
    figures = meter.figures()
    lengths, scored = counter.since(step=1)  # the timed window: steps 2..N
    positions = counter.positions_since(step=1)
    # the work the timed steps did, counted as bench sft counts it: the policy's forward and backward over chosen and
    # rejected, and the reference's forward where it was not precomputed before training; each pair's prompt once
    config, lora, reference = meter.model.config, adapter_parameters(meter.model), not settings.get("precompute_ref_log_probs")
    flops = training_flops(config, lora, lengths, scored) + (reference_flops(config, lengths, scored) if reference else 0.0)
    flops -= repeated_prompt_flops(config, lora, counter.repeated_prompts_since(step=1), reference)
    figures.update(
        timed_flops=flops,
        gflops_per_s=flops / figures["timed_seconds"] / 1e9 if figures["timed_seconds"] else None,
        side=side,
        peak_rss_mb=peak_rss_mb(),
        settings=settings,
        timed_real_tokens=sum(lengths),
        timed_padded_positions=positions,
        all_real_tokens=sum(counter.since(step=0)[0]),
        train_seconds=meter.train_seconds(),
        process_seconds=time.perf_counter() - started,
        threads=torch.get_num_threads(),
    )
    return figures


# ---------------------------------------------------------------- the comparison


def step_gaps(ours: list[float], base: list[float]) -> list[float]:
    """Relative loss gap at every logged step, |ours - base| / |base| (same steps, same batches)."""
    if len(ours) != len(base):
        raise ValueError(f"the sides logged {len(ours)} and {len(base)} losses; the runs did not train the same steps")
    return [abs(a - b) / abs(b) for a, b in zip(ours, base)]


def summarise(job: Job, runs: dict[str, list[dict]], peak: dict | None = None) -> dict:
    """Medians per side, the ratios, the loss curves side by side and the targets they meet; with `peak` (the matmul
    peak in tunesmith's precision, GFLOP/s), each side's fraction of it."""
    sides = {}
    for side, figures in runs.items():
        gflops = median([f["gflops_per_s"] for f in figures if f.get("gflops_per_s") is not None])
        sides[side] = {
            "gflops_per_s": gflops,
            "mfu": gflops / peak["gflops"] if peak and gflops else None,
            "tokens_per_s": median([f["tokens_per_s"] for f in figures]),
            "seconds_per_step": median([f["seconds_per_step"] for f in figures]),
            "peak_rss_mb": median([f["peak_rss_mb"] for f in figures]),
            "final_loss": median([f["final_loss"] for f in figures]),
            "process_seconds": median([f["process_seconds"] for f in figures]),
            "settings": figures[0]["settings"],
            "runs": [
                {
                    k: f[k]
                    for k in (
                        "tokens_per_s",
                        "seconds_per_step",
                        "peak_rss_mb",
                        "final_loss",
                        "losses",
                        "timed_real_tokens",
                        "timed_padded_positions",
                        "timed_flops",
                        "gflops_per_s",
                        "all_real_tokens",
                        "timed_seconds",
                        "train_seconds",
                        "process_seconds",
                        "peak_rss_mb_by",
                    )
                }
                for f in figures
            ],
        }
    ours, base = sides["tunesmith"], sides["baseline"]
    ratio = ours["tokens_per_s"] / base["tokens_per_s"]
    # the whole curve, step by step, first run of each side (each side's runs log the same losses)
    base_losses, our_losses = runs["baseline"][0]["losses"], runs["tunesmith"][0]["losses"]
    gaps = step_gaps(our_losses, base_losses)
    worst = max(range(len(gaps)), key=gaps.__getitem__)
    same_batches = all(f["all_real_tokens"] == runs["baseline"][0]["all_real_tokens"] for fs in runs.values() for f in fs)
    return {
        "benchmark": "dpo",
        "job": asdict(job),
        "repeats": len(runs["baseline"]),
        "timed": f"optimizer steps 2..{job.steps} (step 1 holds one-off warm-up)",
        "matmul_peak_gflops": peak["gflops"] if peak else None,
        "matmul_peak_dtype": peak["dtype"] if peak else None,
        "sides": sides,
        "same_batches": same_batches,
        "speed_ratio": ratio,
        "memory_ratio": ours["peak_rss_mb"] / base["peak_rss_mb"],
        "loss_curve": {"baseline": base_losses, "tunesmith": our_losses, "relative_gap": gaps},
        "loss_curve_max_gap": gaps[worst],
        "loss_curve_max_gap_step": worst + 1,
        "targets": {
            f"speed ratio >= {TARGETS['speed_ratio']:g}": ratio >= TARGETS["speed_ratio"],
            "peak memory <= baseline": ours["peak_rss_mb"] <= base["peak_rss_mb"],
            "loss within 2% at every step": gaps[worst] <= TARGETS["loss_tolerance"],
        },
    }


def run_line(i: int, repeats: int, side: str, figures: dict) -> str:
    """The progress line printed after each run."""
    return (
        f"run {i + 1}/{repeats} {side}: {figures['tokens_per_s']:.0f} real tokens/s, {figures['seconds_per_step']:.1f} s/step, "
        f"peak {figures['peak_rss_mb']:.0f} MB, final loss {figures['final_loss']:.4f} ({figures['process_seconds']:.0f} s)"
    )


def compare(job: Job, repeats: int = 3, progress=lambda message: None) -> dict:
    """Both sides, `repeats` times each, alternating A B A B; medians, ratios and the targets they meet."""
    from tunesmith.bench.worker import alternate

    peak = bench_peak(progress)
    return summarise(job, alternate("dpo", job, SIDES, repeats, progress, lambda i, side, f: run_line(i, repeats, side, f)), peak)


def report_lines(report: dict) -> list[str]:
    """The human-readable report (without the last line, the speed ratio)."""
    s, job = report["sides"], report["job"]
    lines = [
        f"job: {job['steps']} steps x {job['batch_size']} pairs x {job['gradient_accumulation_steps']} accumulation, max_length {job['max_length']}, "
        f"lr {job['learning_rate']:g} {job['lr_scheduler_type']}, beta {job['beta']:g}, LoRA r={job['lora_r']} alpha={job['lora_alpha']} "
        f"dropout={job['lora_dropout']:g} on {','.join(job['target_modules'])}, seed {job['seed']}; timed {report['timed']}, median of {report['repeats']}",
    ]
    lines += peak_lines(report, "policy forward and backward, the reference's forward where not precomputed, each pair's prompt once")
    for name in SIDES:
        side = s[name]
        run = side["runs"][0]
        settings = ", ".join(f"{k} {v}" for k, v in side["settings"].items())
        padding = 1 - run["timed_real_tokens"] / run["timed_padded_positions"] if run["timed_padded_positions"] else 0.0
        mfu = f"{side['gflops_per_s']:5.0f} GFLOP/s = {side['mfu']:.0%} of peak  " if side.get("mfu") is not None else ""
        lines.append(
            f"{name:9} {side['tokens_per_s']:7.1f} real tokens/s  {side['seconds_per_step']:5.2f} s/step  peak {side['peak_rss_mb']:6.0f} MB  {mfu}"
            f"final loss {side['final_loss']:.4f}  ({settings}; {run['timed_real_tokens']} real tokens timed, {padding:.0%} padding)"
        )
    curve = report["loss_curve"]
    lines.append(
        "loss per step  "
        + "  ".join(f"{i + 1}: {b:.4f}/{o:.4f}" for i, (b, o) in enumerate(zip(curve["baseline"], curve["tunesmith"])))
        + "  (baseline/tunesmith)"
    )
    lines.append(
        f"same batches on both sides: {'yes' if report['same_batches'] else 'NO'} (real-token counts equal); memory tunesmith/baseline {report['memory_ratio']:.2f}; "
        f"largest loss gap {report['loss_curve_max_gap']:.2%} at step {report['loss_curve_max_gap_step']}"
    )
    return lines
