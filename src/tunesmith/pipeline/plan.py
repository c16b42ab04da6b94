"""`tunesmith plan` on a pipeline: every training stage's plan, and how long each stage should take on this machine.

The time is work divided by speed. Work is counted the way `tunesmith bench` counts it (bench/measure.py:
training_flops: 4 x the decoder's weights per token for a LoRA step, 6 x for the adapters, the LM head at scored
positions only; 2 x the weights per generated token). Training speed is measured now: one LoRA forward and
backward of the stage's architecture (random weights, the run's precision, 4 x 96 tokens; 1-5 s), whose FLOPs over
its time is what this machine reaches on that model. A share of the matmul peak does not carry across CPUs: the
pirate SFT demo reached 0.45 of the bf16 peak on an AMD EPYC (avx512_bf16) and on an AVX2 CPU in fp32, but 0.16 on
an Intel Xeon with AMX, whose matmuls run ~4x faster than the rest of a step keeps up with (the old estimate said
52 s for an SFT stage that took 3 min there). Decoding (memory-bound, small matmuls) is still a share of the peak:
batch-8 greedy decode at 143 tokens/s in bf16 (0.10 of the bf16 peak) and 64 tokens/s in fp32 (0.22 of 77 GFLOP/s),
avx512_bf16 CPU.
Stages that do not train are timed from the parameters they read and write (see MERGE/EVAL/EXPORT below).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.bench.measure import decoder_weights
from tunesmith.pipeline.config import EvalStep, ExportStep, MergeStep, Pipeline, TrainStep, check_references

PROBE_BATCH, PROBE_TOKENS = 4, 96  # the probe step's shape: near the demo data's (mean 72 tokens, batch 8 x 2)
PROBE_LAYERS = 4  # decoder layers a probe of a model over 1B parameters builds
# A real optimizer step costs more than the probe's forward and backward of the same FLOPs: padding to the longest
# example of each micro-batch, the optimizer, the Trainer's bookkeeping. The pirate SFT demo on the 2-core AMX Xeon:
# 2.45 s a step against the probe's 1.6 s.
STEP_OVERHEAD = 1.5
DECODE_SHARE = {"bf16": 0.10, "fp16": 0.10, "fp32": 0.22}
LOAD_SECONDS = 5.0  # tokenizer, data, model from the cache (135M: ~1 s each), before/after bookkeeping


@dataclass
class StepPlan:
    name: str
    stage: str
    seconds: float
    basis: str  # how the time was estimated, in words
    plan: object = None  # train.plan.Plan for training stages
    notes: list[str] = field(default_factory=list)


def decode_flops_per_token(config) -> float:
    return 2 * (decoder_weights(config) + config.vocab_size * config.hidden_size)


class Speeds:
    """This machine's speeds, each measured once: the matmul peak per precision (~1 s) for decoding, and a LoRA
    training step per architecture and precision (1-5 s)."""

    # measured once per process: a second plan in the same process (the doc tests' runner, the studio) reuses them
    peaks: dict[str, float] = {}
    steps: dict[tuple[str, str, str, str], float] = {}  # (architecture, precision, attention, device) -> FLOP/s

    def peak(self, precision) -> float:
        if precision.name not in self.peaks:
            from tunesmith.bench.measure import matmul_peak

            self.peaks[precision.name] = matmul_peak(precision.dtype, size=1024, repeats=5, budget_s=2.0) * 1e9
        return self.peaks[precision.name]

    def train(self, precision, config, attention: str = "sdpa") -> float:
        """FLOP/s a LoRA forward and backward of `config`'s architecture reaches here, in `precision`."""
        key = (config.to_json_string(), precision.name, attention, precision.device)
        if key not in self.steps:
            self.steps[key] = probe_training_speed(config, precision, attention)
        return self.steps[key]

    def decode(self, precision) -> float:
        return self.peak(precision) * DECODE_SHARE.get(precision.name, 0.2)


