"""Models: finding and loading them (built-in, directory, .gguf, hub), precision, LoRA."""

from tunesmith.models.load import Loaded, load_model, load_pretrained, load_tokenizer, resolve_model

__all__ = ["Loaded", "load_model", "load_pretrained", "load_tokenizer", "resolve_model"]
