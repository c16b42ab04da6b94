"""`tunesmith plan`: everything a run will do, computed before it does it.

The data is loaded, templated and validated exactly as training does (so the plan
doubles as the data check), the schedule comes from `schedule.py` (the arithmetic
the Trainer follows), and the parameter counts from the same LoRA selection the
trainer applies.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from tunesmith.models.load import meta_model
from tunesmith.models.precision import Precision, resolve_precision
from tunesmith.recipes.schema import Recipe
from tunesmith.train.schedule import Schedule, compute_schedule
from tunesmith.train.speed import SpeedSettings, speed_settings

GIB = 1024**3


@dataclass
class Plan:
    schedule: Schedule
    precision: Precision
    method: str
    model: str
    total_parameters: int
    trainable_parameters: int
    memory_bytes: dict[str, int]
    data_summary: str | None = None
    num_examples: int = 0
    notes: list[str] = field(default_factory=list)
    speed: SpeedSettings | None = None
    stage: str = "sft"
    unit: str = "sequences"  # what one training example is: sequences, or pairs (chosen and rejected)
    mean_tokens: float = 0.0  # tokens per training sequence (pairs: prompt + the longer answer; RL: the prompt)
    shared_tokens: float = 0.0  # pairs run as one row each, their prompt once: that row's mean tokens (0: not so run)
    seconds: float | None = None  # the time estimate on this machine (pretrain: a corpus's size is the question)
    seconds_basis: str = ""

    def to_json(self) -> dict:
        s = asdict(self.schedule)
        out = {
            "model": self.model,
            "stage": self.stage,
            "method": self.method,
            "precision": self.precision.name,
            "precision_reason": self.precision.reason,
            "num_examples": self.num_examples,
            **s,
            "total_parameters": self.total_parameters,
            "trainable_parameters": self.trainable_parameters,
            "memory_bytes": self.memory_bytes,
            "memory_gib_total": round(sum(self.memory_bytes.values()) / GIB, 3),
            "data": self.data_summary,
            "notes": self.notes,
            "speed": asdict(self.speed) if self.speed else None,
            "seconds_estimate": None if self.seconds is None else round(self.seconds, 1),
        }
        return out


def parameter_counts(recipe: Recipe, model, head: str = "causal") -> tuple[int, int]:
    """(total, trainable) parameters for the recipe's method; LoRA counts are what peft will create.
    A reward model's score head is trained in full (with LoRA: peft's trainable copy of it)."""
    from tunesmith.models.lora import lora_parameter_count, select_targets

    total = sum(p.numel() for p in model.parameters())
    if recipe.method == "full":
        return total, total
    trainable = lora_parameter_count(select_targets(model, recipe.lora), recipe.lora.r, recipe.lora.use_dora)
    if recipe.lora.train_embeddings:
        from tunesmith.models.lora import embedding_parameter_count

        trainable += embedding_parameter_count(model)
    if head == "reward":
        trainable += model.score.weight.numel()
    return total + trainable, trainable  # the adapter's weights add to the model


def estimate_memory(
    config,
    total: int,
    trainable: int,
    precision: Precision,
    method: str,
    rows: int,
    seq_len: int,
    speed: SpeedSettings,
    lora_targets,
    head: str = "causal",
    packed: bool = False,
) -> dict[str, int]:
    """Bytes one trained model holds at the peak of a step (train/memory.py says what is counted and how): weights
    (a LoRA base in the compute dtype, full fine-tuning's fp32 masters plus autocast's 16-bit copies), fp32
    gradients and AdamW state of what is trained, and the activations a micro-batch of `rows` x `seq_len` keeps for
    the backward pass, measured on the architecture and times BACKWARD_FACTOR."""
    from tunesmith.train.memory import BACKWARD_FACTOR, activation_bytes

    half = precision.name in ("bf16", "fp16")
    weight_bytes = {"qlora": 0.5, "lora": 2 if half else 4, "full": 4}[method]
    base = total - trainable if method != "full" else total
    weights = base * weight_bytes + (trainable * 4 if method != "full" else 0)
    if method == "full" and speed.autocast:
        weights += total * 2  # autocast keeps a 16-bit copy of every weight it casts, until the backward pass is done
    # under autocast, full fine-tuning keeps its activations in the compute dtype too
    activations = activation_bytes(
        config,
        precision.dtype,
        speed.attention,
        lora_targets if method != "full" else None,
        head,
        rows,
        seq_len,
        speed.checkpoint_every,
        packed,
        speed.fused_lora,
        speed.fused_mlp,
    )
    return {
        "weights": int(weights),
        "gradients": int(trainable * 4),
        "optimizer": int(trainable * 8),
        "activations": int(activations * BACKWARD_FACTOR),
    }


def loss_bytes(config, rows: int, seq_len: int, all_positions: bool, fp32: bool = False) -> int:
    """The loss's vocabulary-sized buffers: one chunk of CHUNK_TOKENS positions (train/loss.py, TRL's fused head: two
    fp32 buffers and one 16-bit; in fp32 the two alone), or, for a trainer that projects every position at once, the
    micro-batch's logits with their fp32 log-softmax and its gradient (~12 bytes an entry)."""
    from tunesmith.train.loss import CHUNK_TOKENS

    if all_positions:
        return rows * seq_len * config.vocab_size * 12
    return min(rows * seq_len, CHUNK_TOKENS) * config.vocab_size * (8 if fp32 else 10)


