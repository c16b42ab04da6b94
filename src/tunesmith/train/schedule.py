"""The schedule a recipe implies: steps, checkpoints, logs, warmup and learning rates.

This is the arithmetic of Hugging Face's Trainer (transformers 5.x `_inner_training_loop`
and `DefaultFlowCallback`), written out so `tunesmith plan` can print it before any
training; tests/train/test_plan_matches_trainer.py runs a real Trainer and checks
that every number here is what it did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Schedule:
    num_sequences: int  # training sequences after templating, filtering and packing
    world_size: int
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    effective_batch_size: int  # sequences per optimizer step, all devices
    micro_batches_per_epoch: int  # per device
    steps_per_epoch: int  # optimizer steps
    total_steps: int
    num_epochs: float  # epochs actually covered, max_steps included
    warmup_steps: int
    checkpoint_steps: list[int] = field(default_factory=list)
    kept_checkpoints: list[int] = field(default_factory=list)
    logging_steps: list[int] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    learning_rates: list[float] = field(default_factory=list)  # lr used by optimizer step k at index k-1


def compute_schedule(training, num_sequences: int, world_size: int = 1) -> Schedule:
    """Steps, checkpoints, logs and learning rates for `training` (a TrainingSection) on `num_sequences`."""
    t = training
    per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * world_size
    # DataLoader with drop_last=False: the last micro-batch may be short; the last step of an
    # epoch may accumulate fewer micro-batches (transformers rounds steps per epoch up).
    micro_batches = math.ceil(num_sequences / (t.per_device_train_batch_size * world_size))
    steps_per_epoch = max(math.ceil(micro_batches / t.gradient_accumulation_steps), 1)
    total = t.max_steps if t.max_steps > 0 else math.ceil(t.num_train_epochs * steps_per_epoch)
    warmup = t.warmup_steps if t.warmup_steps > 0 else math.ceil(total * t.warmup_ratio)

    def every(n: int) -> list[int]:
        return list(range(n, total + 1, n))

    epoch_ends = sorted({min(e * steps_per_epoch, total) for e in range(1, math.ceil(total / steps_per_epoch) + 1)})
    saves: list[int] = []
    if t.save_strategy == "steps":
        saves = sorted(set(every(t.save_steps)) | {total})  # the Trainer also saves at the last step
    elif t.save_strategy == "epoch":
        saves = epoch_ends
    kept = saves[-t.save_total_limit :] if t.save_total_limit else list(saves)

    logs: list[int] = []
    if t.logging_strategy == "steps":
        logs = sorted(set(every(t.logging_steps)) | ({1} if t.logging_first_step else set()))
    elif t.logging_strategy == "epoch":
        logs = epoch_ends
    evals: list[int] = []
    if t.eval_strategy == "steps":
        n = t.eval_steps or t.logging_steps
        evals = sorted(set(every(n)) | {total})
    elif t.eval_strategy == "epoch":
        evals = epoch_ends

    return Schedule(
        num_sequences=num_sequences,
        world_size=world_size,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        effective_batch_size=per_step,
        micro_batches_per_epoch=micro_batches,
        steps_per_epoch=steps_per_epoch,
        total_steps=total,
        num_epochs=round(total / steps_per_epoch, 4),
        warmup_steps=warmup,
        checkpoint_steps=saves,
        kept_checkpoints=kept,
        logging_steps=logs,
        eval_steps=evals,
        learning_rates=learning_rates(t, total, warmup),
    )


def learning_rates(training, total_steps: int, warmup_steps: int) -> list[float]:
    """The lr each optimizer step uses, from the same `get_scheduler` the Trainer calls."""
    import torch
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=training.learning_rate)
    scheduler = get_scheduler(training.lr_scheduler_type, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
    rates = []
    for _ in range(total_steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates
