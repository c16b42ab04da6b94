"""`tunesmith eval`: loss, perplexity and generation diagnostics with verdicts; JSON for machines."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tunesmith.cli.main import app, console
from tunesmith.models.builtin import DEFAULT_MODEL


@app.command("eval")
def evaluate(
    models: list[str] = typer.Option(
        [DEFAULT_MODEL], "--model", "-m", help="Built-in name, model/adapter/run directory or .gguf file; several: side by side, the first under test."
    ),
    data: str = typer.Option("pirate-eval", "--data", help="Eval data: built-in name, file or directory (any format the data layer knows)."),
    train_data: str | None = typer.Option(None, "--train-data", help="Training data, to detect memorization (default: a run directory's own dataset)."),
    reference_model: str | None = typer.Option(None, "--reference-model", help="Measure drift: mean per-token KL(model || reference)."),
    match: str | None = typer.Option(
        None, "--match", help="Score answers: exact, contains or regex against each row's --answers-field (else the reference reply)."
    ),
    answers_field: str = typer.Option("answer", "--answers-field", help="Row field holding the short answer for --match."),
    pairs: str | None = typer.Option(
        None,
        "--pairs",
        help="With several --model: held-out preference pairs, to compare how often each ranks the chosen answer first (e.g. pirate-pairs-eval).",
    ),
    max_prompts: int = typer.Option(16, min=1, help="Prompts to generate for."),
    max_new_tokens: int = typer.Option(64, min=1, help="Tokens per generation."),
    max_length: int = typer.Option(1024, min=8, help="Longest eval example in tokens."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the report as JSON here."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Evaluate a model: loss/perplexity, template leakage, repetition, memorization, drift and accuracy.
    With several --model, every model on the same data, side by side."""
    from tunesmith.data import prepare_dataset
    from tunesmith.errors import TunesmithError
    from tunesmith.evaluate import diagnose
    from tunesmith.models import load_model
    from tunesmith.models.load import Loaded, load_tokenizer, resolve_model

    if match and match not in ("exact", "contains", "regex"):
        raise TunesmithError(f"--match is '{match}'; expected exact, contains or regex", hint="--match exact, --match contains or --match regex")
    if output and not output.parent.is_dir():
        raise TunesmithError(f"cannot write '{output}': folder '{output.parent}' does not exist", hint="create the folder, or pass another --output")
    if len(models) > 1:
        return _side_by_side(models, data, pairs, match, answers_field, max_prompts, max_new_tokens, output, as_json, train_data, reference_model)
    if pairs:
        raise TunesmithError("--pairs compares several models (give --model more than once); for one model's preference accuracy see `tunesmith score`")
    model = models[0]
    source = resolve_model(model)
    tokenizer = load_tokenizer(source)
    # the data is read and checked before any weights are loaded: a bad row costs no time
    if train_data is None and (Path(model) / "recipe.yaml").is_file():
        from tunesmith.recipes import load_recipe

        train_data = load_recipe(Path(model) / "recipe.yaml").data.dataset
    train = prepare_dataset(train_data, tokenizer, max_length=max_length).examples if train_data else None
    eval_data = prepare_dataset(data, tokenizer, max_length=max_length)
    reference_source = resolve_model(reference_model) if reference_model else None
    loaded = Loaded(source, load_model(source), tokenizer)
    reference = load_model(reference_source) if reference_source else None
    from tunesmith.evaluate.diagnose import short_answers

    answers = short_answers(data, answers_field) if match else None
    report = diagnose(
        loaded.model,
        tokenizer,
        eval_data,
        name=model,
        train_examples=train,
        reference=reference,
        max_prompts=max_prompts,
        max_new_tokens=max_new_tokens,
        match=match,
        answers=answers,
    )
    _show(report, output, as_json)


def _side_by_side(models, data, pairs, match, answers_field, max_prompts, max_new_tokens, output, as_json, train_data, reference_model) -> None:
    """Every model measured on the same prompts and pairs, one at a time (memory holds one), in one table."""
    from tunesmith.errors import TunesmithError
    from tunesmith.evaluate.compare import compare_models, model_labels

    if train_data or reference_model:
        raise TunesmithError("--train-data and --reference-model measure one model; with several --model drop them, or run eval once per model")
    if len(set(models)) < len(models):
        raise TunesmithError("the same --model is given twice; give each model once")
    say = (lambda line: None) if as_json else (lambda line: console.print(line, highlight=False))
    comparison = compare_models(
        model_labels(models), data=data, pairs=pairs, max_prompts=max_prompts, max_new_tokens=max_new_tokens, match=match, answers_field=answers_field, log=say
    )
    _show(comparison, output, as_json)


def _show(report, output: Path | None, as_json: bool) -> None:
    """A diagnostics report or a comparison: to a file, as JSON, or as the table."""
    if output:
        output.write_text(json.dumps(report.to_json(), indent=2))
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return
    report.render(console)
    if output:
        console.print(f"report: {output}")
