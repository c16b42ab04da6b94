"""The `tunesmith` command: thin typer commands that build a recipe and call the library."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from tunesmith.errors import TunesmithError

app = typer.Typer(
    name="tunesmith",
    help="Fine-tune language models end to end, and see what happens inside.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def _register() -> None:
    from tunesmith.cli import bench, chat, eval, export, generate, inspect, inspect_advantages, inspect_logits, inspect_rollouts, launch, merge, pipeline, plan, recipe, score, serve, train  # noqa: F401  (commands register on import)


from tunesmith.quiet import quiet_libraries  # noqa: E402


def main() -> None:
    quiet_libraries()
    _register()
    try:
        app()
    except TunesmithError as exc:
        err_console.print(f"[bold red]error:[/] {exc.format()}", highlight=False, markup=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; checkpoints written so far are kept (resume with --resume RUN_DIR)")
        sys.exit(130)


if __name__ == "__main__":  # `python -m tunesmith.cli.main`: run the module the commands register on, not a copy
    from tunesmith.cli.main import main as _main

    _main()
