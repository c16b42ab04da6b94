"""`tunesmith sft`: supervised fine-tuning; with no arguments, the pirate LoRA demo."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tunesmith.cli.main import app, console
from tunesmith.cli.options import RECIPE_OPTION, SET_HELP, build_recipe, recipe_options


@app.command()
@recipe_options()
def sft(
    recipe: Optional[Path] = RECIPE_OPTION,
    set_: Optional[list[str]] = typer.Option(None, "--set", help=SET_HELP),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue a run: its directory (newest complete checkpoint) or one checkpoint-N directory."),
    overrides: dict = None,
):
    """Supervised fine-tuning: full, LoRA, DoRA or QLoRA. With no arguments: LoRA on the built-in pirate data."""
    from tunesmith.train.sft import run_sft

    if resume and (recipe or set_ or overrides):
        console.print("note: --resume continues with the run's own recipe.yaml; other options are ignored")
    result = run_sft(None if resume else build_recipe(recipe, set_, overrides), resume=resume, console=console)
    if result.after:
        from tunesmith.recipes import load_recipe

        prompts = load_recipe(result.run_dir / "recipe.yaml").sample.prompts
        table = Table(title="answers before and after training", show_lines=True)
        table.add_column("prompt", style="bold")
        if result.before:
            table.add_column("before")
        table.add_column("after")
        for i, prompt in enumerate(prompts):
            table.add_row(prompt, *([result.before[i]] if result.before else []), result.after[i])
        console.print(table)
    if result.diagnostics is not None:
        result.diagnostics.render(console)
    loss = f"final train loss {result.train_loss:.4f}" if result.train_loss is not None else ""
    if result.eval_loss is not None:
        loss += f", eval loss {result.eval_loss:.4f}"
    console.print(f"done in {result.seconds:.0f} s: {result.steps} steps, {loss}")
    console.print(f"model: {result.model_dir}" + (f"  merged: {result.merged_dir}" if result.merged_dir else ""))
    console.print(f"try it: tunesmith generate --model {result.run_dir} --prompt 'What is the capital of France?'", soft_wrap=True)
