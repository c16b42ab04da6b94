"""RL speed: the plain TRL `GRPOTrainer` script of TRL's docs against `tunesmith grpo`, on the same job.

The job (`Job`) fixes what both sides train: the embedded SmolLM2, the built-in `arithmetic` prompts
(same rows, same order), the same reward functions (numeric_answer + 0.5 x length_penalty, from
tunesmith.rewards, called through TRL's reward-function interface on both sides), LoRA r=16 / alpha 32 /
dropout 0 on q_proj and v_proj, group size, completion length, temperature, beta, optimizer steps,
batch, learning rate and schedule, seed. Everything else is each side's own:

- baseline: GRPOConfig's defaults for all the job leaves open (on a CPU: fp32 weights, bf16 autocast,
  gradient checkpointing; rollouts by `model.generate`); `bf16=False` on a CPU without fast bf16
  (measure.tuned_precision: emulated bf16 autocast is ~15x slower there);
- tunesmith: `run_stage` on a `stage: grpo` recipe with tunesmith's defaults (bf16 base where the CPU has
  native bf16, rollouts by our decode loop, train/rollout.py).

Each run is a fresh `python -m tunesmith.bench.worker grpo <side>` process, runs alternate A B A B, and the
report gives medians. The figure is optimizer steps per second over steps 2..N (step 1 holds one-off
warm-up). Sampling differs between the sides (different samplers and random streams), so rewards are
compared as statistics: the mean reward per step of each side, and whether they differ by more than noise.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field

from tunesmith.bench.measure import (
    adapter_parameters,
    baseline_model,
    bench_peak,
    median,
    peak_lines,
    peak_rss_mb,
    rl_step_flops,
    run_recipe,
    side_settings,
    trainer_meter,
    tuned_precision,
)

SIDES = ("baseline", "tunesmith")
DATASET = "arithmetic"
TARGETS = {"speed_ratio": 1.5}


@dataclass
class Job:
    steps: int = 5
    batch_size: int = 8  # completions per micro-batch
    gradient_accumulation_steps: int = 2  # 16 completions a step: 2 prompts x 8
    num_generations: int = 8
    max_completion_length: int = 32
    temperature: float = 0.8
    beta: float = 0.04
    learning_rate: float = 5e-4
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.05
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    seed: int = 42
    gradient_checkpointing: bool | None = None  # tunesmith side only: None = the recipe's default; for experiments


def reward_functions():
    """The arithmetic demo's rewards (recipes.schema.ARITHMETIC_REWARDS) as TRL reward functions, and their weights."""
    from tunesmith.recipes.schema import ARITHMETIC_REWARDS
    from tunesmith.rewards import load_reward
    from tunesmith.rewards.trl_bridge import trl_reward_functions

    return trl_reward_functions([load_reward(e.function, weight=e.weight, options=dict(e.options)) for e in ARITHMETIC_REWARDS])


def prompts(tokenizer):
    from tunesmith.data.preference import prepare_preference_data

    return prepare_preference_data(DATASET, tokenizer, stage="grpo").dataset


def reward_log():
    """Mean reward, KL and completion length of every logged step."""
    from transformers import TrainerCallback

    class RewardLog(TrainerCallback):
        def __init__(self):
            self.rows: list[dict] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs:
                self.rows.append({k: logs.get(k) for k in ("reward", "reward_std", "kl", "completions/mean_length", "time/generate_share")})

    return RewardLog()


def step_printer():
    """One "step i/N" line on stderr per optimizer step (the bench's progress; TRL's own bar is off on a pipe)."""
    import sys

    from transformers import TrainerCallback

    class StepPrinter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            print(f"step {state.global_step}/{state.max_steps}", file=sys.stderr, flush=True)

    return StepPrinter()


