"""`tunesmith plan`: print what a recipe will do before training (and check the data)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tunesmith.cli.main import app, console
from tunesmith.cli.options import RECIPE_FLAGS, RECIPE_OPTION, SET_HELP, build_recipe, recipe_options


def _steps(steps: list[int], limit: int = 8) -> str:
    if len(steps) <= limit:
        return ", ".join(map(str, steps)) or "none"
    return f"{', '.join(map(str, steps[:3]))}, ..., {', '.join(map(str, steps[-2:]))} ({len(steps)} in all)"


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 / 10 else f"{n / 1024**2:.0f} MiB"


def render(plan) -> None:
    from tunesmith.report.plots import sparkline

    s = plan.schedule

    def t(line: str) -> None:
        console.print(line, soft_wrap=True, highlight=False)

    if plan.data_summary:
        t(f"[bold]data[/]            {plan.data_summary}")
    else:
        t(f"[bold]data[/]            {plan.num_examples:,} examples (--num-examples)")
    t(f"[bold]stage[/]           {plan.stage}")
    t(f"[bold]precision[/]       {plan.precision.name} ({plan.precision.reason})")
    if plan.speed:
        t(f"[bold]speed[/]           {plan.speed.summary()}")
    share = plan.trainable_parameters / plan.total_parameters * 100
    t(f"[bold]parameters[/]      {plan.trainable_parameters:,} trainable of {plan.total_parameters:,} ({share:.2f}%), method {plan.method}")
    t(
        f"[bold]batch[/]           {s.per_device_train_batch_size} per device x {s.world_size} device(s) x {s.gradient_accumulation_steps} accumulation = {s.effective_batch_size} {plan.unit} per step (effective batch size)"
    )
    t(
        f"[bold]steps[/]           {s.steps_per_epoch} per epoch ({s.micro_batches_per_epoch} micro-batches of {s.num_sequences:,} {plan.unit}); {s.total_steps} optimizer steps = {s.num_epochs:g} epoch{'' if s.num_epochs == 1 else 's'}"
    )
    t(f"[bold]warmup[/]          {s.warmup_steps} steps")
    kept = f" (kept: {_steps(s.kept_checkpoints)})" if s.kept_checkpoints != s.checkpoint_steps else ""
    t(f"[bold]checkpoints[/]     {_steps(s.checkpoint_steps)}{kept}")
    t(f"[bold]logging[/]         {_steps(s.logging_steps)}")
    if s.eval_steps:
        t(f"[bold]evaluation[/]      {_steps(s.eval_steps)}")
    lr = s.learning_rates
    if lr:
        t(f"[bold]learning rate[/]   {sparkline(lr)}  peak {max(lr):.2e}, first {lr[0]:.2e}, last {lr[-1]:.2e}")
    m = plan.memory_bytes
    total = sum(m.values())
    parts = ", ".join(f"{k} {_gib(v)}" for k, v in m.items())
    where = "of RAM (this process on the CPU)" if plan.precision.device == "cpu" else f"of {plan.precision.device.upper()} device memory"
    t(f"[bold]memory (est.)[/]   {_gib(total)} {where}: {parts}")
    if plan.seconds is not None:
        t(f"[bold]time (est.)[/]     {_duration(plan.seconds)} on this machine: {plan.seconds_basis}, at the speed a LoRA step of this model measures here now")
    for note in plan.notes:
        t(f"[yellow]note:[/] {note}")


@app.command()
@recipe_options(*RECIPE_FLAGS, extra={"stage": ("stage", str)})
def plan(
    recipe: Path | None = RECIPE_OPTION,
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    num_examples: int | None = typer.Option(None, "--num-examples", min=1, help="Plan for N examples instead of loading the dataset."),
    num_devices: int | None = typer.Option(None, "--num-devices", min=1, help="Data-parallel devices (default: WORLD_SIZE or 1)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    pipeline: bool = typer.Option(False, "--pipeline", help="Plan the built-in demo pipeline (or pass a pipeline file to -c)."),
    plot: Path | None = typer.Option(None, "--plot", help="Write the learning-rate curve with checkpoints to this PNG."),
    overrides: dict = None,
):
    """Show the schedule, checkpoints, learning-rate curve and memory a recipe implies, and check its data.
    Given a pipeline file (or --pipeline for the built-in demo): every stage's plan and the estimated time here."""
    from tunesmith.pipeline import is_pipeline_file

    if pipeline or (recipe and is_pipeline_file(recipe)):
        return plan_of_pipeline(recipe, as_json)
    from tunesmith.train.plan import make_plan

    built = build_recipe(recipe, set_, overrides)
    result = make_plan(built, num_examples=num_examples, world_size=num_devices)
    if built.stage == "pretrain":  # how long a corpus takes is the first question about it
        from tunesmith.models.load import meta_model
        from tunesmith.pipeline.plan import Speeds, train_seconds

        result.seconds, result.seconds_basis = train_seconds(result, built, meta_model(built.model.name).config, Speeds())

    if plot:
        from tunesmith.report.plots import plot_series

        s = result.schedule
        steps = list(range(1, s.total_steps + 1))
        plot_series(
            plot, {"learning rate": (steps, s.learning_rates)}, "learning-rate schedule", "optimizer step", "learning rate", {"checkpoint": s.checkpoint_steps}
        )
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
        return
    render(result)
    if plot:
        console.print(f"plot: {plot}")


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def plan_of_pipeline(file: Path | None, as_json: bool) -> None:
    from rich.table import Table

    from tunesmith.cli.pipeline import pipeline_file
    from tunesmith.models.precision import cpu_capability
    from tunesmith.pipeline import load_pipeline
    from tunesmith.pipeline.plan import plan_pipeline

    spec = load_pipeline(pipeline_file(file))
    steps = plan_pipeline(spec)
    total = sum(s.seconds for s in steps)
    if as_json:
        print(
            json.dumps(
                {
                    "pipeline": spec.name,
                    "total_seconds": round(total, 1),
                    "stages": [
                        {"name": s.name, "stage": s.stage, "seconds": round(s.seconds, 1), "basis": s.basis, "plan": s.plan.to_json() if s.plan else None}
                        for s in steps
                    ],
                },
                indent=2,
            )
        )
        return
    for s in steps:
        if s.plan is not None:
            console.print(f"[bold]── {s.name} ({s.stage}) ──[/]")
            render(s.plan)
    table = Table(title=f"pipeline {spec.name}: estimated time on this machine", title_justify="left")
    for col in ("stage", "kind", "estimate", "from"):
        table.add_column(col, overflow="fold")
    for s in steps:
        table.add_row(s.name, s.stage, _duration(s.seconds), s.basis)
    table.add_row("[bold]total[/]", "", f"[bold]{_duration(total)}[/]", "")
    console.print(table)
    console.print(f"cpu: {cpu_capability()['summary']}", soft_wrap=True)
