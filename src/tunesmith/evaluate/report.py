"""Diagnostics with plain-language verdicts and hints, one rule table."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rich.markup import escape

# metric -> (is it bad when high?, warn threshold, bad threshold, hint when not fine)
RULES: dict[str, tuple[bool, float, float, str]] = {
    "leakage_rate": (True, 0.01, 0.10, "the model learned the chat template: train on completions only, fewer epochs, check that EOS is trained"),
    "memorization_rate": (True, 0.10, 0.30, "it repeats training answers verbatim: fewer epochs, lower learning rate, more or more varied data"),
    "distinct_2": (False, 0.6, 0.4, "replies repeat themselves: fewer epochs, a repetition penalty, or sampling instead of greedy"),
    "longest_repeat_mean": (True, 6, 12, "long loops inside replies: fewer epochs or a repetition penalty"),
    "stopped_rate": (False, 0.8, 0.5, "replies run to max_new_tokens: check the end-of-turn token is trained (it is by default) or raise max_new_tokens"),
    "perplexity": (True, 20.0, 100.0, "high eval perplexity: train longer, or the eval data differs from the training data"),
    "kl_to_reference": (True, 0.5, 2.0, "far from the reference model: lower learning rate or fewer steps if general skills matter"),
    "accuracy": (False, 0.6, 0.3, "many wrong answers: check the data's facts, train longer, or evaluate with --match contains"),
}


@dataclass
class Diagnostic:
    name: str
    value: float
    verdict: str  # fine | watch | bad | info
    hint: str = ""


def judge(name: str, value: float) -> Diagnostic:
    if name not in RULES:
        return Diagnostic(name, value, "info")
    high_is_bad, warn, bad, hint = RULES[name]
    level = (value >= bad, value >= warn) if high_is_bad else (value <= bad, value <= warn)
    verdict = "bad" if level[0] else "watch" if level[1] else "fine"
    return Diagnostic(name, value, verdict, "" if verdict == "fine" else hint)


@dataclass
class DiagnosticsReport:
    model: str
    diagnostics: list[Diagnostic] = field(default_factory=list)
    examples: dict[str, list] = field(default_factory=dict)  # e.g. worst memorized generations

    def add(self, name: str, value: float) -> None:
        self.diagnostics.append(judge(name, value))

    def __getitem__(self, name: str) -> Diagnostic:
        return next(d for d in self.diagnostics if d.name == name)

    def to_json(self) -> dict:
        return {"model": self.model, "diagnostics": [asdict(d) for d in self.diagnostics], "examples": self.examples}

    def render(self, console) -> None:
        from rich.table import Table

        table = Table(title=f"diagnostics: {self.model}", title_justify="left")
        for col in ("diagnostic", "value", "verdict", "hint"):
            table.add_column(col, overflow="fold")
        colours = {"fine": "green", "watch": "yellow", "bad": "red", "info": "dim"}
        for d in self.diagnostics:
            value = f"{d.value:.3f}" if isinstance(d.value, float) else str(d.value)
            table.add_row(d.name, value, f"[{colours[d.verdict]}]{d.verdict}[/]", d.hint)
        console.print(table)
        for overlap, text, source in self.examples.get("memorized", [])[:3]:
            console.print(
                f"[yellow]memorized ({overlap} words):[/] {escape(repr(text[:160]))}\n  training answer: {escape(repr(source[:160]))}", highlight=False
            )
        for text in self.examples.get("leaked", [])[:3]:
            console.print(f"[yellow]leaked template:[/] {escape(repr(text[:160]))}", highlight=False)
