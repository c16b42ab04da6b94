"""Continued pre-training speed: the plain TRL script on a corpus cut into blocks against `tunesmith pretrain`.

The job (`Job`) fixes what both sides train: the embedded SmolLM2, the built-in `tunesmith-docs` corpus cut into
blocks of `max_length` tokens (tunesmith's cached blocks, data/corpus.py: the same rows in the same order on both
sides), LoRA r=16 / alpha 32 / dropout 0.05 on q_proj and v_proj, optimizer steps, blocks per micro-batch, gradient
accumulation, learning rate and schedule, seed. Everything else is each side's own:

- baseline: what a TRL user writes for causal-LM training on text already cut into blocks (the `group_texts` rows of
  transformers' language-modeling guide): `SFTTrainer` on the blocks' token ids with `skip_prepare_dataset`, and
  SFTConfig's defaults for everything the job leaves open (on a CPU: fp32 weights, bf16 autocast, gradient
  checkpointing), `bf16=False` where bf16 is emulated (measure.tuned_precision). Its rows attend across the
  documents in a block and score every token, as that guide's rows do;
- tunesmith: `run_stage` on a `stage: pretrain` recipe with tunesmith's defaults: position ids restarting at each
  document (attention stays inside a document; a document's first token is not scored).

So the loss curves are close but not the same function: the report shows both, and judges speed and memory only.
The work (FLOPs) is counted alike for both sides: every block as one causal sequence (a CPU's attention kernels do
the whole square under a per-document mask too) and the LM head on the tokens each side scores.
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
    run_recipe,
    side_settings,
    trainer_meter,
    training_flops,
    tuned_precision,
)

SIDES = ("baseline", "tunesmith")
CORPUS = "tunesmith-docs"
TARGETS = {"speed_ratio": 2.0}


@dataclass
class Job:
    steps: int = 4
    batch_size: int = 2  # blocks per micro-batch (the pretrain recipe's default)
    gradient_accumulation_steps: int = 4
    max_length: int = 512  # tokens per block
    learning_rate: float = 1e-3
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    seed: int = 42


def corpus_blocks(tokenizer, block_size: int):
    """The corpus's training blocks as tunesmith cuts and caches them (the same rows both sides train on)."""
    from tunesmith.data.corpus import corpus_files, load_blocks, make_blocks, tokenize_corpus
    from tunesmith.recipes import load_recipe

    recipe = load_recipe(None, {"stage": "pretrain"})
    cache = tokenize_corpus(corpus_files(CORPUS), tokenizer, recipe.pretrain.text_field)
    return load_blocks(make_blocks(cache, block_size, recipe.pretrain.eval_blocks).train)


def run_baseline(job: Job, output_dir: str, meter) -> dict:
    import torch
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(job.seed)
    model, tokenizer, peft_config = baseline_model(job)
    rows = corpus_blocks(tokenizer, job.max_length).select_columns(["input_ids"])
    args = SFTConfig(
        **baseline_arguments(job, output_dir, use_cpu=not torch.cuda.is_available()),
        **tuned_precision(),
        dataset_kwargs={"skip_prepare_dataset": True},  # the rows are token blocks already
    )
    args.max_length = None  # blocks are cut to max_length already
    SFTTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer, peft_config=peft_config, callbacks=[meter]).train()
    return side_settings(meter)


def run_tunesmith(job: Job, output_dir: str, meter) -> dict:
    run_recipe({**job_recipe(job, output_dir), "stage": "pretrain", "data.dataset": CORPUS}, meter)
    return side_settings(meter)


