"""The fast defaults, decided in one place: weight dtype, autocast, attention kernel, GPU kernels.

Each choice was measured with `tunesmith bench sft` (figures in benchmarks/README.md) and
is printed at the start of a run and by `tunesmith plan`, so what a user reads is what runs.
The loss itself (only supervised positions reach the LM head) lives in train/loss.py.
On a CPU, LoRA layers train as one autograd node each (train/fused_lora.py): the same function, ~25% fewer saved
activations; gated MLPs keep two of their four tensors (train/fused_mlp.py): the same arithmetic, bit for bit.

GPU-only paths (FlashAttention 2, Liger kernels, QLoRA) are chosen automatically where
their package and a CUDA device are present, and refused with a sentence on a CPU.
"""

from __future__ import annotations

import importlib.util
from contextlib import contextmanager
from dataclasses import dataclass

from tunesmith.errors import RecipeError, TunesmithError
from tunesmith.models.precision import Precision
from tunesmith.recipes import Recipe

# Eager attention keeps each layer's batch*heads*L^2 probabilities for the backward pass; above this
# length the memory outweighs what it saves over torch's CPU flash-attention kernel.
EAGER_MAX_TOKENS = 256

# An fp32 run on a CPU (no native bf16: the base cannot be halved) checkpoints one decoder layer in this many
# when the recipe leaves gradient_checkpointing unset. Measured on the bench sft job with torch's kernels at
# AVX2, fp32: all layers kept 220 real tokens/s at 2527 MB; 1 layer in 4 checkpointed 188 tokens/s at 2179 MB,
# a coin flip against plain TRL with bf16=False (107 tokens/s, 2180 MB); 1 in 3 188 tokens/s at 2145 MB (eager);
# every layer checkpointed 135 tokens/s at 1494 MB.
PARTIAL_CHECKPOINT_EVERY = 3
# SFT and DPO checkpoint no layer in fp32 on a CPU: SFT trains padding-free (train/varlen.py) and every stage's gated
# MLPs keep two tensors instead of four (train/fused_mlp.py), so all layers fit under TRL's peak. Measured with
# torch's kernels at AVX2, fp32 (2-core EPYC): bench sft, TRL with bf16=False 102-125 real tokens/s at 2196-2218 MB;
# tunesmith before the fused MLP 1 layer in 3 207-223 tokens/s at 1949-1973 MB, 1 in 6 233-240 at 2077-2132, none
# 235-270 at 2198-2231 (a coin flip on memory); with it, none 247 at 2146-2152 MB. bench dpo, TRL 83-88 tokens/s at
# 2151-2184 MB; with the fused MLP 1 in 3 184 at 1824-1834 MB, 1 in 6 193-198 at 1885-1897, none 205-223 at 1883-1940.
UNCHECKPOINTED_FP32_STAGES = ("sft", "dpo")

# GRPO and RLOO on a bf16 CPU checkpoint one decoder layer in this many when the recipe leaves it unset. Measured with
# `tunesmith bench grpo --repeats 2` (2-core EPYC, avx512_bf16, LoRA layers fused; TRL's script: 15.1-16.7 s/step,
# 1878-1927 MB): every layer 7.8-10.8 s/step at 1399-1434 MB (1.76x, 0.74x); one in 3 7.0-10.0 s at 1666-1671 MB
# (1.92x, 0.87x); none 6.4-6.9 s at 1825-1877 MB (2.19x, 0.98x: a coin flip on memory). The VM's noise that day was
# +-20%; one in 3 is the speed with a margin under TRL's memory.
RL_CHECKPOINT_EVERY = 3
RL_CHECKPOINT_NOTE = "RL on a bf16 CPU: faster than every layer, under plain TRL's peak memory"
PARTIAL_RL_STAGES = ("grpo", "rloo")


@dataclass(frozen=True)
class SpeedSettings:
    weights: str  # dtype the frozen base is stored in
    autocast: bool
    attention: str  # eager | sdpa | flash_attention_2
    liger: bool
    checkpoint_every: int  # 0: no layer is checkpointed; 1: every layer; k: layers 0, k, 2k, ...
    fused_lora: bool = False  # LoRA layers run as one autograd node each (train/fused_lora.py)
    checkpoint_note: str = ""  # why one layer in k is checkpointed, when it is
    padding_free: bool = False  # a micro-batch's examples run end to end, attending within themselves (train/varlen.py)
    fused_mlp: bool = False  # gated MLPs keep two tensors for the backward pass instead of four (train/fused_mlp.py)
    varlen: bool = False  # attention through train/varlen.py: SFT's padding-free rows, DPO/ORPO/CPO's shared-prompt rows unpadded

    @property
    def gradient_checkpointing(self) -> bool:
        return self.checkpoint_every > 0

    def checkpointing_summary(self) -> str:
        if self.checkpoint_every <= 1:
            return f"gradient checkpointing {'on' if self.checkpoint_every else 'off'}"
        why = f" ({self.checkpoint_note})" if self.checkpoint_note else ""
        return f"gradient checkpointing on 1 layer in {self.checkpoint_every}{why}"

    def summary(self) -> str:
        parts = [
            f"{self.weights} weights",
            "autocast" if self.autocast else "no autocast",
            f"{self.attention} attention" + (", padding-free" if self.varlen else ""),  # SFT's examples, DPO/ORPO/CPO's packed pairs, KTO's rows
            self.checkpointing_summary(),
        ]
        if self.liger:
            parts.append("Liger kernels")
        return ", ".join(parts)


def base_weights_dtype(recipe: Recipe, precision: Precision):
    """Frozen LoRA bases are stored in the compute dtype (measured ~1.8x faster in bf16 on this CPU);
    full fine-tuning keeps fp32 master weights and autocasts, so small updates are not rounded away."""
    import torch

    return precision.dtype if recipe.method == "lora" else torch.float32


def uses_autocast(recipe: Recipe, precision: Precision) -> bool:
    """Autocast around the forward pass: needed over fp32 master weights (full fine-tuning) and kept on GPUs
    (QLoRA computes in it). A CPU LoRA run whose base is already bf16 does without: autocast's per-op casts
    cost ~20% of the step there, and the adapters' own fp32 arithmetic is kept by peft."""
    if precision.name == "fp32":
        return False
    return recipe.method == "full" or precision.device == "cuda"


def attention_implementation(recipe: Recipe, precision: Precision, longest: int) -> str:
    """The recipe's attention kernel, else: FlashAttention 2 on a GPU where `flash_attn` is installed and the
    dtype is 16-bit; eager on a CPU for sequences up to EAGER_MAX_TOKENS; sdpa otherwise.

    Measured on the 2-core EPYC (SmolLM2, bf16, batch 8 of ~90 tokens): torch's CPU flash-attention kernel
    took ~0.36 s of a ~1.9 s step, eager attention ~0.05 s.
    """
    from tunesmith.models.family import family_of_spec

    family = family_of_spec(recipe.model.name)
    if recipe.model.attn_implementation:
        if recipe.model.attn_implementation == "sdpa" and family is not None and not family.sdpa:
            raise RecipeError(
                f"model.attn_implementation is sdpa, which {family.title} models cannot use (transformers has no sdpa path for its attention soft-capping)",
                hint="leave model.attn_implementation unset (eager on a CPU), or use flash_attention_2 on a GPU",
            )
        return recipe.model.attn_implementation
    if family is not None and not family.sdpa:  # Gemma 2: eager, or FlashAttention 2 (it soft-caps) on a GPU
        return "flash_attention_2" if precision.device == "cuda" and precision.name != "fp32" and _installed("flash_attn") else "eager"
    if precision.device == "cuda":
        return "flash_attention_2" if precision.name != "fp32" and _installed("flash_attn") else "sdpa"
    if precision.name == "fp32":
        return "sdpa"  # in fp32 the CPU kernel keeps pace with eager (216 vs 220 tokens/s) and keeps no L x L probabilities (-136 MB)
    return "eager" if longest <= EAGER_MAX_TOKENS else "sdpa"


def checkpoint_every(recipe: Recipe, precision: Precision) -> int:
    """Which decoder layers recompute their activations in the backward pass: as the recipe says (true: all,
    false: none); unset: one in PARTIAL_CHECKPOINT_EVERY for an fp32 run on a CPU, where activations, not halved
    weights, set the peak (none for SFT and DPO: UNCHECKPOINTED_FP32_STAGES), and for GRPO/RLOO on a bf16 CPU (RL_CHECKPOINT_EVERY); every layer for GRPO/RLOO
    elsewhere (PPO's recipe sets it on); none otherwise."""
    wanted = recipe.training.gradient_checkpointing
    if wanted is not None:
        return int(wanted)
    if precision.device == "cpu" and precision.name == "fp32":
        if recipe.stage in PARTIAL_RL_STAGES:
            return 1
        return 0 if recipe.stage in UNCHECKPOINTED_FP32_STAGES else PARTIAL_CHECKPOINT_EVERY
    if recipe.stage in PARTIAL_RL_STAGES:
        return RL_CHECKPOINT_EVERY if precision.device == "cpu" else 1
    return 0