def run_baseline(job: Job, output_dir: str, callbacks) -> dict:
    """The script a TRL user writes (GRPO docs, with LoRA), plus the job's fixed settings."""
    import torch
    from transformers import set_seed
    from trl import GRPOConfig, GRPOTrainer

    set_seed(job.seed)
    model, tokenizer, peft_config = baseline_model(job)
    functions, weights = reward_functions()
    args = GRPOConfig(
        output_dir=output_dir,
        max_steps=job.steps,
        per_device_train_batch_size=job.batch_size,
        gradient_accumulation_steps=job.gradient_accumulation_steps,
        learning_rate=job.learning_rate,
        lr_scheduler_type=job.lr_scheduler_type,
        warmup_steps=job.warmup_ratio,
        seed=job.seed,
        num_generations=job.num_generations,
        max_completion_length=job.max_completion_length,
        temperature=job.temperature,
        beta=job.beta,
        reward_weights=weights,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=not torch.cuda.is_available(),
        **tuned_precision(),
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=functions,
        args=args,
        train_dataset=prompts(tokenizer),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.train()
    return {}


def tunesmith_overrides(job: Job, output_dir: str) -> dict:
    return {
        "stage": "grpo",
        "data.dataset": DATASET,
        "training.max_steps": job.steps,
        "training.per_device_train_batch_size": job.batch_size,
        "training.gradient_accumulation_steps": job.gradient_accumulation_steps,
        "training.learning_rate": job.learning_rate,
        "training.lr_scheduler_type": job.lr_scheduler_type,
        "training.warmup_ratio": job.warmup_ratio,
        "training.seed": job.seed,
        "training.logging_steps": 1,
        "training.save_strategy": "no",
        "lora.r": job.lora_r,
        "lora.lora_alpha": job.lora_alpha,
        "lora.lora_dropout": job.lora_dropout,
        "lora.target_modules": job.target_modules,
        "grpo.num_generations": job.num_generations,
        "grpo.max_completion_length": job.max_completion_length,
        "grpo.temperature": job.temperature,
        "grpo.beta": job.beta,
        "sample.prompts": [],
        "data.eval_dataset": "none",  # no before/after measurement: the baseline script has none either
        "output_dir": output_dir,
        **({} if job.gradient_checkpointing is None else {"training.gradient_checkpointing": job.gradient_checkpointing}),
    }


def run_side(side: str, job: Job) -> dict:
    """Train one side once in this process; its figures (seconds per step over steps 2..N, peak memory, rewards)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    started = time.perf_counter()
    meter, rewards = trainer_meter(), reward_log()
    with tempfile.TemporaryDirectory(prefix=f"bench-grpo-{side}-") as tmp:
        if side == "baseline":
            run_baseline(job, tmp, [meter, rewards, step_printer()])  # tunesmith prints its own step lines
        else:
            run_recipe(tunesmith_overrides(job, tmp), meter, rewards)
    figures = meter.figures()
    flops = timed_flops(job, meter, rewards.rows)
    figures.update(
        side=side,
        timed_flops=flops,
        gflops_per_s=flops / figures["timed_seconds"] / 1e9 if figures["timed_seconds"] else None,
        steps_per_s=1 / figures["seconds_per_step"] if figures["seconds_per_step"] else None,
        peak_rss_mb=peak_rss_mb(),
        settings=side_settings(meter),
        rewards=[r["reward"] for r in rewards.rows],
        kl=[r["kl"] for r in rewards.rows],
        completion_lengths=[r["completions/mean_length"] for r in rewards.rows],
        generate_share=[r["time/generate_share"] for r in rewards.rows if r.get("time/generate_share") is not None],
        train_seconds=meter.train_seconds(),
        process_seconds=time.perf_counter() - started,
        threads=torch.get_num_threads(),
    )
    return figures


def timed_flops(job: Job, meter, rows: list[dict]) -> float:
    """The work of the timed steps (2..N), counted as defined (measure.rl_step_flops) from the tokens TRL counted:
    prompt plus completion tokens seen (`num_input_tokens_seen` at each step's end) and each step's mean completion length."""
    completions = job.batch_size * job.gradient_accumulation_steps
    seen = [n for _, n in meter.steps]
    lengths = [r["completions/mean_length"] for r in rows]
    if len(seen) < 2 or len(lengths) < len(seen):
        return 0.0
    completion_tokens = completions * sum(lengths[1 : len(seen)])
    steps = len(seen) - 1
    return rl_step_flops(
        meter.model.config,
        adapter_parameters(meter.model),
        completions * steps,
        job.num_generations,
        seen[-1] - seen[0] - completion_tokens,
        completion_tokens,
        reference=job.beta > 0,
    )


# ---------------------------------------------------------------- the comparison


def reward_difference(ours: list[float], base: list[float]) -> tuple[float, float]:
    """(difference of the mean per-step rewards, its standard error): sampling differs, so rewards agree as
    statistics, not step by step. Both sides' per-step means are treated as independent samples."""

    def mean_var(xs):
        m = sum(xs) / len(xs)
        return m, (sum((x - m) ** 2 for x in xs) / (len(xs) - 1) if len(xs) > 1 else 0.0)

    (mo, vo), (mb, vb) = mean_var(ours), mean_var(base)
    return mo - mb, math.sqrt(vo / len(ours) + vb / len(base))


def summarise(job: Job, runs: dict[str, list[dict]], peak: dict | None = None) -> dict:
    """Medians per side, the ratios and the targets they meet; with `peak` (the matmul peak in tunesmith's precision,
    GFLOP/s), each side's fraction of it."""
    sides = {}
    for side, figures in runs.items():
        gflops = median([f["gflops_per_s"] for f in figures if f.get("gflops_per_s")])
        sides[side] = {
            "gflops_per_s": gflops,
            "mfu": gflops / peak["gflops"] if peak and gflops else None,
            "steps_per_s": median([f["steps_per_s"] for f in figures]),
            "seconds_per_step": median([f["seconds_per_step"] for f in figures]),
            "peak_rss_mb": median([f["peak_rss_mb"] for f in figures]),
            "mean_reward": sum(r for f in figures for r in f["rewards"]) / sum(len(f["rewards"]) for f in figures),
            "mean_kl": sum(k for f in figures for k in f["kl"] if k is not None) / max(1, sum(1 for f in figures for k in f["kl"] if k is not None)),
            "mean_completion_length": sum(x for f in figures for x in f["completion_lengths"]) / sum(len(f["completion_lengths"]) for f in figures),
            "generate_share": median([x for f in figures for x in f["generate_share"]]) if any(f["generate_share"] for f in figures) else None,
            "process_seconds": median([f["process_seconds"] for f in figures]),
            "settings": figures[0]["settings"],
            "runs": [
                {
                    k: f.get(k)
                    for k in (
                        "steps_per_s",
                        "seconds_per_step",
                        "peak_rss_mb",
                        "rewards",
                        "kl",
                        "completion_lengths",
                        "losses",
                        "train_seconds",
                        "process_seconds",
                        "timed_flops",
                        "gflops_per_s",
                    )
                }
                for f in figures
            ],
        }
    ours, base = sides["tunesmith"], sides["baseline"]
    ratio = ours["steps_per_s"] / base["steps_per_s"]
    difference, error = reward_difference([r for f in runs["tunesmith"] for r in f["rewards"]], [r for f in runs["baseline"] for r in f["rewards"]])
    return {
        "benchmark": "grpo",
        "job": asdict(job),
        "repeats": len(runs["baseline"]),
        "timed": f"optimizer steps 2..{job.steps} (step 1 holds one-off warm-up)",
        "matmul_peak_gflops": peak["gflops"] if peak else None,
        "matmul_peak_dtype": peak["dtype"] if peak else None,
        "sides": sides,
        "speed_ratio": ratio,
        "memory_ratio": ours["peak_rss_mb"] / base["peak_rss_mb"],
        "reward_difference": difference,
        "reward_difference_standard_error": error,
        "targets": {
            f"optimizer steps/s >= {TARGETS['speed_ratio']:g}x the baseline": ratio >= TARGETS["speed_ratio"],
            "peak memory <= baseline": ours["peak_rss_mb"] <= base["peak_rss_mb"],
            "mean reward within noise (|difference| <= 2 standard errors)": abs(difference) <= 2 * error,
        },
    }


def run_line(i: int, repeats: int, side: str, f: dict) -> str:
    rewards = f["rewards"]
    return (
        f"run {i + 1}/{repeats} {side}: {f['seconds_per_step']:.1f} s/step, peak {f['peak_rss_mb']:.0f} MB, "
        f"mean reward {sum(rewards) / len(rewards):+.3f}, completions {sum(f['completion_lengths']) / len(f['completion_lengths']):.0f} tokens ({f['process_seconds']:.0f} s)"
    )


def compare(job: Job, repeats: int = 3, progress=lambda message: None) -> dict:
    """Both sides, `repeats` times each, alternating A B A B; medians, ratios and the targets they meet."""
    from tunesmith.bench.worker import alternate

    peak = bench_peak(progress)
    runs = alternate("grpo", job, SIDES, repeats, progress, lambda i, side, f: run_line(i, repeats, side, f), stream=True)
    return summarise(job, runs, peak)


def report_lines(report: dict) -> list[str]:
    s, job = report["sides"], report["job"]
    lines = [
        f"job: {job['steps']} steps x {job['batch_size'] * job['gradient_accumulation_steps']} completions ({job['num_generations']} per prompt, up to {job['max_completion_length']} tokens, "
        f"temperature {job['temperature']:g}), beta {job['beta']:g}, lr {job['learning_rate']:g} {job['lr_scheduler_type']}, LoRA r={job['lora_r']} on {','.join(job['target_modules'])}, "
        f"seed {job['seed']}; timed {report['timed']}, median of {report['repeats']}",
    ]
    lines += peak_lines(
        report,
        "each prompt's prefill once, every completion token decoded, the update's forward and backward and the reference's forward with each group's prompt once",
    )
    for name in SIDES:
        side = s[name]
        settings = ", ".join(f"{k} {v}" for k, v in side["settings"].items())
        share = f", generating {side['generate_share']:.0%} of the time" if side["generate_share"] is not None else ""
        mfu = f"{side['gflops_per_s']:4.0f} GFLOP/s = {side['mfu']:.0%} of peak  " if side.get("mfu") is not None else ""
        lines.append(
            f"{name:9} {side['steps_per_s']:.3f} steps/s ({side['seconds_per_step']:.1f} s/step)  peak {side['peak_rss_mb']:6.0f} MB  {mfu}mean reward {side['mean_reward']:+.3f}  "
            f"KL {side['mean_kl']:.4f}  completions {side['mean_completion_length']:.1f} tokens  ({settings}{share})"
        )
    lines.append(
        f"memory tunesmith/baseline {report['memory_ratio']:.2f}; mean reward tunesmith - baseline {report['reward_difference']:+.3f} "
        f"(standard error {report['reward_difference_standard_error']:.3f})"
    )
    return lines
