"""What the benchmarks measure with: the matmul peak, memory, FLOPs, and a training-step meter."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path


def matmul_peak(dtype, size: int = 2048, repeats: int = 5, budget_s: float = 5.0) -> float:
    """Best GFLOP/s of a square `torch.matmul` in `dtype` (a torch dtype) on this machine, now (threads as
    configured), in bounded time: repeats stop once `budget_s` is spent. Call it with the dtype the run uses: a
    bf16 product on a CPU without native bf16 is emulated (~0.3 GFLOP/s, minutes for a 4096 product)."""
    from tunesmith.models.precision import matmul_seconds

    return 2 * size**3 / matmul_seconds(dtype, size, repeats, budget_s) / 1e9


def bench_peak(progress) -> dict:
    """The matmul peak in the precision tunesmith runs here ({"gflops", "dtype"}), measured in the bench's own process
    before the workers take the machine, and said through `progress`."""
    from tunesmith.models.precision import resolve_precision

    precision = resolve_precision("auto")
    peak = {"gflops": matmul_peak(precision.dtype), "dtype": precision.name}
    progress(f"{precision.name} matmul peak {peak['gflops']:.0f} GFLOP/s")
    return peak


def peak_lines(report: dict, work: str) -> list[str]:
    """The report's peak line, naming how the bench counts its work; none where no peak was measured."""
    if not report.get("matmul_peak_gflops"):
        return []
    return [f"{report['matmul_peak_dtype']} matmul peak on this machine, now: {report['matmul_peak_gflops']:.0f} GFLOP/s (work counted as defined: {work})"]


class BudgetSpent(Exception):
    """A benchmark run stopped at its time budget (a side far too slow on this CPU to run the whole job)."""


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1e6 if sys.platform == "darwin" else rss / 1024


def median(values):
    return statistics.median(values) if values else None


def decoder_weights(config) -> int:
    """The decoder's linear weights N (q, k, v, o and the MLP of every layer): what each token is multiplied by."""
    width, heads = config.hidden_size, config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or width // heads
    return config.num_hidden_layers * (width * heads * head_dim * 2 + width * kv * head_dim * 2 + 3 * width * config.intermediate_size)


def training_flops(config, lora_params: int, sequence_lengths: list[int], scored_tokens: int) -> float:
    """FLOPs a LoRA step needs for these sequences, counted the way the work is defined, not as a kernel did it.

    Per real token: 2*N forward + 2*N backward (input gradients; the frozen base gets no weight gradient) over
    the decoder's linear weights N, plus 6*N_lora for the trainable adapters. Causal attention per sequence of
    length L: 2*layers*width*L^2 forward, 3x for forward+backward. The LM head (vocab*width) costs 4*vocab*width
    per *scored* token only: the loss needs no other position's logits. Padding is not work.
    """
    tokens, width = sum(sequence_lengths), config.hidden_size
    body = tokens * (4 * decoder_weights(config) + 6 * lora_params)
    return body + 3 * attention_forward_flops(config, sequence_lengths) + scored_tokens * 4 * config.vocab_size * width


def reference_flops(config, sequence_lengths: list[int], scored_tokens: int) -> float:
    """FLOPs of one forward pass of a frozen reference model over the same sequences (DPO without precomputed
    reference log-probabilities): 2*N per real token, causal attention forward, and the LM head's 2*vocab*width per
    scored token. Counted as `training_flops` counts."""
    body = sum(sequence_lengths) * 2 * decoder_weights(config)
    return body + attention_forward_flops(config, sequence_lengths) + scored_tokens * 2 * config.vocab_size * config.hidden_size


def repeated_prompt_flops(config, lora_params: int, prompt_lengths: list[int], reference: bool) -> float:
    """The work of the prompt copies a batch repeats (DPO's chosen and rejected rows share a prompt), which the work
    as defined does not count: a prompt's hidden states are the same in every copy, so each distinct prompt is
    counted once. Each repeated copy's tokens through the policy's forward and backward, its own causal attention,
    and the reference's forward of the same where there is one; the answers' attention to the prompt stays counted."""
    work = training_flops(config, lora_params, prompt_lengths, 0)
    return work + (reference_flops(config, prompt_lengths, 0) if reference else 0.0)


