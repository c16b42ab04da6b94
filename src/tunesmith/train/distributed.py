"""Several processes, one run: what the scaffold needs from accelerate when a recipe runs under `accelerate launch`.

accelerate (through transformers' Trainer) does the distributed work: it shards the data, wraps the model
(DDP, FSDP, DeepSpeed), averages gradients and writes checkpoints from the main process. What is ours is
the run around the Trainer: one run directory (the main process names and creates it, the others are told
its path), one writer of every file (recipe, metrics, plots, the final model, the model card), one console.

Launched without several processes (no WORLD_SIZE above 1) nothing here starts a process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Processes:
    """This process's place among the run's processes."""

    world: int = 1
    rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def share(self, value):
        """The main process's `value`, on every process (a picklable object)."""
        if self.world == 1:
            return value
        from accelerate.utils import broadcast_object_list

        box = [value]
        broadcast_object_list(box, from_process=0)
        return box[0]


def launched_rank() -> int:
    """This process's rank in the launch (0 when run directly)."""
    return int(os.environ.get("RANK", "0"))


def launched_world_size() -> int:
    """How many processes `accelerate launch` / torchrun started (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def processes(device: str) -> Processes:
    """Join the launch's process group (gloo on CPUs, NCCL on GPUs: accelerate picks) and say where we are."""
    if launched_world_size() <= 1:
        return Processes()
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu")
    return Processes(state.num_processes, state.process_index)


# ---------------------------------------------------------------- the recipe's `distributed:` section


def check_distributed(recipe, device: str, world: int) -> None:
    """Refuse strategies that cannot work here, before anything is written (a RecipeError naming the field)."""
    import importlib.util

    from tunesmith.errors import RecipeError

    d = recipe.distributed
    if d.strategy == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise RecipeError(
                "distributed.strategy is deepspeed, but the deepspeed package is not installed",
                where="distributed.strategy",
                hint="pip install deepspeed (CUDA GPUs), or use strategy: fsdp",
            )
        if device != "cuda":
            raise RecipeError("DeepSpeed ZeRO needs CUDA GPUs; this run is on a CPU", where="distributed.strategy", hint="use strategy: ddp (or fsdp) on CPUs")
    if recipe.method == "qlora" and (d.strategy == "fsdp" or (d.strategy == "deepspeed" and d.zero_stage == 3)):
        raise RecipeError(
            f"QLoRA's 4-bit weights cannot be sharded by {d.strategy}{' ZeRO-3' if d.strategy == 'deepspeed' else ''} here",
            where="distributed.strategy",
            hint="use strategy: ddp or deepspeed with zero_stage: 2 for QLoRA, or method: lora with FSDP",
        )
    if recipe.stage == "ppo" and d.strategy != "ddp" and world > 1:
        raise RecipeError(
            "PPO runs under ddp only: its actor and critic are two models in one trainer, which FSDP and ZeRO-3 do not shard together here",
            where="distributed.strategy",
            hint="use strategy: ddp",
        )


CPU_FSDP = "accelerate shards with FSDP only on GPUs (and other accelerators); on CPUs it runs as DDP, every process holding the whole model (tried here: 2 CPU processes gave the DDP run's losses exactly)"


def effective_strategy(recipe, device: str) -> str:
    """The strategy that will run: FSDP on CPUs is DDP (accelerate keeps MULTI_CPU), so tunesmith says so and plans for it."""
    strategy = recipe.distributed.strategy
    return "ddp" if strategy == "fsdp" and device == "cpu" else strategy


def strategy_note(recipe, device: str, world: int) -> str | None:
    """A sentence when the recipe's strategy is not what runs, or does nothing (one process)."""
    strategy = recipe.distributed.strategy
    if strategy == "ddp":
        return None
    if world <= 1:
        return f"distributed.strategy {strategy} applies under tunesmith launch / accelerate launch; this single process ignores it"
    if effective_strategy(recipe, device) != strategy:
        return f"distributed.strategy fsdp: {CPU_FSDP}"
    return None


def strategy_arguments(recipe, world: int, device: str) -> dict:
    """TrainingArguments for the recipe's strategy (transformers builds accelerate's FSDP / DeepSpeed plugin from them).
    DDP needs none: it is what several processes get by default. One process: none at all."""
    d = recipe.distributed
    if world <= 1 or effective_strategy(recipe, device) == "ddp":
        return {}
    if d.strategy == "fsdp":
        config = {
            "version": 2,
            "reshard_after_forward": d.fsdp_sharding == "full_shard",
            "cpu_offload": d.offload,
            "auto_wrap_policy": "TRANSFORMER_BASED_WRAP" if d.fsdp_wrap == "transformer_layer" else "SIZE_BASED_WRAP",
        }
        if d.fsdp_wrap == "size":
            config["min_num_params"] = 1_000_000
        return {"fsdp": True, "fsdp_config": config}
    zero: dict = {"stage": d.zero_stage}
    if d.offload:
        zero["offload_optimizer"] = {"device": "cpu"}
        if d.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu"}
    auto = "auto"  # filled in by transformers from the TrainingArguments, so the two never disagree
    return {
        "deepspeed": {
            "zero_optimization": zero,
            "train_micro_batch_size_per_gpu": auto,
            "gradient_accumulation_steps": auto,
            "gradient_clipping": auto,
            "bf16": {"enabled": auto},
            "fp16": {"enabled": auto},
        }
    }


def per_process_memory(memory: dict[str, int], recipe, world: int, device: str) -> tuple[dict[str, int], str]:
    """The plan's memory for one process under the strategy that runs, and a sentence saying what is divided."""
    d = recipe.distributed
    if world <= 1:
        return memory, ""
    strategy = effective_strategy(recipe, device)
    shared = {
        "ddp": (),
        "fsdp": ("weights", "gradients", "optimizer") if d.fsdp_sharding == "full_shard" else ("gradients", "optimizer"),
        "deepspeed": ("gradients", "optimizer") + (("weights",) if d.zero_stage == 3 else ()),
    }[strategy]
    out = {k: (v // world if k in shared else v) for k, v in memory.items()}
    if d.offload and strategy != "ddp":
        out = {k: (0 if k == "optimizer" or (k == "weights" and "weights" in shared) else v) for k, v in out.items()}
    if strategy == "ddp":
        what = f"ddp: every process holds the whole model, its gradients and optimizer state; activations are for its own 1/{world} of the batch"
    else:
        what = f"{strategy}: {', '.join(shared)} divided across {world} processes" + (
            "; optimizer state (and sharded weights) offloaded to CPU memory" if d.offload else ""
        )
    return out, f"memory per process ({what})"