def decoding_bytes(config, precision: Precision, training: dict[str, int]) -> int:
    """How far decoding's peak rises above training's: decoding (infer/generate.py) runs on the model beside the
    training state with a packed copy of its bf16 linear weights (infer/packed.py; CPU only) instead of the
    activations and the loss. 0 where training's peak is the higher."""
    from tunesmith.infer.packed import available

    if precision.device != "cpu" or precision.name != "bf16" or not available():
        return 0
    from tunesmith.bench.measure import decoder_weights

    packed = (decoder_weights(config) + config.vocab_size * config.hidden_size) * 2
    during_training = sum(training.values())
    during_decoding = during_training - training.get("activations", 0) - training.get("loss", 0) + packed
    return max(0, during_decoding - during_training)


def runtime_bytes(precision: Precision) -> int:
    """The process before any model: Python and the libraries in RAM on a CPU; on a GPU the estimate is of device
    memory, which holds none of it."""
    from tunesmith.train.memory import RUNTIME_CPU

    return RUNTIME_CPU if precision.device == "cpu" else 0


def lora_kinds(recipe: Recipe, model) -> tuple[str, ...] | None:
    """The module kinds (q_proj, ...) LoRA adapts, for the activation probe; None for full fine-tuning."""
    if recipe.method == "full":
        return None
    from tunesmith.models.lora import select_targets

    return tuple(sorted({t.kind for t in select_targets(model, recipe.lora)}))