def checkpoint_note(recipe: Recipe, precision: Precision, every: int) -> str:
    """What one-layer-in-k checkpointing buys, as measured, for the line the run and the plan print."""
    if every <= 1:
        return ""
    if recipe.stage in PARTIAL_RL_STAGES:
        return RL_CHECKPOINT_NOTE
    return "fp32 on a CPU: ~15% less peak memory for ~15% of the step"


def use_liger(recipe: Recipe, precision: Precision) -> bool:
    """Liger's Triton kernels (RMSNorm, RoPE, SwiGLU) on a GPU where `liger_kernel` is installed, unless the recipe says no."""
    wanted = recipe.training.use_liger_kernel
    if wanted is not None:
        return wanted
    return precision.device == "cuda" and _installed("liger_kernel")


def fuses_lora(recipe: Recipe, precision: Precision) -> bool:
    """Plain LoRA on a CPU trains through train/fused_lora.py's one-node layers (measured there; autocast, DoRA and
    QLoRA's 4-bit layers keep peft's own forward)."""
    return precision.device == "cpu" and recipe.method == "lora" and not recipe.lora.use_dora and not uses_autocast(recipe, precision)


def fuses_mlp(precision: Precision) -> bool:
    """On a CPU every gated MLP keeps act's input and the up projection only (train/fused_mlp.py): the same
    arithmetic, 18% less of what a SmolLM2 decoder layer keeps in fp32 (GPUs have Liger's SwiGLU for this)."""
    return precision.device == "cpu"


def trains_padding_free(recipe: Recipe, precision: Precision, attention: str) -> bool:
    """SFT on a CPU runs each micro-batch's examples end to end in one row, the attention kept within each example
    (train/varlen.py): no layer computes padding, and packed rows stop attending across the whole micro-batch.
    Measured on the 2-core EPYC (bf16, SmolLM2, pirate): a bench sft micro-batch (13% padding) 1.58 -> 1.52 s
    forward and backward, the trainer within noise, ~5% less memory; packed rows of 512, 2 a micro-batch,
    3.9 -> 2.9 s a step; of 256, 1.55 -> 1.1 s and 1880 -> 1449 MB."""
    return recipe.stage == "sft" and runs_varlen(recipe, precision, attention)


def runs_varlen(recipe: Recipe, precision: Precision, attention: str) -> bool:
    """The attention runs through train/varlen.py (`Stage.unpadded_rows`): for SFT's padding-free rows, for the rows
    of the stages that run each pair's prompt once (train/prefix.py), which then drop their padding too (the packed
    rows of the bench dpo job are 14% padding), and for KTO's rows (their padding dropped, `prefix.pack_rows`).
    Without boundaries it is the kernel it wraps, so nothing else changes."""
    from tunesmith.train.stages import get_stage
    from tunesmith.train.varlen import KERNELS

    return precision.device == "cpu" and attention in KERNELS and get_stage(recipe.stage).unpadded_rows


def speed_settings(recipe: Recipe, precision: Precision, longest: int) -> SpeedSettings:
    check_gpu_kernels(recipe, precision)
    attention = attention_implementation(recipe, precision, longest)
    return SpeedSettings(
        weights=str(base_weights_dtype(recipe, precision)).removeprefix("torch."),
        autocast=uses_autocast(recipe, precision),
        attention=attention,
        liger=use_liger(recipe, precision),
        checkpoint_every=(every := checkpoint_every(recipe, precision)),
        fused_lora=fuses_lora(recipe, precision),
        checkpoint_note=checkpoint_note(recipe, precision, every),
        padding_free=trains_padding_free(recipe, precision, attention),
        fused_mlp=fuses_mlp(precision),
        varlen=runs_varlen(recipe, precision, attention),
    )


def check_gpu_kernels(recipe: Recipe, precision: Precision) -> None:
    """GPU-only kernels the recipe asks for must have a GPU and their package: say so before anything runs."""
    if recipe.model.attn_implementation == "flash_attention_2":
        check_flash_attention(precision)
    if recipe.training.use_liger_kernel:
        check_liger(precision)


