"""Run directories: what a run writes, and how later stages find it."""

from tunesmith.runs.rundir import RunDir

__all__ = ["RunDir"]