def rl_step_flops(config, lora_params: int, completions: int, generations: int, prompt_tokens: int, completion_tokens: int, reference: bool) -> float:
    """FLOPs of RL steps (GRPO, RLOO) from the token counts TRL logs, counted as `training_flops` counts:

    - rollouts: each prompt's prefill once (its group of `generations` completions shares it): 2*N per prompt token,
      causal attention, and the LM head on its last position (the first token's distribution); then every completion
      token but the last is fed back: 2*N, the LM head's 2*vocab*width, and attention over its context (4*layers*
      width per position of context);
    - the update: forward and backward of every completion with its prompt (`training_flops`, the head scoring the
      completion tokens), each group's prompt counted once (`repeated_prompt_flops`);
    - the reference's forward of the same sequences where the KL term needs it (`reference`).

    Prompts and completions are taken at their mean lengths (`prompt_tokens` / `completions` each, and so on): the
    sequence lengths only enter through attention, a few percent of the work at RL's lengths."""
    if not completions:
        return 0.0
    prompt, completion = prompt_tokens / completions, completion_tokens / completions
    body, head = 2 * decoder_weights(config), 2 * config.vocab_size * config.hidden_size
    prompts = completions / generations
    prefill = prompts * (prompt * body + attention_forward_flops(config, [prompt]) + head)
    fed_back = completions * max(completion - 1, 0)
    decode = fed_back * (body + head + 2 * attention_width(config) * 2 * (prompt + completion / 2))
    lengths = [prompt + completion] * completions
    update = training_flops(config, lora_params, lengths, completion_tokens)
    update -= repeated_prompt_flops(config, lora_params, [prompt] * round(completions - prompts), reference)
    return prefill + decode + update + (reference_flops(config, lengths, completion_tokens) if reference else 0.0)


def attention_width(config) -> int:
    """layers x query heads x head width: attention's multiply-adds per query and key position, over the model."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers * heads * head_dim


def attention_forward_flops(config, sequence_lengths: list[int]) -> float:
    """Causal attention's forward (scores and weighted values) over these sequences: 2*layers*width*L^2 each."""
    return sum(2 * attention_width(config) * length**2 for length in sequence_lengths)


def adapter_parameters(model) -> int:
    """The LoRA adapters' parameter count (what a LoRA step trains)."""
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


def trainer_meter():
    """A TrainerCallback that records, per optimizer step, wall time, real tokens seen and the logged loss
    (and keeps the model and arguments the trainer really ran with)."""
    from transformers import TrainerCallback

    class Meter(TrainerCallback):
        def __init__(self):
            self.steps: list[tuple[float, int]] = []  # (time at step end, num_input_tokens_seen)
            self.losses: list[float] = []
            self.model = self.args = None
            self.began = self.ended = None
            self.rss_mb: dict[str, float] = {}  # peak RSS so far, read when training begins and ends

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.model, self.args = model, args
            self.began = time.perf_counter()
            self.rss_mb["train_begin"] = peak_rss_mb()

        def on_train_end(self, args, state, control, **kwargs):
            self.ended = time.perf_counter()
            self.rss_mb["train_end"] = peak_rss_mb()

        def train_seconds(self) -> float | None:
            """Wall time of `trainer.train()` (all steps, first one included)."""
            return self.ended - self.began if self.began and self.ended else None

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append((time.perf_counter(), int(state.num_input_tokens_seen)))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(float(logs["loss"]))

        def figures(self) -> dict:
            """Tokens/s over steps 2..N (step 1 carries one-off warm-up: allocator, thread pool, lazy init)."""
            (t0, n0), (t1, n1) = self.steps[0], self.steps[-1]
            return {
                "steps": len(self.steps),
                "tokens": n1,
                "timed_tokens": n1 - n0,
                "timed_seconds": t1 - t0,
                "tokens_per_s": (n1 - n0) / (t1 - t0) if t1 > t0 else None,
                "seconds_per_step": (t1 - t0) / (len(self.steps) - 1) if len(self.steps) > 1 else None,
                "losses": self.losses,
                "final_loss": self.losses[-1] if self.losses else None,
                "peak_rss_mb_by": dict(self.rss_mb),
            }

    return Meter()


def repeated_prompts(input_ids, prompt_mask) -> list[int]:
    """Lengths of the prompt copies in a batch beyond the first of each distinct prompt (`prompt_mask`: the
    prompt's real positions in each row): what a batch of pairs or groups repeats."""
    seen, repeated = set(), []
    for ids, mask in zip(input_ids, prompt_mask):
        prompt = tuple(ids[mask].tolist())
        if prompt in seen:
            repeated.append(len(prompt))
        seen.add(prompt)
    return repeated


