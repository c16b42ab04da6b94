"""Evaluation: loss/perplexity, generation diagnostics (leakage, repetition, memorization), drift, accuracy."""

from tunesmith.evaluate.diagnose import diagnose, drift, eval_loss
from tunesmith.evaluate.report import DiagnosticsReport, judge

__all__ = ["DiagnosticsReport", "diagnose", "drift", "eval_loss", "judge"]
