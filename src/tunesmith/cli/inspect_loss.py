"""`tunesmith inspect loss`: SFT's cross-entropy token by token on one example, templated and masked
exactly as training does (which tokens count, what each one costs, the mean)."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from tunesmith.cli.inspect import inspect_app
from tunesmith.cli.main import console, say
from tunesmith.errors import TunesmithError
from tunesmith.models.builtin import DEFAULT_MODEL


@inspect_app.command("loss")
def loss(
    model: str | None = typer.Option(None, "--model", "-m", help=f"Built-in name, model/adapter/run directory or .gguf file (default {DEFAULT_MODEL})."),
    dataset: str | None = typer.Option(None, "--dataset", help="Take the example from this data (built-in name or file), templated as training does."),
    row: int = typer.Option(1, "--row", min=1, help="With --dataset: which example (1 = the first)."),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="Without --dataset: the user's message."),
    answer: str | None = typer.Option(None, "--answer", "-a", help="Without --dataset: the assistant's reply to score."),
    train_on_prompt: bool = typer.Option(False, "--train-on-prompt", help="Count the prompt's tokens too (data.train_on_prompt)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Cross-entropy token by token: p(token | the tokens before it), whether it counts in SFT's loss
    (by default the reply and its end-of-turn token only), -log p, and the mean: the loss training reports."""
    from tunesmith.data import prepare_dataset
    from tunesmith.data.tokenize import tokenize_example
    from tunesmith.evaluate.tokens import explain_loss
    from tunesmith.models import load_pretrained

    if dataset is None and (prompt is None or answer is None):
        raise TunesmithError("give --dataset (and --row), or --prompt and --answer: the example whose loss to show")
    if dataset is not None and (prompt is not None or answer is not None):
        raise TunesmithError("give --dataset or --prompt/--answer, not both")
    loaded = load_pretrained(model or DEFAULT_MODEL)
    if dataset is None:
        where = "the prompt and answer given"
        example = {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}
        tokens = tokenize_example(example, loaded.tokenizer, train_on_prompt=train_on_prompt)
        ids, labels = tokens["input_ids"], tokens["labels"]
    else:
        data = prepare_dataset(dataset, loaded.tokenizer, max_length=None, train_on_prompt=train_on_prompt)
        if row > data.report.num_examples:
            raise TunesmithError(f"--row is {row}, but {dataset} has {data.report.num_examples} examples")
        where = f"{dataset}, example {row}"
        ids, labels = data.dataset[row - 1]["input_ids"], data.dataset[row - 1]["labels"]
    result = explain_loss(loaded.model, loaded.tokenizer, ids, labels)
    if as_json:
        print(json.dumps({"example": where, **result.to_dict()}, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{escape(where)}: {len(ids)} tokens")
    for column in ("#", "token", "in loss", "p(token | before)", "-log p"):
        table.add_column(column, justify="left" if column in ("token", "in loss") else "right")
    for t in result.tokens:
        p = "" if t.probability is None else f"{t.probability:.4f}"
        nll = "" if t.nll is None else f"{t.nll:.3f}"
        style = None if t.trained else "dim"
        table.add_row(str(t.position), escape(repr(t.token)), "✓" if t.trained else "· (-100)", p, nll if t.trained else f"({nll})" if nll else "", style=style)
    console.print(table)
    n, masked = len(result.trained), len(ids) - len(result.trained)
    counted = "the prompt and the reply" if train_on_prompt else "the reply and its end-of-turn token"
    say(f"in the loss: {n} tokens ({counted}); masked: {masked} (label -100: predicted but not scored)")
    say(
        f"loss = mean of -log p over the {n} = {result.loss:.4f} (perplexity {result.perplexity:.2f}); "
        f"training's loss function on this example: {result.training_loss:.4f}"
    )
