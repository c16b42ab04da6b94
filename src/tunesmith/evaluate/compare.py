"""Several models on one prompt set, side by side: did a merge keep what each of its sources was good at?

Each model gets the same diagnostics as `tunesmith eval` (loss, perplexity, template leakage, repetition, stopping,
accuracy where the data has answers) and, given preference pairs, how often it ranks the chosen answer first. The
first model is the one under test (a merge), the others its sources; for every measure the table says whether the
first is the best of them, between them (it kept part of what the best source had) or the worst.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.evaluate.report import RULES

# measure -> True when higher is better; measures not listed are shown without a judgement
HIGHER_IS_BETTER = {name: not high_is_bad for name, (high_is_bad, *_rest) in RULES.items()}
HIGHER_IS_BETTER.update({"eval_loss": False, "preference_accuracy": True, "preference_margin": True})
SHOWN = (
    "eval_loss",
    "perplexity",
    "preference_accuracy",
    "preference_margin",
    "accuracy",
    "leakage_rate",
    "distinct_2",
    "longest_repeat_mean",
    "stopped_rate",
    "mean_length_tokens",
)


@dataclass
class Comparison:
    """Measures by model label (insertion order: the model under test first), the verdicts, and sample answers."""

    models: list[str]
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> measure -> value
    verdicts: dict[str, dict[str, str]] = field(default_factory=dict)  # model -> measure -> fine|watch|bad|info
    samples: list[dict] = field(default_factory=list)  # {"prompt": ..., model: answer, ...}
    data: str = ""
    pairs: str | None = None

    def measures(self) -> list[str]:
        present = {m for values in self.values.values() for m in values}
        return [m for m in SHOWN if m in present]

    def standing(self, measure: str) -> str:
        """Where the first model stands among all on `measure`: best, between, worst, same, or '' (no direction)."""
        if measure not in HIGHER_IS_BETTER or len(self.models) < 2:
            return ""
        values = [self.values[m].get(measure) for m in self.models]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in values):
            return ""
        sign = 1 if HIGHER_IS_BETTER[measure] else -1
        first, others = sign * values[0], [sign * v for v in values[1:]]
        if all(abs(first - o) <= 1e-9 for o in others):
            return "same"
        if first >= max(others):
            return "best"
        if first <= min(others):
            return "worst"
        return "between"

    def to_json(self) -> dict:
        return {
            "models": self.models,
            "data": self.data,
            "pairs": self.pairs,
            "values": self.values,
            "verdicts": self.verdicts,
            "standing": {m: self.standing(m) for m in self.measures()},
            "samples": self.samples,
        }

    def render(self, console) -> None:
        from rich.table import Table

        table = Table(
            title=f"side by side on {self.data}" + (f" and {self.pairs}" if self.pairs else ""),
            title_justify="left",
            caption=f"↑ higher is better, ↓ lower is better; standing: where {self.models[0]} (under test) stands among all",
            caption_justify="left",
        )
        table.add_column("measure", overflow="fold", min_width=21)
        for name in self.models:
            table.add_column(name, justify="right", overflow="fold")
        if len(self.models) > 1:
            table.add_column("standing", overflow="fold")
        colours = {"fine": "green", "watch": "yellow", "bad": "red"}
        for measure in self.measures():
            cells = []
            for name in self.models:
                value = self.values[name].get(measure)
                verdict = self.verdicts[name].get(measure, "info")
                text = "n/a" if value is None else f"{value:.0%}" if measure.endswith("accuracy") else f"{value:.3f}"
                cells.append(f"[{colours[verdict]}]{text}[/]" if verdict in colours else text)
            arrow = {True: " ↑", False: " ↓"}.get(HIGHER_IS_BETTER.get(measure), "")
            table.add_row(measure + arrow, *cells, *([self.standing(measure)] if len(self.models) > 1 else []))
        console.print(table)
        if self.samples:
            answers = Table(title="the same prompts, answered by each (greedy)", show_lines=True)
            answers.add_column("prompt", style="bold")
            for name in self.models:
                answers.add_column(name)
            for row in self.samples:
                answers.add_row(row["prompt"], *(row[name] for name in self.models))
            console.print(answers)
        if len(self.models) > 1:
            kept = [m for m in self.measures() if self.standing(m) in ("best", "between", "same")]
            lost = [m for m in self.measures() if self.standing(m) == "worst"]
            console.print(
                f"{self.models[0]}: as good as or better than a source on {len(kept)} of {len(kept) + len(lost)} judged measures"
                + (f"; worst of all on {', '.join(lost)}" if lost else ""),
                highlight=False,
            )


def measure_model(model, tokenizer, eval_data, *, label: str, pairs=None, max_prompts: int, max_new_tokens: int, match=None, answers=None):
    """(values, verdicts, answers) of one loaded model: the diagnostics of `tunesmith eval`, plus preference ranking."""
    from tunesmith.evaluate.diagnose import diagnose
    from tunesmith.evaluate.preference import pairwise_accuracy, response_logprobs
    from tunesmith.evaluate.report import judge

    report = diagnose(model, tokenizer, eval_data, name=label, max_prompts=max_prompts, max_new_tokens=max_new_tokens, match=match, answers=answers)
    values = {d.name: float(d.value) for d in report.diagnostics}
    verdicts = {d.name: d.verdict for d in report.diagnostics}
    if pairs is not None and len(pairs):
        chosen = response_logprobs(model, tokenizer, pairs.prompts, pairs.chosen)
        rejected = response_logprobs(model, tokenizer, pairs.prompts, pairs.rejected)
        values["preference_accuracy"] = pairwise_accuracy(chosen, rejected)
        values["preference_margin"] = sum(c - r for c, r in zip(chosen, rejected)) / len(chosen)
        verdicts["preference_accuracy"] = judge("accuracy", values["preference_accuracy"]).verdict
    return values, verdicts, [g["text"] for g in report.examples["generations"]]


def model_labels(specs: list[str]) -> dict[str, str]:
    """label -> --model value for a side-by-side table: each model by its folder's name (runs/pirate-sft ->
    pirate-sft), or by the whole value where another model took that name already."""
    labels: dict[str, str] = {}
    for spec in specs:
        name = Path(spec.rstrip("/")).name or spec
        labels[spec if name in labels else name] = spec
    return labels


def compare_models(
    models: dict[str, str],
    *,
    data: str = "pirate-eval",
    pairs: str | None = None,
    max_prompts: int = 8,
    max_new_tokens: int = 48,
    match: str | None = None,
    answers_field: str = "answer",
    log=print,
) -> Comparison:
    """Measure each of `models` (label -> --model value; the first is the one under test) on the same data.

    Models are loaded one at a time (fp32, as `tunesmith eval` does), so memory holds one model."""
    import gc

    from tunesmith.data import prepare_dataset
    from tunesmith.evaluate.diagnose import short_answers, split_example
    from tunesmith.models import load_pretrained

    comparison = Comparison(list(models), data=data, pairs=pairs)
    answers = short_answers(data, answers_field) if match else None
    prompts: list[str] = []
    for label, spec in models.items():
        log(f"eval: {label} ({spec}) on {data}" + (f" and {pairs}" if pairs else ""))
        loaded = load_pretrained(spec)
        eval_data = prepare_dataset(data, loaded.tokenizer, max_length=1024)
        preference = None
        if pairs:
            from tunesmith.data.preference import prepare_preference_data
            from tunesmith.evaluate.preference import Pairs

            preference = Pairs.from_examples(prepare_preference_data(pairs, loaded.tokenizer, stage="dpo", max_length=1024).examples)
        values, verdicts, texts = measure_model(
            loaded.model,
            loaded.tokenizer,
            eval_data,
            label=label,
            pairs=preference,
            max_prompts=max_prompts,
            max_new_tokens=max_new_tokens,
            match=match,
            answers=answers,
        )
        comparison.values[label], comparison.verdicts[label] = values, verdicts
        if not prompts:
            prompts = [p if isinstance(p, str) else p[-1]["content"] for p, _ in (split_example(e) for e in eval_data.examples[:max_prompts])]
            comparison.samples = [{"prompt": p} for p in prompts[:4]]
        for row, text in zip(comparison.samples, texts):
            row[label] = text
        del loaded
        gc.collect()
    return comparison
