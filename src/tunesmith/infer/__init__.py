"""Inference: the sampling maths (sampling.py) and the decode loop that uses it (generate.py)."""

from tunesmith.infer.generate import Completion, complete, generate
from tunesmith.infer.sampling import SamplingParams, explain, next_token_distribution

__all__ = ["Completion", "SamplingParams", "complete", "explain", "generate", "next_token_distribution"]
