"""What a training stage is: the few things that differ between SFT, reward models, DPO, KTO, ORPO.

Everything else (run directory, preflight, precision, loading, the adapter, the reference
model, callbacks, OOM, saving, the model card) is the scaffold's (train/scaffold.py). A
stage says which data it takes, which TRL config and trainer it uses, and how to measure
what training changed; a new stage is one module in this folder plus a line in STAGES.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


@dataclass
class StageData:
    """A stage's data as its trainer takes it, plus what the scaffold and reports need to know."""

    train: Any  # datasets.Dataset in the trainer's format
    eval: Any | None
    summary: str
    num_examples: int
    num_sequences: int  # what the Trainer iterates over (examples, packed sequences, pairs)
    longest: int  # longest row in tokens, as the trainer will see it
    shared_longest: int = 0  # pairs: the longest prompt + chosen + rejected, one row when the prompt runs once (train/prefix.py)
    shared_mean: float = 0.0  # pairs: the mean of the same
    tokens: int = 0  # all rows' tokens (pairs: prompt + the longer answer; RL: the prompts), for the plan's time estimate
    eval_examples: list[dict] = field(default_factory=list)  # canonical rows, for the before/after measurement
    raw: Any = None  # the stage's own prepared object (e.g. SFT's TrainingData)
    extras: dict = field(default_factory=dict)  # what a stage's trainer needs from the recipe beyond its config (PPO: the critic's source)


@dataclass
class Change:
    """One line of "what changed": a measurement on the eval split before and after training."""

    metric: str
    before: float | None
    after: float | None
    fmt: str = "{:.3f}"

    def show(self, value: float | None) -> str:
        return "n/a" if value is None else self.fmt.format(value)

    def to_json(self) -> dict:
        return {"metric": self.metric, "before": self.before, "after": self.after}


@dataclass
class StageResult:
    """What every stage returns; one CLI renderer shows it."""

    stage: str
    run_dir: Path
    model_dir: Path
    steps: int
    train_loss: float | None
    eval_loss: float | None
    seconds: float
    trainable_parameters: int = 0
    merged_dir: Path | None = None
    prompts: list[str] = field(default_factory=list)
    before: list[str] = field(default_factory=list)  # sample answers (causal-LM stages)
    after: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)  # a few rows shown after the run (e.g. scored pairs)
    examples_title: str = ""
    diagnostics: object = None  # evaluate.DiagnosticsReport on the eval split (SFT)