def batch_counter(trainer_cls=None, budget_s: float | None = None):
    """Records each micro-batch's real sequence lengths, scored tokens and end time, by the optimizer step it
    belongs to.

    Installs itself around `trainer_cls.training_step` (default `trl.SFTTrainer`: both sides of bench sft
    train with one; bench dpo passes `trl.DPOTrainer`) in this process only: the benchmark worker runs one
    training and exits. Batches without `labels` (DPO's) count their `completion_mask` as scored.
    With `budget_s`, the run stops (`BudgetSpent`) after the first micro-batch that ends past the budget,
    counted from the start of the first one.
    """
    import torch

    if trainer_cls is None:
        from trl import SFTTrainer as trainer_cls

    class Counter:
        def __init__(self):
            self.micro_batches: list[tuple[int, list[int], int]] = []  # (global step, lengths, scored tokens)
            self.positions: list[tuple[int, int]] = []  # (global step, positions in the batch tensor, padding included)
            self.ends: list[float] = []  # perf_counter at the end of each micro-batch (forward + backward)
            self.repeats: list[tuple[int, list[int]]] = []  # (global step, lengths of prompt copies rows repeat)
            self.padding_free = False  # whether the batches came as rows of real tokens, without a mask
            self.started: float | None = None

        def cut_short(self) -> tuple[list[tuple[int, list[int], int]], float]:
            """The timed window of a run cut short, and its seconds: micro-batches 2..k (the first holds one-off
            warm-up), or the first one, warm-up included, when it is all that ran."""
            done = self.micro_batches[: len(self.ends)]
            if len(self.ends) >= 2:
                return done[1:], self.ends[-1] - self.ends[0]
            return done, self.ends[0] - self.started

        def partial_figures(self) -> dict:
            """Real tokens/s for a run cut short, over `cut_short`'s window."""
            window, seconds = self.cut_short()
            tokens = sum(sum(m[1]) for m in window)
            return {
                "timed_micro_batches": len(window),
                "warm_up_included": len(self.ends) < 2,
                "timed_tokens": tokens,
                "timed_seconds": seconds,
                "tokens_per_s": tokens / seconds if seconds > 0 else None,
            }

        def record(self, step: int, inputs: dict) -> None:
            mask = inputs.get("attention_mask")
            if mask is not None and mask.dim() == 2:
                lengths = mask.sum(1).tolist()
            else:  # padding-free rows: each sequence restarts at position 0
                self.padding_free = True
                pos = inputs["position_ids"].flatten()
                starts = torch.nonzero(pos == 0).flatten().tolist() + [len(pos)]
                lengths = [b - a for a, b in zip(starts, starts[1:])]
            scored = (inputs["labels"][:, 1:] != -100) if "labels" in inputs else inputs["completion_mask"][:, 1:].bool()
            self.micro_batches.append((step, lengths, int(scored.sum())))
            if "completion_mask" in inputs and mask is not None and mask.dim() == 2:
                self.repeats.append((step, repeated_prompts(inputs["input_ids"], mask.bool() & ~inputs["completion_mask"].bool())))
            self.positions.append((step, int(inputs["input_ids"].numel())))

        def since(self, step: int) -> tuple[list[int], int]:
            """Sequence lengths and scored tokens of the optimizer steps after the first `step`."""
            chosen = [m for m in self.micro_batches if m[0] >= step]
            return [n for m in chosen for n in m[1]], sum(m[2] for m in chosen)

        def repeated_prompts_since(self, step: int) -> list[int]:
            """Lengths of the prompt copies the batches of the optimizer steps after the first `step` repeated."""
            return [n for s, lengths in self.repeats if s >= step for n in lengths]

        def positions_since(self, step: int) -> int:
            """Positions (padding included) of the batches of the optimizer steps after the first `step`."""
            return sum(n for s, n in self.positions if s >= step)

    counter = Counter()
    original = trainer_cls.training_step

    def training_step(self, model, inputs, *args, **kwargs):
        if counter.started is None:
            counter.started = time.perf_counter()
        counter.record(self.state.global_step, inputs)
        loss = original(self, model, inputs, *args, **kwargs)
        counter.ends.append(time.perf_counter())
        if budget_s is not None and counter.ends[-1] - counter.started > budget_s:
            n = len(counter.ends)
            raise BudgetSpent(f"stopped after {n} micro-batch{'es' if n > 1 else ''}, {counter.ends[-1] - counter.started:.0f} s (budget {budget_s:.0f} s)")
        return loss

    trainer_cls.training_step = training_step
    return counter


# ---------------------------------------------------------------- the two sides, shared by every bench


