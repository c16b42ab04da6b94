"""tunesmith: fine-tune language models end to end, and see what happens inside."""

__version__ = "0.1.0"
