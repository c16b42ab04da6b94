"""`tunesmith inspect ...`: look inside (the modules command here; the others in cli/inspect_*.py)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from tunesmith.cli.main import app, console
from tunesmith.cli.options import RECIPE_OPTION, build_recipe, recipe_options

inspect_app = typer.Typer(
    help="Look inside: LoRA targets, number formats, next-token sampling, SFT's loss per token, RL rollouts and advantages, PPO's clipping and KL.",
    no_args_is_help=True,
)
app.add_typer(inspect_app, name="inspect")


@inspect_app.command("modules")
@recipe_options("model", "preset", "lora_r", "lora_alpha", "use_dora")
def modules(
    recipe: Path | None = RECIPE_OPTION,
    target_modules: str | None = typer.Option(None, "--target-modules", help="Comma-separated module names or all-linear."),
    layers: str | None = typer.Option(None, "--layers", help="all, low, mid, high, or comma-separated indices."),
    overrides: dict = None,
):
    """List the LoRA-targetable linear modules per decoder layer and mark what the recipe/preset selects."""
    from tunesmith.models.load import meta_model
    from tunesmith.models.lora import fused_note, linear_modules, lora_parameter_count, select_targets

    if target_modules:
        overrides["lora.target_modules"] = target_modules if target_modules == "all-linear" else target_modules.split(",")
    if layers:
        overrides["lora.layers"] = [int(x) for x in layers.split(",")] if layers[0].isdigit() else layers
    r = build_recipe(recipe, None, overrides)
    model = meta_model(r.model.name)
    candidates = linear_modules(model)
    selected = {t.name for t in select_targets(model, r.lora)}
    kinds = list(dict.fromkeys(t.kind for t in candidates))
    table = Table(title=f"{r.model.name}: LoRA targets ({'preset ' + r.lora.preset if r.lora.preset else 'recipe selection'})")
    table.add_column("layer", justify="right")
    for kind in kinds:
        table.add_column(kind, justify="center")
    table.add_column("trainable", justify="right")
    by_layer: dict[int, dict[str, object]] = {}
    for t in candidates:
        by_layer.setdefault(t.layer, {})[t.kind] = t
    for layer, row in sorted(by_layer.items()):
        chosen = [t for t in row.values() if t.name in selected]
        cells = [("[green]●[/]" if row[k].name in selected else "[dim]·[/]") if k in row else "" for k in kinds]
        table.add_row(str(layer), *cells, f"{lora_parameter_count(chosen, r.lora.r, r.lora.use_dora):,}" if chosen else "")
    console.print(table)
    targets = [t for t in candidates if t.name in selected]
    total = sum(p.numel() for p in model.parameters())
    count = lora_parameter_count(targets, r.lora.r, r.lora.use_dora)
    if note := fused_note(model, r.lora):
        console.print(f"note: {note}", soft_wrap=True, highlight=False)
    console.print(f"{len(targets)} modules selected, r={r.lora.r}: {count:,} trainable parameters ({count / total * 100:.3f}% of {total:,})")
    alpha = r.lora.alpha
    console.print(
        f"lora_alpha={alpha}{' (the default, 2r)' if r.lora.lora_alpha is None else ''}: each selected layer computes "
        f"W x + (alpha / r) B A x, the update scaled by {alpha / r.lora.r:g}",
        highlight=False,
    )