def baseline_arguments(job, output_dir: str, use_cpu: bool) -> dict:
    """The TRL config arguments a baseline script sets for the job (the fields every bench Job shares), nothing else."""
    return dict(
        output_dir=output_dir,
        max_steps=job.steps,
        per_device_train_batch_size=job.batch_size,
        gradient_accumulation_steps=job.gradient_accumulation_steps,
        max_length=job.max_length,
        learning_rate=job.learning_rate,
        lr_scheduler_type=job.lr_scheduler_type,
        warmup_steps=job.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        seed=job.seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        include_num_input_tokens_seen="non_padding",
        use_cpu=use_cpu,  # TRL's bf16 default stops a GPU-less machine with a message saying to set this
    )


def emulated_bf16() -> bool:
    """TRL's default bf16 autocast would run emulated kernels here (a CPU without fast bf16, no GPU)."""
    import torch

    from tunesmith.models.precision import cpu_has_fast_bf16

    return not torch.cuda.is_available() and not cpu_has_fast_bf16()


def tuned_precision() -> dict:
    """The precision flag an informed TRL user sets on this machine: `bf16=False` where bf16 is emulated (TRL's
    default bf16 autocast would run ~15x slower than fp32 there); nothing elsewhere."""
    return {"bf16": False} if emulated_bf16() else {}


def job_model(job) -> str:
    """The bench job's model (the embedded one unless the job names another)."""
    from tunesmith.models.builtin import DEFAULT_MODEL

    return getattr(job, "model", None) or DEFAULT_MODEL


def baseline_targets(job, path: str) -> list[str]:
    """The job's LoRA targets by this model's module names: on Phi-3 q_proj/v_proj live in the fused qkv_proj, which
    tunesmith adapts too (a TRL user names it so by hand), so both sides train the same matrices."""
    import json

    from tunesmith.models.family import family_of

    family = family_of(json.loads((Path(path) / "config.json").read_text()))
    return list(dict.fromkeys(family.module_for(m) for m in job.target_modules))


def baseline_model(job):
    """What a baseline script loads as TRL's docs show it: the job's model (fp32), its tokenizer, a LoraConfig."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.models.load import resolve_model

    path = resolve_model(job_model(job)).path  # the embedded GGUF is converted once to a normal model directory
    targets = baseline_targets(job, path)
    lora = LoraConfig(r=job.lora_r, lora_alpha=job.lora_alpha, lora_dropout=job.lora_dropout, target_modules=targets, task_type="CAUSAL_LM")
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path), lora


def job_recipe(job, output_dir: str) -> dict:
    """Recipe overrides that fix a bench job's settings (the fields every bench Job shares) on the tunesmith side."""
    return {
        "model.name": job_model(job),
        "training.max_steps": job.steps,
        "training.per_device_train_batch_size": job.batch_size,
        "training.gradient_accumulation_steps": job.gradient_accumulation_steps,
        "data.max_length": job.max_length,
        "training.learning_rate": job.learning_rate,
        "training.lr_scheduler_type": job.lr_scheduler_type,
        "training.warmup_ratio": job.warmup_ratio,
        "training.seed": job.seed,
        "lora.r": job.lora_r,
        "lora.lora_alpha": job.lora_alpha,
        "lora.lora_dropout": job.lora_dropout,
        "lora.target_modules": job.target_modules,
        "training.logging_steps": 1,
        "training.save_strategy": "no",
        "sample.prompts": [],
        "sample.diagnostics": False,
        "output_dir": output_dir,
    }


def run_recipe(overrides: dict, meter, *more_callbacks) -> None:
    """Train a recipe with tunesmith's defaults plus `overrides`, progress on stderr (stdout carries the figures)."""
    import sys

    from rich.console import Console

    from tunesmith.recipes import load_recipe
    from tunesmith.train.scaffold import run_stage

    run_stage(load_recipe(None, overrides), console=Console(file=sys.stderr), live=False, callbacks=[meter, *more_callbacks])


def side_settings(meter, **extra) -> dict:
    """What a side really ran with, read off the trainer's model and arguments."""
    from tunesmith.train.speed import checkpointed_layers

    model, args = meter.model, meter.args
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {
        "weights": str(base.dtype).removeprefix("torch."),
        "autocast": "bf16" if args.bf16 else ("fp16" if args.fp16 else "none"),
        "attention": base.config._attn_implementation,
        "gradient_checkpointing": bool(args.gradient_checkpointing),
        "checkpointed_layers": "{}/{}".format(*checkpointed_layers(base)),
        **{name: bool(getattr(args, name)) for name in extra},
    }
