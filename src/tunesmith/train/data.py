"""Training data for a recipe: load + template + validate (data/), then pack like TRL does."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.data import BUILTIN_DATASETS, PreparedData, prepare_dataset
from tunesmith.recipes.schema import Recipe

PACKING_STRATEGY = "bfd"  # TRL's best-fit-decreasing: keeps example boundaries (position ids restart per example)


@dataclass
class TrainingData:
    train: PreparedData
    eval: PreparedData | None
    num_sequences: int  # what the Trainer iterates over: examples, or packed sequences

    @property
    def report(self):
        return self.train.report

    def summary(self) -> str:
        text = self.train.report.summary()
        if self.num_sequences != self.train.report.num_examples:
            text += f"; packed into {self.num_sequences} sequences of <= max_length tokens"
        if self.eval is not None:
            text += f"\neval: {self.eval.report.summary()}"
        return text


def eval_source(recipe: Recipe, train_source: str) -> str | None:
    if recipe.data.eval_dataset:
        return None if recipe.data.eval_dataset == "none" else recipe.data.eval_dataset
    return f"{train_source}-eval" if f"{train_source}-eval" in BUILTIN_DATASETS else None


def longest_sequence(recipe: Recipe, data: TrainingData) -> int:
    """The longest row training will see: max_length when packing, else the longest (truncated) example."""
    return recipe.data.max_length if recipe.data.packing else min(recipe.data.max_length, data.report.max_tokens)


def count_packed(prepared: PreparedData, max_length: int) -> int:
    """How many sequences TRL's packing makes of this data (the same function SFTTrainer calls)."""
    from trl.data_utils import pack_dataset

    return len(pack_dataset(prepared.dataset.select_columns(["input_ids", "labels"]), max_length, PACKING_STRATEGY))


def prepare_training_data(recipe: Recipe, source: str | None = None, tokenizer=None, with_eval: bool = True) -> TrainingData:
    from tunesmith.models.load import load_tokenizer

    source = source or recipe.data.dataset
    tokenizer = tokenizer or load_tokenizer(recipe.model.name)
    options = dict(format=recipe.data.format, max_length=recipe.data.max_length, truncation=recipe.data.truncation, train_on_prompt=recipe.data.train_on_prompt)
    train = prepare_dataset(source, tokenizer, **options)
    evaluation = None
    if with_eval and (src := eval_source(recipe, source)):
        evaluation = prepare_dataset(src, tokenizer, **options)
    sequences = count_packed(train, recipe.data.max_length) if recipe.data.packing else train.report.num_examples
    return TrainingData(train, evaluation, sequences)