def probe_training_speed(config, precision, attention: str = "sdpa") -> float:
    """One LoRA step's forward and backward (q/k/v/o, r=16, the defaults) on random weights of this architecture, on
    the run's device, timed after a warm-up; FLOPs counted as training_flops counts them, so the speed applies to any
    batch of the model. A model over 1B parameters is probed on its first PROBE_LAYERS layers (same kernels per layer,
    without allocating the whole model)."""
    import copy
    import time

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunesmith.bench.measure import training_flops

    if decoder_weights(config) > 1e9:
        config = copy.deepcopy(config)
        config.num_hidden_layers = PROBE_LAYERS
    from transformers.initialization import no_init_weights

    torch.manual_seed(0)
    with no_init_weights():  # transformers' per-module init takes ~2.5 s for 135M parameters; one normal_ each is enough here
        model = AutoModelForCausalLM.from_config(config, dtype=precision.dtype, attn_implementation=attention).to(precision.device)
    with torch.no_grad():
        for parameter in model.parameters():  # norms at 1 (as trained models have them: no tiny, denormal activations)
            parameter.fill_(1.0) if parameter.dim() == 1 else parameter.normal_(0.0, 0.02)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    ids = torch.randint(0, config.vocab_size, (PROBE_BATCH, PROBE_TOKENS), device=precision.device)
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sync = torch.cuda.synchronize if precision.device == "cuda" else (lambda: None)
    best = float("inf")
    for attempt in range(3):  # a warm-up, then the faster of two
        started = time.perf_counter()
        model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
        sync()
        best = min(best, time.perf_counter() - started)
        if best > 5.0 or (attempt and best > 1.0):  # a slow machine, or a step long enough to time once: one is enough
            break
    flops = training_flops(config, lora, [PROBE_TOKENS] * PROBE_BATCH, PROBE_BATCH * PROBE_TOKENS)
    return flops / best


