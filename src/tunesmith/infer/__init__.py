"""Inference: generation (and, later, sampling inspection and chat)."""

from tunesmith.infer.generate import generate

__all__ = ["generate"]
