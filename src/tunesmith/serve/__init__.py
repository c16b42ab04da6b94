"""OpenAI-compatible serving."""

from tunesmith.serve.app import Engine, create_app

__all__ = ["Engine", "create_app"]
