"""tunesmith: fine-tune language models end to end, and see what happens inside."""

from tunesmith.heap import prefer_huge_pages

prefer_huge_pages()  # before anything imports torch: it reads the switch at its first allocation

__version__ = "0.1.0"
