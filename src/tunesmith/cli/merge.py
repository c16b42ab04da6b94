"""`tunesmith merge`: merge models, run directories or LoRA adapters (mergekit for full models, PEFT for adapters)."""

from __future__ import annotations

from pathlib import Path

import typer

from tunesmith.cli.main import app, console


def _numbers(values: list[str] | None):
    """`--t 0.5`, `--t 0,0.5,1` (a gradient over the layers) or repeated values -> a number or a list."""
    if not values:
        return None
    out = [float(v) for item in values for v in str(item).split(",") if v.strip()]
    return out[0] if len(out) == 1 else out


@app.command()
def merge(
    recipe: Path | None = typer.Option(
        None, "--recipe", "-c", help="Merge recipe YAML in mergekit's shape (merge_method, base_model, models, parameters, dtype)."
    ),
    model: list[str] | None = typer.Option(None, "--model", "-m", help="A model to merge (repeat): run, adapter or model directory, built-in name."),
    method: str = typer.Option("slerp", "--method", help="linear, slerp, task_arithmetic, ties, dare_ties, dare_linear, model_stock, ..."),
    base: str | None = typer.Option(None, "--base", help="The base model (task arithmetic, TIES, DARE: deltas are taken from it; slerp: t=0)."),
    t: list[str] | None = typer.Option(None, "--t", help="slerp: 0 = the first model, 1 = the second; a list spreads over the layers (0,0.5,1)."),
    attn_t: list[str] | None = typer.Option(None, "--attn-t", help="slerp: t for the attention weights (a number or a list over the layers)."),
    mlp_t: list[str] | None = typer.Option(None, "--mlp-t", help="slerp: t for the MLP weights (a number or a list over the layers)."),
    weight: list[float] | None = typer.Option(None, "--weight", help="One weight per --model (linear, task_arithmetic, ties, dare)."),
    density: list[float] | None = typer.Option(None, "--density", help="ties/dare: the share of each delta kept (one value, or one per --model)."),
    dtype: str = typer.Option("float32", "--dtype", help="dtype the merge is computed and saved in."),
    tokenizer_source: str | None = typer.Option(
        None, "--tokenizer-source", help="Which model's tokenizer and chat template the merge gets (default: the base model's, else the first)."
    ),
    path: str = typer.Option(
        "auto",
        "--path",
        help="auto: the adapter path (PEFT's add_weighted_adapter, cheap) where it is exact (linear, task_arithmetic of LoRA adapters on one base), else full (mergekit on the materialised models); adapter: also ties/dare the way PEFT does them (an SVD approximation of mergekit's); full.",
    ),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help="Where to write (default runs/merge-<method>-<time>)."),
    eval_: bool = typer.Option(False, "--eval", help="Then evaluate the merge and each source side by side on one prompt set."),
    eval_data: str = typer.Option("pirate-eval", "--eval-data", help="--eval: prompts with reference answers."),
    eval_pairs: str | None = typer.Option("pirate-pairs-eval", "--eval-pairs", help="--eval: preference pairs to measure ranking on ('none' to skip)."),
):
    """Merge models: SLERP of two (per layer and module kind), linear, task arithmetic, TIES, DARE, model stock."""
    import time

    from tunesmith.errors import RecipeError
    from tunesmith.merge import load_merge_recipe, recipe_from_flags, run_merge, slerp_recipe

    if recipe:
        plan = load_merge_recipe(recipe)
    elif not model or len(model) < 2:
        raise RecipeError(
            "tunesmith merge needs a recipe (-c merge.yaml) or at least two --model values", hint="e.g. tunesmith merge -m runs/sft -m runs/dpo --t 0.5"
        )
    elif method == "slerp" and len(model) == 2 and not weight and not density:
        plan = slerp_recipe(model[0], model[1], _numbers(t) if t else 0.5, attn_t=_numbers(attn_t), mlp_t=_numbers(mlp_t), dtype=dtype)
    else:
        plan = recipe_from_flags(
            method, model, base=base, weights=weight, density=density[0] if density and len(density) == 1 else density, t=_numbers(t), dtype=dtype
        )
    if tokenizer_source and not recipe:
        from tunesmith.merge import MergeRecipe

        plan = MergeRecipe({**plan.data, "tokenizer_source": tokenizer_source})
    out = output_dir or Path("runs") / f"merge-{plan.method}-{time.strftime('%Y%m%d-%H%M%S')}"
    said: list[str] = []

    def log(line: str) -> None:
        said.append(line)
        console.print(line, soft_wrap=True, highlight=False)

    result = run_merge(plan, out, path=path, log=log)
    console.print(f"merged ({result.method}, {result.path} path) in {result.seconds:.1f} s: {result.model_dir}", highlight=False)
    for note in result.notes:
        if not any(note in line for line in said):  # what the merge already said as it went is not repeated
            console.print(f"note: {note}", soft_wrap=True, highlight=False)
    if eval_:
        from tunesmith.evaluate.compare import compare_models, model_labels

        models = {"merged": str(result.output_dir), **model_labels(plan.references())}
        comparison = compare_models(
            models, data=eval_data, pairs=None if eval_pairs in (None, "none") else eval_pairs, log=lambda line: console.print(line, highlight=False)
        )
        comparison.render(console)
    console.print(f"try it: tunesmith generate --model {result.output_dir} --prompt 'What is the capital of France?'", highlight=False)