class Stage:
    """Base class: override what differs. Class attributes are read by the scaffold and by `plan`."""

    name: ClassVar[str]
    title: ClassVar[str]  # "direct preference optimisation"
    data_kind: ClassVar[str]  # sft | preference | unpaired
    needs_reference: ClassVar[bool] = False  # a frozen copy of the starting policy (LoRA: adapter disabled)
    head: ClassVar[str] = "causal"  # causal | reward (sequence classification, one score)
    trainer_wraps_adapter: ClassVar[bool] = True  # give the trainer a peft_config instead of a PeftModel
    sequences_per_example: ClassVar[int] = 1  # DPO/ORPO/CPO/reward run chosen and rejected through the model
    progress_metrics: ClassVar[tuple[str, ...]] = ()  # logged metrics shown in progress lines
    plot_metrics: ClassVar[tuple[str, ...]] = ()  # extra curves for <run>/metrics.png
    chat: ClassVar[bool] = True  # sample prompts are chat turns (pretrain: raw text to continue)
    projects_every_position: ClassVar[bool] = False  # the trainer's loss takes the whole micro-batch's logits at once (ORPO, CPO)
    packs_documents: ClassVar[bool] = False  # rows hold several documents, positions restarting per document (pretrain's blocks)
    unpadded_rows: ClassVar[bool] = False  # on a CPU its rows run without padding (train/varlen.py): SFT, DPO, ORPO, CPO, KTO
    shares_prompts: ClassVar[str] = ""  # what runs a prompt once on a CPU (train/prefix.py): "pair" (DPO, ORPO, CPO), "group" (GRPO, RLOO)

    def all_positions_projected(self, recipe, precision) -> bool:
        """Whether the loss takes the micro-batch's whole logits at once (the plan's memory for the loss)."""
        return self.projects_every_position

    def uses_reference(self, recipe) -> bool:
        """Whether this run needs the frozen starting policy (DPO, KTO; GRPO when beta > 0)."""
        return self.needs_reference

    def plots(self, recipe) -> dict[str, tuple[str, ...]]:
        """PNG name in the run directory -> the logged metrics drawn in it (beside loss.png)."""
        return {"metrics.png": self.plot_metrics} if self.plot_metrics else {}

    def plan_notes(self, recipe) -> list[str]:
        """Lines `tunesmith plan` adds about what this stage does in a step."""
        return []

    def plan_models(self, recipe, precision, estimate) -> tuple[int, int, dict[str, int]]:
        """(parameters, trainable parameters, memory by name) of the models a run holds beside the one it trains and
        its reference (PPO: the critic and the reward model). `estimate(model, head)` is the plan's memory estimate
        of a trained model: weights, gradients, optimizer state and activations."""
        return 0, 0, {}

    def check(self, recipe) -> None:
        """Refuse settings the stage's trainer would reject, as a RecipeError naming the field (before any work)."""

    def prepare_data(self, recipe, tokenizer, source: str | None = None, with_eval: bool = True) -> StageData:
        """The rows TRL's trainer for this stage takes (pairs, unpaired answers or prompts; data/preference.py),
        validated, with the eval split (the recipe's, or the built-in's `-eval`)."""
        from tunesmith.data.preference import prepare_preference_data
        from tunesmith.train.data import eval_source

        source = source or recipe.data.dataset
        train = prepare_preference_data(source, tokenizer, stage=self.name, max_length=recipe.data.max_length)
        evaluation = None
        if with_eval and (src := eval_source(recipe, source)):
            evaluation = prepare_preference_data(src, tokenizer, stage=self.name, max_length=recipe.data.max_length)
        summary = train.report.summary() + (f"\neval: {evaluation.report.summary()}" if evaluation else "")
        return StageData(
            train=train.dataset,
            eval=evaluation.dataset if evaluation else None,
            summary=summary,
            num_examples=train.report.num_examples,
            num_sequences=train.report.num_examples,
            longest=min(train.report.max_tokens, recipe.data.max_length),
            shared_longest=train.report.max_shared_tokens,
            shared_mean=train.report.mean_shared_tokens,
            tokens=round(train.report.mean_tokens * train.report.num_examples),
            eval_examples=evaluation.examples if evaluation else [],
        )

    def plan_data(self, recipe, tokenizer, source: str | None = None) -> StageData:
        """What `tunesmith plan` counts: the prepared data (pretrain: an estimate from a sample until it is cached)."""
        return self.prepare_data(recipe, tokenizer, source)

    def section(self, recipe):
        """The recipe's section of this stage (`recipe.dpo` for dpo)."""
        return getattr(recipe, self.name)

    def trl_config(self, cls, recipe, common: dict, schedule=None, exclude: set[str] = frozenset(), **extra):
        """The stage's TRL config: the common TrainingArguments `cls` has, plus the recipe section's fields by name
        (they are TRL's names) but those in `exclude` (ours, not TRL's); `extra` wins over both."""
        kwargs = {k: v for k, v in common.items() if k in cls.__dataclass_fields__ and k != "use_liger_kernel"}  # liger: a GPU-only SFT switch
        kwargs.update(self.section(recipe).model_dump(exclude=set(exclude)))
        kwargs.update(extra)
        return cls(**kwargs)

    def config(self, recipe, common: dict, schedule=None):
        """The TRL config for this stage from the common TrainingArguments `common`, the stage's section and the
        `schedule` (train/schedule.py) the run will follow."""
        raise NotImplementedError

    def trainer(self, *, model, ref_model, args, data: StageData, tokenizer, callbacks, peft_config):
        raise NotImplementedError

    def trained_model(self, trainer):
        """The model training produced, to save, sample and measure (PPO: the actor, not the critic beside it)."""
        return trainer.model

    @property
    def unit(self) -> str:
        """What one training example is, in the run header and the plan."""
        return "pairs" if self.sequences_per_example == 2 else "sequences"

    def measure(self, model, tokenizer, recipe, data: StageData) -> dict:
        """A snapshot on the eval split (called before and after training); {} when there is nothing to measure."""
        return {}

    def compare(self, before: dict, after: dict) -> tuple[list[Change], list[dict], str]:
        """(changes, example rows, title of the examples table) from two snapshots."""
        return [], [], ""

    def diagnose(self, model, tokenizer, recipe, data: StageData, run):
        """Optional end-of-run diagnostics with a `to_json()` and `render(console)`; None when the stage has none."""
        return None

    def describe(self, recipe) -> str:
        """One line for the model card and the run header."""
        return self.title
