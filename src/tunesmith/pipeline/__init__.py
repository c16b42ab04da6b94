"""Pipelines: stages (train, merge, eval, export) run in order from one file, each feeding the next by name."""

from tunesmith.pipeline.config import Pipeline, is_pipeline_file, load_pipeline
from tunesmith.pipeline.run import run_pipeline

__all__ = ["Pipeline", "is_pipeline_file", "load_pipeline", "run_pipeline"]
