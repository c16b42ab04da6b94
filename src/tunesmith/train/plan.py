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


def estimate_memory(config, total: int, trainable: int, precision: Precision, method: str, batch: int, seq_len: int, checkpoint_every: int) -> dict[str, int]:
    """Rough bytes for weights, gradients, AdamW state and activations of one micro-batch.

    Activations follow Korthikanti et al. (2022): per layer ~ s*b*h*(34 + 5*a*s/h) bytes in
    16-bit, doubled in fp32; a checkpointed layer (every one for checkpoint_every 1, one in k for k)
    keeps only its input (2*s*b*h), plus one layer recomputed at a time. The loss (train/loss.py) holds one chunk of at most CHUNK_TOKENS
    scored positions' logits at a time: two fp32 work buffers and one 16-bit, 10 bytes per entry.
    """
    from tunesmith.train.loss import CHUNK_TOKENS

    half = precision.name in ("bf16", "fp16")
    # LoRA/QLoRA freeze the base: it is stored in the compute dtype (4-bit for QLoRA);
    # full fine-tuning keeps fp32 master weights and autocasts.
    weight_bytes = {"qlora": 0.5, "lora": 2 if half else 4, "full": 4}[method]
    h, layers, heads, vocab = config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.vocab_size
    s, b = seq_len, batch
    per_layer = s * b * h * (34 + 5 * heads * s / h) * (1 if half else 2)
    checkpointed = -(-layers // checkpoint_every) if checkpoint_every else 0
    activations = 2 * s * b * h * checkpointed + per_layer * (layers - checkpointed + (1 if checkpointed else 0))
    return {
        "weights": int(total * weight_bytes),
        "gradients": int(trainable * 4),
        "optimizer": int(trainable * 8),
        "activations": int(activations + min(s * b, CHUNK_TOKENS) * vocab * 10),
    }


def make_plan(recipe: Recipe, *, dataset: str | None = None, num_examples: int | None = None, world_size: int | None = None) -> Plan:
    """The plan for `recipe` on `dataset` (loaded as its stage's training would) or on `num_examples` examples."""
    from tunesmith.train.stages import get_stage

    stage = get_stage(recipe.stage)
    stage.check(recipe)
    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    notes: list[str] = []
    data_summary = None
    seq_len = recipe.data.max_length
    if num_examples is None:
        from tunesmith.models.load import load_tokenizer

        prepared = stage.plan_data(recipe, load_tokenizer(recipe.model.name), dataset or recipe.data.dataset)
        num_examples = prepared.num_examples
        num_sequences = prepared.num_sequences
        seq_len = prepared.longest
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
    memory = estimate_memory(model.config, total, trainable, precision, recipe.method, rows, seq_len, speed.checkpoint_every)

    def estimate(other, head: str) -> dict[str, int]:
        other_total, other_trainable = parameter_counts(recipe, other, head)
        return estimate_memory(other.config, other_total, other_trainable, precision, recipe.method, rows, seq_len, speed.checkpoint_every)

    more_total, more_trainable, more_memory = stage.plan_models(recipe, precision, estimate)
    total, trainable = total + more_total, trainable + more_trainable
    memory.update(more_memory)
    if stage.sequences_per_example == 2:
        notes.append(f"each step sees pairs: {recipe.training.per_device_train_batch_size} pairs per micro-batch run as {rows} sequences (chosen and rejected)")
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
    return plan
