"""`tunesmith serve`: an OpenAI-compatible HTTP API for a model, adapter or run directory."""

from __future__ import annotations

import typer

from tunesmith.cli.main import app, console, err_console
from tunesmith.models.builtin import DEFAULT_MODEL


def exposure_warning(host: str, api_key: str | None) -> str | None:
    """What to tell a user who serves beyond this machine without a key (None when bound to loopback or keyed)."""
    from tunesmith.serve.app import is_loopback

    if is_loopback(host) or api_key:
        return None
    return f"bound to {host}, beyond this machine, without --api-key: anyone who can reach this address can use the model (set --api-key or TUNESMITH_API_KEY)"


@app.command()
def serve(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Built-in name, model/adapter/run directory or .gguf file."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; the default serves this machine only."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    name: str | None = typer.Option(None, help="Model id clients send (default: the --model value)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar="TUNESMITH_API_KEY", help="Require 'Authorization: Bearer KEY' (or set TUNESMITH_API_KEY)."),
    max_batch: int = typer.Option(16, "--max-batch", min=1, max=256, help="Requests decoded together (continuous batching); 1 serves one at a time."),
    max_queue: int = typer.Option(
        64, "--max-queue", min=0, help="Requests that may wait for a place in the batch; beyond that the answer is 429 with Retry-After."
    ),
    prefix_cache_mb: int = typer.Option(
        64,
        "--prefix-cache-mb",
        min=0,
        help="Keys and values of recent prompts kept to prefill a prompt that starts the same (a shared system prompt, a chat's history); 0 turns it off.",
    ),
    studio: str | None = typer.Option(
        None, "--studio", help="Also serve `tunesmith studio` over this folder of runs, at /studio (same process, same --api-key)."
    ),
):
    """Serve POST /v1/chat/completions, POST /v1/completions (stream: true as SSE), GET /v1/models, GET /health."""
    import uvicorn

    from tunesmith.serve import Engine, create_app

    engine = Engine(model, name=name, max_batch=max_batch, max_queue=max_queue, prefix_cache_mb=prefix_cache_mb)
    console.print(
        f"serving '{engine.name}' on http://{host}:{port}/v1"
        + (" (API key required)" if api_key else "")
        + f"; batches up to {engine.batcher.max_batch} requests, {max_queue} more may wait",
        highlight=False,
    )
    warning = exposure_warning(host, api_key)
    if warning:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    app_ = create_app(engine, api_key=api_key)
    if studio:
        from pathlib import Path

        from tunesmith.studio.app import add_studio

        Path(studio).mkdir(parents=True, exist_ok=True)
        add_studio(app_, studio, api_key=api_key, host=host)
        console.print(f"studio over {studio} on http://{host}:{port}/studio", highlight=False)
    uvicorn.run(app_, host=host, port=port, log_level="warning")