def make_plan(recipe: Recipe, *, dataset: str | None = None, num_examples: int | None = None, world_size: int | None = None) -> Plan:
    """The plan for `recipe` on `dataset` (loaded as its stage's training would) or on `num_examples` examples."""
    from tunesmith.train.stages import get_stage

    stage = get_stage(recipe.stage)
    stage.check(recipe)
    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    notes: list[str] = []
    data_summary = None
    seq_len = recipe.data.max_length
    shared_len, shared_mean = 0, 0.0  # pairs as one row each, their prompt once (0: unknown)
    if num_examples is None:
        from tunesmith.models.load import load_tokenizer

        prepared = stage.plan_data(recipe, load_tokenizer(recipe.model.name), dataset or recipe.data.dataset)
        num_examples = prepared.num_examples
        num_sequences = prepared.num_sequences
        seq_len = prepared.longest
        shared_len, shared_mean = prepared.shared_longest, prepared.shared_mean
        data_summary = prepared.summary
        mean_tokens = prepared.tokens / max(prepared.num_sequences, 1) if prepared.tokens else seq_len
    else:
        num_sequences = num_examples
        mean_tokens = seq_len
        notes.append(
            f"without the data, every sequence counts as max_length ({seq_len}) tokens: the memory estimate and the attention kernel follow from that; pass --dataset for the real lengths"
        )
        if recipe.data.packing:
            notes.append("packing is on: with --num-examples the plan counts one sequence per example; pass --dataset for the packed count")
    schedule = compute_schedule(recipe.training, num_sequences, world)
    precision = resolve_precision(recipe.model.precision)
    model = meta_model(recipe.model.name, head=stage.head)
    total, trainable = parameter_counts(recipe, model, stage.head)
    # DPO, ORPO and reward models run chosen and rejected through the model in one batch
    rows = recipe.training.per_device_train_batch_size * stage.sequences_per_example
    speed = speed_settings(recipe, precision, seq_len)
    step_len = seq_len  # the longest row a step runs (RL stages: prompt plus completion, from prepare_data)
    targets = lora_kinds(recipe, model)
    memory = {"runtime": runtime_bytes(precision)}
    # rows of several documents: what a CPU keeps for their per-document mask is probed (on an H200, pretrain's peak was
    # 0.85x the estimate made without it)
    packed = stage.packs_documents and precision.device == "cpu"
    from tunesmith.train.loss import plain_head
    from tunesmith.train.prefix import ATTENTION
    from tunesmith.train.stages.pairs import head_scores_tokens

    # where tunesmith's head scores the tokens (a CPU, a frozen plain head: train/loss.py) and attention takes a mask
    runs_packed = head_scores_tokens(recipe, precision) and plain_head(model.config.get_text_config()) and speed.attention in ATTENTION
    shares = stage.shares_prompts if runs_packed else ""
    # a pair's prompt run once makes one row of prompt + both answers; an RL micro-batch shares as its groups fall
    # into it (TRL shuffles them), so its estimate keeps a row per completion
    run_rows, run_len = (recipe.training.per_device_train_batch_size, shared_len) if shares == "pair" and shared_len else (rows, step_len)
    memory.update(estimate_memory(model.config, total, trainable, precision, recipe.method, run_rows, run_len, speed, targets, stage.head, packed))
    memory["loss"] = (
        loss_bytes(model.config, rows, step_len, stage.all_positions_projected(recipe, precision), precision.name == "fp32") if stage.head == "causal" else 0
    )

    def estimate(other, head: str) -> dict[str, int]:
        other_total, other_trainable = parameter_counts(recipe, other, head)
        return estimate_memory(other.config, other_total, other_trainable, precision, recipe.method, rows, step_len, speed, lora_kinds(recipe, other), head)

    more_total, more_trainable, more_memory = stage.plan_models(recipe, precision, estimate)
    total, trainable = total + more_total, trainable + more_trainable
    memory.update(more_memory)
    if stage.head == "causal" and (extra := decoding_bytes(model.config, precision, memory)):
        memory["decoding"] = extra
        notes.append(
            "the peak is while decoding (the answers and measurements before and after training, RL rollouts): the weights packed for decoding sit beside the model then"
        )
    if stage.sequences_per_example == 2:
        notes.append(f"each step sees pairs: {recipe.training.per_device_train_batch_size} pairs per micro-batch run as {rows} sequences (chosen and rejected)")
    if shares:
        answers = "its chosen and rejected answers" if shares == "pair" else "its completions"
        notes.append(f"each {shares}'s prompt runs once, {answers} after it in one row whose attention keeps them apart (prefix sharing)")
    if stage.uses_reference(recipe):
        from tunesmith.train.stages.pairs import precompute_reference

        precomputed = precompute_reference(recipe, stage, schedule)
        memory["reference"] = 0 if recipe.method != "full" or precomputed else (total - 0) * 4  # full FT: a copy of the fp32 weights
        notes.append(
            (
                "reference model: the same weights with the adapter disabled (no second copy in memory)"
                if recipe.method != "full"
                else "reference model: one frozen copy of the starting weights"
                if not precomputed
                else "reference: no copy kept"
            )
            + ("; it scores the data once before training (precompute_ref_log_probs)" if precomputed else "; it runs a forward pass in every step")
        )
    notes += stage.plan_notes(recipe)
    from tunesmith.train.distributed import per_process_memory, strategy_note

    if world > 1:
        memory, how = per_process_memory(memory, recipe, world, precision.device)
        notes.append(
            f"{world} processes: each step's batch is {recipe.training.per_device_train_batch_size} per process x {world} processes x {recipe.training.gradient_accumulation_steps} accumulation; {how}"
        )
    if note := strategy_note(recipe, precision.device, world):
        notes.append(note)
    plan = Plan(schedule, precision, recipe.method, recipe.model.name, total, trainable, memory, data_summary, num_examples, notes, speed)
    plan.stage, plan.unit, plan.mean_tokens = recipe.stage, stage.unit, mean_tokens
    plan.shared_tokens = shared_mean if shares == "pair" else 0.0
    return plan
