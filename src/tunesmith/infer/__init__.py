"""Inference: the sampling maths (sampling.py), the decode loop that uses it (generate.py), chat sessions and the inspector's walk."""

from tunesmith.infer.chat import ChatSession
from tunesmith.infer.generate import Completion, complete, generate
from tunesmith.infer.sampling import Explanation, SamplingParams, explain, next_token_distribution, sample

__all__ = ["ChatSession", "Completion", "Explanation", "SamplingParams", "complete", "explain", "generate", "next_token_distribution", "sample"]