def train_seconds(plan, recipe, config, speeds: Speeds) -> tuple[float, str]:
    """Seconds for a training stage's plan: its optimizer steps, the sampling of RL stages, the answers before/after."""
    from tunesmith.bench.measure import training_flops

    s = plan.schedule
    per_step_sequences = s.effective_batch_size
    lora = plan.trainable_parameters if recipe.method != "full" else 0
    scale = 1.0 if recipe.method != "full" else 1.5  # full fine-tuning adds the weights' own gradients: 6N, not 4N
    decode = speeds.decode(plan.precision)
    stage = recipe.stage
    extra = 0.0
    if stage in ("grpo", "rloo", "ppo"):
        section = getattr(recipe, stage)
        length = plan.mean_tokens + section.max_completion_length
        sampled = per_step_sequences * section.max_completion_length * decode_flops_per_token(config)
        if stage == "ppo":  # one rollout batch serves ppo_epochs x num_mini_batches steps; actor and critic both train
            sampled /= section.ppo_epochs * section.num_mini_batches
            scale *= 2
        flops = training_flops(config, lora, [round(length)] * per_step_sequences, per_step_sequences * section.max_completion_length) * scale
        extra = sampled / decode
        basis = f"{per_step_sequences} responses of up to {section.max_completion_length} tokens sampled per step"
    else:
        rows = per_step_sequences * (2 if plan.unit == "pairs" else 1)
        tokens = round(plan.mean_tokens)
        if plan.shared_tokens:  # each pair one row, its prompt once (train/prefix.py)
            rows, tokens = per_step_sequences, round(plan.shared_tokens)
        flops = training_flops(config, lora, [tokens] * rows, rows * tokens // 2) * scale
        from tunesmith.train.stages import get_stage
        from tunesmith.train.stages.pairs import precompute_reference

        if get_stage(stage).uses_reference(recipe):
            reference = rows * tokens * 2 * decoder_weights(config)  # the reference's forward over a step's sequences
            if precompute_reference(recipe, get_stage(stage), s):  # once over the data before training, instead of every step
                extra = reference * s.steps_per_epoch / speeds.train(plan.precision, config, plan.speed.attention)
            else:
                flops += reference
        basis = f"{rows} {'blocks' if plan.unit == 'blocks' else 'pairs' if plan.shared_tokens else 'sequences'} of ~{tokens} tokens per step" + (
            ", the prompt once" if plan.shared_tokens else ""
        )
    per_step = STEP_OVERHEAD * flops / speeds.train(plan.precision, config, plan.speed.attention) + (extra if stage in ("grpo", "rloo", "ppo") else 0.0)
    samples = 2 * len(recipe.sample.prompts) * recipe.sample.max_new_tokens + (8 * recipe.sample.max_new_tokens if stage == "sft" else 0)
    once = extra if stage not in ("grpo", "rloo", "ppo") else 0.0  # DPO/KTO: the reference scoring the data before training
    seconds = (
        s.total_steps * per_step + once + samples * decode_flops_per_token(config) / decode * 4 + LOAD_SECONDS
    )  # one-prompt decode: ~1/4 of batch-8's speed
    return seconds, f"{s.total_steps} steps x {per_step:.1f} s ({basis})"  # the precision: the stage plan's own line


def plan_pipeline(pipeline: Pipeline) -> list[StepPlan]:
    """A StepPlan per stage. Stages that use an earlier stage's output are planned on that stage's starting model (the
    same architecture and tokenizer), since the output does not exist yet."""
    from tunesmith.models.load import meta_model
    from tunesmith.models.precision import resolve_precision
    from tunesmith.pipeline.run import train_recipe
    from tunesmith.train.plan import make_plan

    speeds = Speeds()
    stand_in: dict[str, Path] = {}  # stage name -> the model its output is shaped like
    out: list[StepPlan] = []
    for step in check_references(pipeline):
        if isinstance(step, TrainStep):
            recipe = train_recipe(step, pipeline, stand_in, pipeline.root / step.name)
            plan = make_plan(recipe)
            config = meta_model(recipe.model.name).config
            seconds, basis = train_seconds(plan, recipe, config, speeds)
            stand_in[step.name] = Path(recipe.model.name)
            out.append(StepPlan(step.name, step.stage, seconds, basis, plan))
            continue
        refs = [str(stand_in.get(r, r)) for r in step.references()]
        config = meta_model(refs[0]).config
        params = decoder_weights(config) + config.vocab_size * config.hidden_size
        precision = resolve_precision("fp32")
        if isinstance(step, MergeStep):
            stand_in[step.name] = Path(str(stand_in.get(step.references()[0], step.references()[0])))
            # each input is loaded (an adapter merged into its base) and merged in fp32: the demo's SLERP of two 135M runs took 7 s
            inputs = len(set(step.references()))
            seconds = LOAD_SECONDS + inputs * 1.0 * params / 1e8
            out.append(StepPlan(step.name, step.stage, seconds, f"{inputs} inputs of {params / 1e6:.0f}M parameters"))
        elif isinstance(step, EvalStep):
            decode = speeds.decode(precision)
            per_model = LOAD_SECONDS + step.max_prompts * step.max_new_tokens * decode_flops_per_token(config) / decode + 10.0  # + loss and pair scoring
            out.append(
                StepPlan(
                    step.name,
                    step.stage,
                    per_model * len(step.models),
                    f"{len(step.models)} models x ({step.max_prompts} answers of {step.max_new_tokens} tokens, loss, pairs)",
                )
            )
        elif isinstance(step, ExportStep):
            # merge in fp32, write (quantise) the GGUF, load it back with transformers and compare logits: the demo's q8_0
            # export of 135M took 41 s, most of it the check (transformers parses the GGUF's 49k-token vocabulary 3 times)
            seconds = LOAD_SECONDS + (27.0 * params / 1e8 if "gguf" in step.formats or "ollama" in step.formats else 3.0 * params / 1e8)
            out.append(StepPlan(step.name, step.stage, seconds, f"{', '.join(step.formats)} of {params / 1e6:.0f}M parameters"))
    return out
