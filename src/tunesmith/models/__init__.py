"""Models: finding and loading them (built-in, directory, .gguf, hub), precision, LoRA."""

from tunesmith.models.load import load_model, load_tokenizer, resolve_model

__all__ = ["load_model", "load_tokenizer", "resolve_model"]
