"""`tunesmith studio`: a local web page over a folder of run directories (watch, compare, chat, launch)."""

from __future__ import annotations

from pathlib import Path

import typer

from tunesmith.cli.main import app, console, err_console
from tunesmith.cli.serve import exposure_warning


@app.command()
def studio(
    runs: Path = typer.Option(Path("runs"), "--runs", help="The folder whose run directories the page shows (and where it launches new ones)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; the default serves this machine only."),
    port: int = typer.Option(8200, min=1, max=65535, help="TCP port."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="TUNESMITH_API_KEY", help="Require 'Authorization: Bearer KEY' for the page's API (or set TUNESMITH_API_KEY)."
    ),
):
    """Runs (status, curves while they train, recipe, before/after, diagnostics, lineage), compare, chat with a run, launch/stop/resume."""
    import uvicorn

    from tunesmith.studio import create_studio_app

    runs.mkdir(parents=True, exist_ok=True)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/studio"
    console.print(
        f"studio over {runs.resolve()} on {url}" + (f" (API key required: open {url}#key=YOUR_KEY, or the page asks for it)" if api_key else ""),
        highlight=False,
        soft_wrap=True,
    )
    warning = exposure_warning(host, api_key)
    if warning:
        err_console.print(f"[yellow]warning:[/] {warning.replace('use the model', 'read the runs and launch training')}", highlight=False)
    uvicorn.run(create_studio_app(runs, api_key=api_key, host=host), host=host, port=port, log_level="warning")