def run_side(side: str, job: Job) -> dict:
    """Train one side once in this process; its figures (tokens/s over steps 2..N, peak memory, losses, FLOPs)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    started = time.perf_counter()
    meter, counter = trainer_meter(), batch_counter()
    with tempfile.TemporaryDirectory(prefix=f"bench-pretrain-{side}-") as tmp:
        settings = (run_baseline if side == "baseline" else run_tunesmith)(job, tmp, meter)
    figures = meter.figures()
    _, scored = counter.since(step=1)  # the timed window: steps 2..N
    rows = [n for s, n in counter.positions if s >= 1]
    blocks = [job.max_length] * (sum(rows) // job.max_length) + ([sum(rows) % job.max_length] if sum(rows) % job.max_length else [])
    flops = training_flops(meter.model.config, adapter_parameters(meter.model), blocks, scored)
    figures.update(
        side=side,
        settings=settings,
        # every position of a block is a real token (the trainer's own count skips eos where pad == eos)
        tokens_per_s=sum(rows) / figures["timed_seconds"] if figures["timed_seconds"] else None,
        timed_positions=sum(rows),
        timed_scored_tokens=scored,
        timed_flops=flops,
        gflops_per_s=flops / figures["timed_seconds"] / 1e9 if figures["timed_seconds"] else None,
        peak_rss_mb=peak_rss_mb(),
        train_seconds=meter.train_seconds(),
        process_seconds=time.perf_counter() - started,
        threads=torch.get_num_threads(),
    )
    return figures


def summarise(job: Job, runs: dict[str, list[dict]], peak: dict | None = None) -> dict:
    """Medians per side, the ratios and the targets; with `peak` (GFLOP/s in tunesmith's precision), each side's fraction of it."""
    sides = {}
    for side, figures in runs.items():
        gflops = median([f["gflops_per_s"] for f in figures if f.get("gflops_per_s")])
        sides[side] = {
            "tokens_per_s": median([f["tokens_per_s"] for f in figures]),
            "seconds_per_step": median([f["seconds_per_step"] for f in figures]),
            "peak_rss_mb": median([f["peak_rss_mb"] for f in figures]),
            "gflops_per_s": gflops,
            "mfu": gflops / peak["gflops"] if peak and gflops else None,
            "losses": figures[0]["losses"],
            "settings": figures[0]["settings"],
            "runs": [
                {
                    k: f.get(k)
                    for k in ("tokens_per_s", "seconds_per_step", "peak_rss_mb", "losses", "timed_positions", "timed_flops", "gflops_per_s", "process_seconds")
                }
                for f in figures
            ],
        }
    ours, base = sides["tunesmith"], sides["baseline"]
    ratio = ours["tokens_per_s"] / base["tokens_per_s"]
    return {
        "benchmark": "pretrain",
        "job": asdict(job),
        "repeats": len(runs["baseline"]),
        "timed": f"optimizer steps 2..{job.steps} (step 1 holds one-off warm-up)",
        "matmul_peak_gflops": peak["gflops"] if peak else None,
        "matmul_peak_dtype": peak["dtype"] if peak else None,
        "sides": sides,
        "speed_ratio": ratio,
        "memory_ratio": ours["peak_rss_mb"] / base["peak_rss_mb"],
        "targets": {
            f"tokens/s >= {TARGETS['speed_ratio']:g}x the baseline": ratio >= TARGETS["speed_ratio"],
            "peak memory <= baseline": ours["peak_rss_mb"] <= base["peak_rss_mb"],
        },
    }


def run_line(i: int, repeats: int, side: str, f: dict) -> str:
    return f"run {i + 1}/{repeats} {side}: {f['tokens_per_s']:.0f} tokens/s, peak {f['peak_rss_mb']:.0f} MB, final loss {f['final_loss']:.4f} ({f['process_seconds']:.0f} s)"


def compare(job: Job, repeats: int = 3, progress=lambda message: None) -> dict:
    """Both sides, `repeats` times each, alternating A B A B; the matmul peak measured first, in tunesmith's precision."""
    from tunesmith.bench.worker import alternate

    peak = bench_peak(progress)
    return summarise(job, alternate("pretrain", job, SIDES, repeats, progress, lambda i, side, f: run_line(i, repeats, side, f)), peak)


def report_lines(report: dict) -> list[str]:
    s, job = report["sides"], report["job"]
    lines = [
        f"job: {CORPUS} in blocks of {job['max_length']} tokens, {job['steps']} steps x {job['batch_size']} blocks x {job['gradient_accumulation_steps']} accumulation, "
        f"lr {job['learning_rate']:g} {job['lr_scheduler_type']}, LoRA r={job['lora_r']} alpha={job['lora_alpha']} dropout={job['lora_dropout']:g} on "
        f"{','.join(job['target_modules'])}, seed {job['seed']}; timed {report['timed']}, median of {report['repeats']}",
    ]
    lines += peak_lines(report, "forward and backward of every block as one causal sequence, the LM head on the scored tokens")
    for name in SIDES:
        side = s[name]
        settings = ", ".join(f"{k} {v}" for k, v in side["settings"].items())
        mfu = f"{side['gflops_per_s']:4.0f} GFLOP/s = {side['mfu']:.0%} of peak  " if side.get("mfu") is not None else ""
        lines.append(
            f"{name:9} {side['tokens_per_s']:7.1f} tokens/s  {side['seconds_per_step']:5.2f} s/step  peak {side['peak_rss_mb']:6.0f} MB  {mfu}({settings})"
        )
    lines.append(
        "loss per step  "
        + "  ".join(f"{i + 1}: {b:.4f}/{o:.4f}" for i, (b, o) in enumerate(zip(s["baseline"]["losses"], s["tunesmith"]["losses"])))
        + "  (baseline/tunesmith: the baseline's rows attend across documents and score every token)"
    )
    lines.append(f"memory tunesmith/baseline {report['memory_ratio']:.2f}")
    return lines
