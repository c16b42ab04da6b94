"""Supervised fine-tuning: the `sft` stage (train/stages/sft.py) on the shared scaffold (train/scaffold.py)."""

from __future__ import annotations

from tunesmith.train.scaffold import run_stage
from tunesmith.train.stages.base import StageResult


def run_sft(recipe=None, *, resume: str | None = None, console=None, live: bool | None = None, callbacks=()) -> StageResult:
    """Train per `recipe` (stage sft) or continue the run/checkpoint `resume`."""
    return run_stage(recipe, resume=resume, stage_name="sft", console=console, live=live, callbacks=callbacks)
