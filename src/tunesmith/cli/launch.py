"""`tunesmith launch -n N [--fsdp | --deepspeed zero2|zero3] -- sft -c recipe.yaml`: any stage on several processes.

A convenience over `accelerate launch`: it writes the accelerate config for the processes and machines
asked for (.tunesmith/accelerate-*.yaml, kept so the same launch can be repeated by hand), turns
--fsdp / --deepspeed into the recipe's `distributed:` section (which the run maps to transformers'
TrainingArguments), prints the command it runs, and runs it. Every stage works under a plain
`accelerate launch -m tunesmith ...` as well.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import typer

from tunesmith.cli.main import app, console
from tunesmith.errors import TunesmithError


def accelerate_config(num_processes: int, num_machines: int, machine_rank: int, main_process_ip: str | None, main_process_port: int, gpu: bool) -> str:
    """accelerate's config YAML for a plain multi-process launch (torch.distributed.run on each machine).
    Precision is tunesmith's (the recipe's `model.precision`), so accelerate's mixed_precision stays 'no'."""
    lines = [
        "# written by `tunesmith launch`; use it again with: accelerate launch --config_file THIS -m tunesmith <stage> ...",
        "compute_environment: LOCAL_MACHINE",
        "# MULTI_GPU selects accelerate's torch.distributed.run launcher; on CPUs the run itself joins with gloo",
        "# (tunesmith sets TrainingArguments.use_cpu), while use_cpu: true here would start a single process",
        "distributed_type: MULTI_GPU",
        f"num_processes: {num_processes}",
        f"num_machines: {num_machines}",
        f"machine_rank: {machine_rank}",
        f"main_process_port: {main_process_port}",
        "mixed_precision: 'no'",
        "dynamo_config: {}",
        "use_cpu: false",
    ]
    if main_process_ip:
        lines.append(f"main_process_ip: {main_process_ip}")
    if gpu:
        lines.append("gpu_ids: all")
    return "\n".join(lines) + "\n"


def strategy_sets(fsdp: bool, deepspeed: str | None) -> list[str]:
    """--fsdp / --deepspeed as recipe overrides of the `distributed:` section."""
    if fsdp and deepspeed:
        raise TunesmithError("--fsdp and --deepspeed are two ways to shard a model; choose one")
    if fsdp:
        return ["--set", "distributed.strategy=fsdp"]
    if deepspeed:
        stages = {"zero2": 2, "zero3": 3}
        if deepspeed not in stages:
            raise TunesmithError(f"--deepspeed is {deepspeed!r}; it must be zero2 or zero3")
        return ["--set", "distributed.strategy=deepspeed", "--set", f"distributed.zero_stage={stages[deepspeed]}"]
    return []


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def launch(
    ctx: typer.Context,
    num_processes: int = typer.Option(2, "--num-processes", "-n", min=1, help="Processes on this machine (one per GPU; on a CPU at most one per core)."),
    fsdp: bool = typer.Option(False, "--fsdp", help="Shard weights, gradients and optimizer state with FSDP (recipe: distributed.strategy=fsdp)."),
    deepspeed: str | None = typer.Option(None, "--deepspeed", help="DeepSpeed ZeRO: zero2 or zero3 (CUDA; recipe: distributed.strategy=deepspeed)."),
    num_machines: int = typer.Option(1, "--num-machines", min=1, help="Machines in the job; run the same command on each with its --machine-rank."),
    machine_rank: int = typer.Option(0, "--machine-rank", min=0, help="This machine's rank (0 is the main one)."),
    main_process_ip: str | None = typer.Option(None, "--main-process-ip", help="Address of machine 0 (several machines)."),
    main_process_port: int = typer.Option(29500, "--main-process-port", help="Port on machine 0 for the process group."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write the config and print the command without running it."),
):
    """Run a tunesmith command on several processes: `tunesmith launch -n 2 -- sft -c recipe.yaml`."""
    import torch

    command = list(ctx.args)
    if not command:
        raise TunesmithError("tunesmith launch needs the command to run after --", hint="e.g. tunesmith launch -n 2 -- sft -c recipe.yaml")
    if num_machines > 1 and not main_process_ip:
        raise TunesmithError(
            f"{num_machines} machines need the address of machine 0",
            hint="add --main-process-ip 10.0.0.1 (the same on every machine) and each machine's --machine-rank",
        )
    gpu = torch.cuda.is_available()
    total = num_processes * num_machines
    name = f"accelerate-{total}p" + ("-fsdp" if fsdp else f"-{deepspeed}" if deepspeed else "") + ("" if gpu else "-cpu") + ".yaml"
    config = Path(".tunesmith") / name
    config.parent.mkdir(exist_ok=True)
    config.write_text(accelerate_config(total, num_machines, machine_rank, main_process_ip, main_process_port, gpu))
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m", "tunesmith", *command, *strategy_sets(fsdp, deepspeed)]
    console.print(f"config: {config}", highlight=False)
    console.print(f"running: {shlex.join(['accelerate launch', *argv[3:]])}", soft_wrap=True, highlight=False, markup=False)
    if dry_run:
        return
    raise typer.Exit(subprocess.call(argv))
