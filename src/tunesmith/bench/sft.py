"""Fine-tuning speed: plain TRL scripts against `tunesmith sft`, on the same job, in separate processes.

The job (`Job`) fixes what every side trains: the embedded SmolLM2, the built-in pirate chats
(loss on the assistant replies), LoRA r=16 / alpha 32 / dropout 0.05 on q_proj and v_proj, the same
optimizer steps, batch, max_length, learning rate and schedule. Everything else is each side's own:

- trl-defaults: what TRL's docs show, with SFTConfig's defaults for everything the job does not fix
  (on a CPU that is: fp32 weights, bf16 autocast, gradient checkpointing, padded batches);
- trl-tuned: the same script tuned for this CPU the way an informed user would: `bf16=False` where the CPU
  has no fast bf16 (autocast would run emulated bf16 kernels). On a CPU with native bf16 TRL's defaults
  already are that, so the side is not run twice: it is the defaults' figures;
- tunesmith: `run_sft` with tunesmith's defaults.

The headline ratio is against trl-tuned. Each run is a fresh `python -m tunesmith.bench.worker` process (its
peak memory is its own, nothing warm carries over) and runs alternate A B C A B C...; the report gives medians.
Bounded on any CPU: trl-defaults runs once and stops at `defaults_budget_s` where its bf16 is emulated (~6
tokens/s: the whole job would take over 20 minutes), and no round starts that would end past `deadline_s`.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunesmith.bench.measure import (
    BudgetSpent,
    adapter_parameters,
    baseline_arguments,
    baseline_model,
    batch_counter,
    emulated_bf16,
    job_recipe,
    matmul_peak,
    median,
    peak_rss_mb,
    run_recipe,
    side_settings,
    trainer_meter,
    training_flops,
    tuned_precision,
)

SIDES = ("trl-defaults", "trl-tuned", "tunesmith")


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
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # on Phi-3: the fused qkv_proj, on both sides
    seed: int = 42
    model: str = "smollm2-135m-instruct"  # any --model value of a supported family; both sides train the same one
    packing: bool = False  # both sides pack examples into max_length rows (TRL's packing=True, best-fit-decreasing)
    defaults_budget_s: float = 60.0  # trl-defaults stops after the micro-batch that ends past this where its bf16 autocast is emulated
    deadline_s: float = 480.0  # no round starts that would end past this (the whole bench stays under 10 min)


def pirate_prompt_completion():
    """The built-in pirate chats as TRL's conversational prompt/completion rows (TRL then trains on the completion only)."""
    from datasets import Dataset

    from tunesmith.data.readers import BUILTIN_DATASETS

    rows = [json.loads(line) for line in Path(BUILTIN_DATASETS["pirate"]).read_text().splitlines() if line.strip()]
    return Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])


def run_baseline(job: Job, output_dir: str, meter, tuned: bool = False) -> dict:
    """The script a TRL user writes (the docs' LoRA example), plus the job's fixed settings; `tuned`: with the
    precision flag set for this CPU (bf16 autocast only where bf16 is native)."""
    import torch
    from trl import SFTConfig, SFTTrainer

    model, tokenizer, peft_config = baseline_model(job)
    args = SFTConfig(**baseline_arguments(job, output_dir, use_cpu=not torch.cuda.is_available()), packing=job.packing, **(tuned_precision() if tuned else {}))
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=pirate_prompt_completion(), processing_class=tokenizer, peft_config=peft_config, callbacks=[meter]
    )
    trainer.train()
    return settings_of(meter)


def run_tunesmith(job: Job, output_dir: str, meter) -> dict:
    """`tunesmith sft` with its defaults, on the job's settings."""
    run_recipe({**job_recipe(job, output_dir), "data.packing": job.packing}, meter)
    return settings_of(meter)


def settings_of(meter) -> dict:
    return side_settings(meter, packing=True)


def run_side(side: str, job: Job) -> dict:
    """Train one side once in this process; its figures (tokens/s over steps 2..N, peak memory, losses, FLOPs).
    A run stopped at its budget is timed over its micro-batches 2..k instead and says so (`stopped`)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    budget = job.defaults_budget_s if side == "trl-defaults" and emulated_bf16() else None
    meter, counter = trainer_meter(), batch_counter(budget_s=budget)
    stopped = None
    with tempfile.TemporaryDirectory(prefix=f"bench-{side}-") as tmp:
        try:
            if side == "tunesmith":
                run_tunesmith(job, tmp, meter)
            else:
                run_baseline(job, tmp, meter, tuned=side == "trl-tuned")
        except BudgetSpent as spent:
            stopped = str(spent)
    settings = {**settings_of(meter), "padding_free": counter.padding_free}  # as the batches came (TRL's packing is padding-free too)
    model = meter.model
    lora = adapter_parameters(model)
    if stopped:
        figures = {**counter.partial_figures(), "steps": len(meter.steps), "losses": meter.losses, "final_loss": meter.losses[-1] if meter.losses else None}
        window, _ = counter.cut_short()
        lengths, scored = [n for m in window for n in m[1]], sum(m[2] for m in window)
    else:
        figures = meter.figures()
        lengths, scored = counter.since(step=1)  # the timed window: steps 2..N
        # real tokens from the batches themselves: the trainers' "non_padding" count drops every token equal to the
        # pad id, and SmolLM2 pads with its end-of-turn token (padded batches: ~4% of tokens; padding-free: counted)
        figures["tokens_per_s"] = sum(lengths) / figures["timed_seconds"] if figures["timed_seconds"] else None
    flops = training_flops(model.config, lora, lengths, scored)
    figures.update(
        side=side,
        stopped=stopped,
        peak_rss_mb=peak_rss_mb(),
        settings=settings,
        timed_real_tokens=sum(lengths),
        timed_scored_tokens=scored,
        timed_flops=flops,
        gflops_per_s=flops / figures["timed_seconds"] / 1e9 if figures["timed_seconds"] else None,
        threads=torch.get_num_threads(),
    )
    return figures


TARGETS = {"vs_tuned": 2.0, "vs_defaults": 4.0, "loss_tolerance": 0.02}


def curve_gap(ours: list[float], theirs: list[float]) -> float | None:
    """Largest relative gap between two loss curves over the steps both logged (None: no common step)."""
    gaps = [abs(a - b) / b for a, b in zip(ours, theirs)]
    return max(gaps) if gaps else None


def run_line(i: int, repeats: int, side: str, f: dict) -> str:
    loss = f"final loss {f['final_loss']:.4f}" if f["final_loss"] is not None else "no step finished"
    cut = (
        f" ({f['stopped']}: timed over {f['timed_micro_batches']} micro-batch{'es' if f['timed_micro_batches'] > 1 else ''}{', warm-up included' if f['warm_up_included'] else ''})"
        if f.get("stopped")
        else ""
    )
    return f"run {i + 1}/{repeats} {side}: {f['tokens_per_s']:.0f} tokens/s, peak {f['peak_rss_mb']:.0f} MB, {loss}{cut}"


def compare(job: Job, repeats: int = 3, progress=lambda message: None) -> dict:
    """Every side `repeats` times, alternating (trl-defaults once where its bf16 is emulated); medians, ratios and
    the targets they meet. The CPU is described and the matmul peak measured, in the precision tunesmith runs,
    in this process first (the workers then have the machine to themselves)."""
    from tunesmith.bench.worker import alternate
    from tunesmith.models.precision import cpu_capability, resolve_precision

    cpu = cpu_capability()
    precision = resolve_precision("auto")
    progress(f"CPU: {cpu['summary']}; tunesmith's precision here: {precision.name}")
    peak = matmul_peak(precision.dtype)
    progress(f"{precision.name} matmul peak {peak:.0f} GFLOP/s")
    emulated = emulated_bf16()
    sides_run = {name: name for name in SIDES if name != "trl-tuned" or emulated}  # tuned == defaults on a bf16 CPU
    if emulated:
        progress(
            f"trl-defaults (bf16 autocast) runs emulated bf16 here: it runs once and stops after the micro-batch that ends past {job.defaults_budget_s:.0f} s"
        )
    runs = alternate(
        "sft",
        job,
        sides_run,
        repeats,
        progress,
        lambda i, side, f: run_line(i, repeats, side, f),
        once={"trl-defaults"} if emulated else (),
        deadline_s=job.deadline_s,
        announce=emulated,
    )
    sides = {}
    for side, figures in runs.items():
        gflops = median([f["gflops_per_s"] for f in figures])
        sides[side] = {
            "tokens_per_s": median([f["tokens_per_s"] for f in figures]),
            "peak_rss_mb": median([f["peak_rss_mb"] for f in figures]),
            "final_loss": median([f["final_loss"] for f in figures if f["final_loss"] is not None]),
            "gflops_per_s": gflops,
            "mfu": gflops / peak,
            "settings": figures[0]["settings"],
            "stopped": figures[0]["stopped"],
            "runs": [
                {
                    k: f.get(k)
                    for k in (
                        "tokens_per_s",
                        "peak_rss_mb",
                        "final_loss",
                        "losses",
                        "gflops_per_s",
                        "timed_real_tokens",
                        "timed_scored_tokens",
                        "timed_seconds",
                        "stopped",
                        "timed_micro_batches",
                        "warm_up_included",
                    )
                }
                for f in figures
            ],
        }
    if "trl-tuned" not in sides:
        sides["trl-tuned"] = {**sides["trl-defaults"], "same_as": "trl-defaults"}
    ours, tuned, defaults = sides["tunesmith"], sides["trl-tuned"], sides["trl-defaults"]
    ratio = ours["tokens_per_s"] / tuned["tokens_per_s"]
    vs_defaults = ours["tokens_per_s"] / defaults["tokens_per_s"]
    # the whole curve, step by step (same batches on every side; each side's runs log the same losses)
    gap = curve_gap(runs["tunesmith"][0]["losses"], runs["trl-tuned" if emulated else "trl-defaults"][0]["losses"])
    gap_defaults = curve_gap(runs["tunesmith"][0]["losses"], runs["trl-defaults"][0]["losses"])
    targets = {f"speed >= {TARGETS['vs_tuned']:g}x trl-tuned": ratio >= TARGETS["vs_tuned"]}
    if not emulated:
        targets[f"speed >= {TARGETS['vs_defaults']:g}x trl-defaults"] = vs_defaults >= TARGETS["vs_defaults"]
    targets["peak memory <= trl-tuned"] = ours["peak_rss_mb"] <= tuned["peak_rss_mb"]
    targets["loss within 2% of trl-tuned at every step"] = gap is not None and gap <= TARGETS["loss_tolerance"]
    return {
        "benchmark": "sft",
        "cpu": cpu,
        "precision": {"tunesmith": precision.name, "reason": precision.reason},
        "job": asdict(job),
        "repeats": repeats,
        "rounds": len(runs["tunesmith"]),
        "timed": f"optimizer steps 2..{job.steps} (step 1 holds one-off warm-up)",
        "matmul_peak_gflops": peak,
        "matmul_peak_dtype": precision.name,
        "sides": sides,
        "headline_baseline": "trl-tuned",
        "speed_ratio": ratio,
        "speed_ratio_vs_defaults": vs_defaults,
        "memory_ratio": ours["peak_rss_mb"] / tuned["peak_rss_mb"],
        "final_loss_gap": abs(ours["final_loss"] - tuned["final_loss"]) / tuned["final_loss"],
        "loss_curve_max_gap": gap,
        "loss_curve_max_gap_vs_defaults": gap_defaults,
        "targets": targets,
    }


def report_lines(report: dict) -> list[str]:
    """The report as a person reads it: the CPU, each side's figures and settings, the ratios."""
    job = report.get("job") or {}
    lines = [f"model: {job['model']}, LoRA r={job['lora_r']} on {','.join(job['target_modules'])}"] if "model" in job else []
    lines += [f"CPU: {report['cpu']['summary']}", f"tunesmith's precision: {report['precision']['tunesmith']} ({report['precision']['reason']})"]
    lines.append(
        f"{report['matmul_peak_dtype']} matmul peak on this machine, now: {report['matmul_peak_gflops']:.0f} GFLOP/s; timed {report['timed']}, median of {report['rounds']}"
    )
    for name in SIDES:
        side = report["sides"][name]
        if side.get("same_as"):
            lines.append(f"{name:12} = {side['same_as']} on this CPU (bf16 autocast already is the tuned precision here)")
            continue
        settings = ", ".join(f"{k} {v}" for k, v in side["settings"].items())
        cut = f"  [{side['stopped']}]" if side["stopped"] else ""
        loss = f"final loss {side['final_loss']:.4f}" if side["final_loss"] is not None else "no step finished"
        lines.append(
            f"{name:12} {side['tokens_per_s']:7.1f} real tokens/s  peak {side['peak_rss_mb']:6.0f} MB  {loss}  {side['gflops_per_s']:5.0f} GFLOP/s = {side['mfu']:.0%} of peak  ({settings}){cut}"
        )
    gap = report["loss_curve_max_gap"]
    lines.append(
        f"tunesmith: {report['speed_ratio']:.2f}x trl-tuned, {report['speed_ratio_vs_defaults']:.2f}x trl-defaults; memory {report['memory_ratio']:.2f}x trl-tuned; "
        f"largest loss gap along the curve {'n/a' if gap is None else f'{gap:.2%}'}"
    )
    return lines
