"""`tunesmith chat`: talk to a model in the terminal (or through a pipe)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from tunesmith.cli.main import app, console
from tunesmith.cli.sampling_options import sampling_options
from tunesmith.models.builtin import DEFAULT_MODEL

if TYPE_CHECKING:
    from tunesmith.infer.sampling import SamplingParams


@app.command()
@sampling_options(temperature=0.7, top_p=0.95, help_texts={"top_p": "Nucleus sampling (1 = off).", "top_k": "0 = off."})
def chat(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Built-in name, model/adapter/run directory or .gguf file."),
    params: SamplingParams = None,
    max_new_tokens: int = typer.Option(256, min=1, help="Longest reply in tokens."),
    system: str | None = typer.Option(None, help="System prompt."),
    seed: int | None = typer.Option(None, help="Seed for sampling."),
):
    """Interactive chat with streaming replies; /help lists the commands (/temperature, /system, /reset, /exit ...)."""
    from tunesmith.infer.chat import HELP, ChatSession
    from tunesmith.models import load_pretrained

    loaded = load_pretrained(model, precision="auto")
    session = ChatSession(loaded.model, loaded.tokenizer, params, max_new_tokens, system, seed=seed)
    tty = sys.stdin.isatty()
    if tty:
        console.print(f"chatting with {model}; {HELP}", highlight=False)
    while True:
        try:
            line = console.input("[bold]you>[/] ") if tty else sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            break
        if not tty and line == "":
            break
        message = bool(line.strip()) and not line.lstrip().startswith("/")
        if message:
            sys.stdout.write("assistant> ")
            sys.stdout.flush()
        kind, text = session.handle(line, on_delta=lambda d: (sys.stdout.write(d), sys.stdout.flush()))
        if kind == "exit":
            break
        if message:
            sys.stdout.write("\n")
        if text and kind == "info":
            console.print(text, style="dim", highlight=False, markup=False)
