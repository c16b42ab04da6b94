"""Fine-tuning speed: a plain TRL script against `tunesmith sft`, on the same job, in separate processes.

The job (`Job`) fixes what both sides train: the embedded SmolLM2, the built-in pirate chats
(loss on the assistant replies), LoRA r=16 / alpha 32 / dropout 0.05 on q_proj and v_proj, the same
optimizer steps, batch, max_length, learning rate and schedule. Everything else is each side's own:

- baseline: what TRL's docs show, with SFTConfig's defaults for everything the job does not fix
  (on a CPU that is: fp32 weights, bf16 autocast, gradient checkpointing, padded batches);
- tunesmith: `run_sft` with tunesmith's defaults.

Each run is a fresh `python -m tunesmith.bench.worker` process (its peak memory is its own, nothing
warm carries over) and runs alternate A B A B...; the report gives medians.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunesmith.bench.measure import baseline_arguments, baseline_model, batch_counter, job_recipe, matmul_peak, median, peak_rss_mb, run_recipe, side_settings, trainer_meter, training_flops

SIDES = ("baseline", "tunesmith")


@dataclass
class Job:
    steps: int = 5
    batch_size: int = 8
    gradient_accumulation_steps: int = 2
    max_length: int = 512
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    seed: int = 42


def pirate_prompt_completion():
    """The built-in pirate chats as TRL's conversational prompt/completion rows (TRL then trains on the completion only)."""
    from datasets import Dataset

    from tunesmith.data.readers import BUILTIN_DATASETS

    rows = [json.loads(line) for line in Path(BUILTIN_DATASETS["pirate"]).read_text().splitlines() if line.strip()]
    return Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])


def run_baseline(job: Job, output_dir: str, meter) -> dict:
    """The script a TRL user writes (the docs' LoRA example), plus the job's fixed settings."""
    import torch
    from trl import SFTConfig, SFTTrainer

    model, tokenizer, peft_config = baseline_model(job)
    args = SFTConfig(**baseline_arguments(job, output_dir, use_cpu=not torch.cuda.is_available()))
    trainer = SFTTrainer(model=model, args=args, train_dataset=pirate_prompt_completion(), processing_class=tokenizer, peft_config=peft_config, callbacks=[meter])
    trainer.train()
    return settings_of(meter)


def run_tunesmith(job: Job, output_dir: str, meter) -> dict:
    """`tunesmith sft` with its defaults, on the job's settings."""
    run_recipe(job_recipe(job, output_dir), meter)
    return settings_of(meter)


def settings_of(meter) -> dict:
    return side_settings(meter, packing=True, padding_free=True)


def run_side(side: str, job: Job) -> dict:
    """Train one side once in this process; its figures (tokens/s over steps 2..N, peak memory, losses, FLOPs)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    meter, counter = trainer_meter(), batch_counter()
    with tempfile.TemporaryDirectory(prefix=f"bench-{side}-") as tmp:
        settings = (run_baseline if side == "baseline" else run_tunesmith)(job, tmp, meter)
    figures = meter.figures()
    model = meter.model
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    lengths, scored = counter.since(step=1)  # the timed window: steps 2..N
    flops = training_flops(model.config, lora, lengths, scored)
    figures.update(
        side=side,
        peak_rss_mb=peak_rss_mb(),
        settings=settings,
        timed_real_tokens=sum(lengths),
        timed_scored_tokens=scored,
        timed_flops=flops,
        gflops_per_s=flops / figures["timed_seconds"] / 1e9 if figures["timed_seconds"] else None,
        threads=torch.get_num_threads(),
    )
    return figures


TARGETS = {"speed_ratio": 2.5, "mfu": 0.5, "loss_tolerance": 0.02}


def compare(job: Job, repeats: int = 3, progress=lambda message: None) -> dict:
    """Both sides, `repeats` times each, alternating; medians, ratios and the targets they meet.

    The bf16 matmul peak is measured in this process first (the workers then have the machine to themselves).
    """
    from tunesmith.bench.worker import alternate

    peak = matmul_peak()
    progress(f"bf16 matmul peak {peak:.0f} GFLOP/s")
    runs = alternate("sft", job, SIDES, repeats, progress, lambda i, side, f: f"run {i + 1}/{repeats} {side}: {f['tokens_per_s']:.0f} tokens/s, peak {f['peak_rss_mb']:.0f} MB, final loss {f['final_loss']:.4f}")
    sides = {}
    for side, figures in runs.items():
        gflops = median([f["gflops_per_s"] for f in figures])
        sides[side] = {
            "tokens_per_s": median([f["tokens_per_s"] for f in figures]),
            "peak_rss_mb": median([f["peak_rss_mb"] for f in figures]),
            "final_loss": median([f["final_loss"] for f in figures]),
            "gflops_per_s": gflops,
            "mfu": gflops / peak,
            "settings": figures[0]["settings"],
            "runs": [{k: f[k] for k in ("tokens_per_s", "peak_rss_mb", "final_loss", "losses", "gflops_per_s", "timed_real_tokens", "timed_scored_tokens", "timed_seconds")} for f in figures],
        }
    ours, base = sides["tunesmith"], sides["baseline"]
    ratio = ours["tokens_per_s"] / base["tokens_per_s"]
    loss_gap = abs(ours["final_loss"] - base["final_loss"]) / base["final_loss"]
    # the whole curve, step by step (same batches on both sides; each side's runs log the same losses)
    curve_gap = max(abs(a - b) / b for a, b in zip(runs["tunesmith"][0]["losses"], runs["baseline"][0]["losses"]))
    return {
        "benchmark": "sft",
        "job": asdict(job),
        "repeats": repeats,
        "timed": f"optimizer steps 2..{job.steps} (step 1 holds one-off warm-up)",
        "matmul_peak_gflops": peak,
        "sides": sides,
        "speed_ratio": ratio,
        "memory_ratio": ours["peak_rss_mb"] / base["peak_rss_mb"],
        "final_loss_gap": loss_gap,
        "loss_curve_max_gap": curve_gap,
        "targets": {
            "speed_ratio >= 2.5": ratio >= TARGETS["speed_ratio"],
            "peak memory <= baseline": ours["peak_rss_mb"] <= base["peak_rss_mb"],
            "final loss within 2%": loss_gap <= TARGETS["loss_tolerance"],
            "loss within 2% at every step": curve_gap <= TARGETS["loss_tolerance"],
            "MFU >= 50% of bf16 matmul peak": ours["mfu"] >= TARGETS["mfu"],
        },
    }