def check_flash_attention(precision: Precision) -> None:
    if precision.device != "cuda":
        raise TunesmithError(
            "model.attn_implementation is flash_attention_2, which runs on CUDA GPUs only; this machine has none",
            hint="leave model.attn_implementation unset (tunesmith picks eager or sdpa on a CPU)",
        )
    if precision.name == "fp32":
        raise TunesmithError("FlashAttention 2 computes in bf16/fp16 only, and model.precision is fp32", hint="set model.precision: auto")
    if not _installed("flash_attn"):
        raise TunesmithError(
            "model.attn_implementation is flash_attention_2, but the flash_attn package is not installed",
            hint="pip install flash-attn --no-build-isolation, or leave it unset for sdpa",
        )


def check_liger(precision: Precision) -> None:
    if precision.device != "cuda":
        raise TunesmithError(
            "training.use_liger_kernel is on, but Liger's kernels are Triton GPU kernels and this machine has no CUDA GPU",
            hint="leave training.use_liger_kernel unset (it turns on by itself on a GPU with liger-kernel installed)",
        )
    if not _installed("liger_kernel"):
        raise TunesmithError(
            "training.use_liger_kernel is on, but the liger-kernel package is not installed", hint="pip install 'tunesmith[gpu]' (or pip install liger-kernel)"
        )


def checkpoint_one_layer_in(model, every: int) -> None:
    """Make every later turn-on of gradient checkpointing on `model` (the Trainer's at the start, TRL's after each
    no-grad reference pass) take transformers' own `every_n_layers=every`: layers 0, every, 2*every, ... TRL turns
    it back on without the argument, which would checkpoint every layer again."""
    original = model._set_gradient_checkpointing

    def set_checkpointing(enable: bool = True, gradient_checkpointing_func=None, every_n_layers: int = 1):
        kwargs = {} if gradient_checkpointing_func is None else {"gradient_checkpointing_func": gradient_checkpointing_func}
        return original(enable=enable, every_n_layers=every, **kwargs)

    model._set_gradient_checkpointing = set_checkpointing


def checkpointed_layers(model) -> tuple[int, int]:
    """(checkpointed, all) decoder layers of a model, as they are set now."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    return sum(bool(m.gradient_checkpointing) for m in layers), len(layers)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


TRL_HEAD_USERS = ("dpo_trainer", "kto_trainer", "grpo_trainer", "rloo_trainer")  # trl.trainer modules calling add_fused_lm_head


@contextmanager
def compact_lm_head():
    """Score only the positions that have a label in TRL's fused LM head, and on a CPU with tunesmith's head.

    TRL's DPO, KTO, GRPO and RLOO trainers project hidden states through the LM head in tiles
    (trl.trainer.utils.add_fused_lm_head). On CUDA/XPU they project only the answer positions; on
    any other device every position, prompt and padding included, so that Neuron's compiler sees
    fixed shapes. A CPU compiles nothing, so there that is pure waste: measured with
    `tunesmith bench dpo` (SmolLM2, LoRA, 4 pairs x 2, avx512_bf16 CPU) 166 -> 232 real tokens/s
    and 2350 -> 2079 MB peak, identical losses.

    On a CPU, every head those trainers add is then replaced by train/loss.py's (`replace_fused_head`: each
    token's gradient formed in the forward pass, no second projection in the backward) from the moment TRL adds
    it, so a reference scored before training (precompute_ref_log_probs) uses it too: `tunesmith bench dpo`
    1.84x -> 2.64x TRL and 1.03x -> 0.86x its memory (one run each). If TRL drops the hooks this relies on,
    nothing changes (TRL's behaviour).
    """
    import importlib

    from tunesmith.train.loss import replace_fused_head

    try:
        import trl.trainer.utils as trl_utils
    except ImportError:  # pragma: no cover
        yield
        return
    patched = []
    original = getattr(trl_utils, "_use_triton", None)
    if original is not None:
        trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
        patched.append((trl_utils, "_use_triton", original))
    for name in TRL_HEAD_USERS:
        module = importlib.import_module(f"trl.trainer.{name}")
        add = getattr(module, "add_fused_lm_head", None)
        if add is None:
            continue

        def add_then_replace(model, temperature: float = 1.0, cast_lm_head_to_fp32: bool = False, _add=add, **kwargs):
            _add(model, temperature=temperature, cast_lm_head_to_fp32=cast_lm_head_to_fp32, **kwargs)
            if not cast_lm_head_to_fp32 and model.device.type == "cpu":  # an fp32 head, and CUDA's Triton kernel, stay TRL's
                replace_fused_head(model, temperature)

        module.add_fused_lm_head = add_then_replace
        patched.append((module, "add_fused_lm_head", add))
    try:
        yield
    finally:
        for module, name, value in patched:
            setattr(module, name, value)
