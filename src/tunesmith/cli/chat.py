"""`tunesmith chat`: talk to a model in the terminal (or through a pipe)."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from tunesmith.cli.main import app, console


@app.command()
def chat(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Built-in name, model/adapter/run directory or .gguf file."),
    temperature: float = typer.Option(0.7, min=0.0, help="0 = greedy."),
    top_p: float = typer.Option(0.95, help="Nucleus sampling (1 = off)."),
    top_k: int = typer.Option(0, min=0, help="0 = off."),
    min_p: float = typer.Option(0.0, help="Keep tokens with p >= min_p * p_max (0 = off)."),
    repetition_penalty: float = typer.Option(1.0, help="> 1 discourages repeating tokens (1 = off)."),
    max_new_tokens: int = typer.Option(256, min=1, help="Longest reply in tokens."),
    system: Optional[str] = typer.Option(None, help="System prompt."),
    seed: Optional[int] = typer.Option(None, help="Seed for sampling."),
):
    """Interactive chat with streaming replies; /help lists the commands (/temperature, /system, /reset, /exit ...)."""
    from tunesmith.infer.chat import HELP, ChatSession
    from tunesmith.infer.sampling import SamplingParams
    from tunesmith.models import load_model, load_tokenizer, resolve_model
    from tunesmith.models.precision import resolve_precision

    source = resolve_model(model)
    session = ChatSession(load_model(source, dtype=resolve_precision("auto").dtype), load_tokenizer(source),
                          SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty), max_new_tokens, system, seed=seed)
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
