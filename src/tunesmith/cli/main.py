"""The `tunesmith` command: thin typer commands that build a recipe and call the library.

`run` is the error boundary every command goes through:
- a `TunesmithError` (bad input) prints its sentence and exits 2;
- anything else (a bug of ours or a library's) prints one line plus the path of a log file that holds
  the traceback, and exits 1; `tunesmith --debug ...` (or TUNESMITH_DEBUG=1) prints the traceback too.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import traceback
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

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


def say(text: str, markup: bool = False) -> None:
    """Print one line of a command's own text unwrapped (lines and tables wider than a terminal stay whole), with
    rich markup only when asked for: a model's tokens or a user's numbers may contain brackets."""
    console.print(text, highlight=False, markup=markup, soft_wrap=True)


KEEP_LOGS = 50
INTERRUPTED = "interrupted; checkpoints written so far are kept (resume with --resume RUN_DIR)"


@app.callback()
def _global_options(
    debug: bool = typer.Option(
        False, "--debug", envvar="TUNESMITH_DEBUG", help="Print the traceback of an unexpected error here too (it always goes to a log file)."
    ),
    trust_pickle_weights: bool = typer.Option(
        False,
        "--trust-pickle-weights",
        envvar="TUNESMITH_TRUST_PICKLE_WEIGHTS",
        help="Allow loading weights from pickle files (.bin/.pt/.pth/.ckpt). Unpickling runs code from the file: only for files you trust.",
    ),
):
    """Fine-tune language models end to end, and see what happens inside."""
    if debug:
        os.environ["TUNESMITH_DEBUG"] = "1"
    if trust_pickle_weights:
        os.environ["TUNESMITH_TRUST_PICKLE_WEIGHTS"] = "1"


def _register() -> None:
    from tunesmith.cli import (  # noqa: F401  (commands register on import)
        bench,
        chat,
        eval,
        export,
        generate,
        inspect,
        inspect_advantages,
        inspect_logits,
        inspect_loss,
        inspect_ppo,
        inspect_precision,
        inspect_rollouts,
        launch,
        merge,
        models,
        pipeline,
        plan,
        recipe,
        score,
        serve,
        studio,
        train,
    )


from tunesmith.quiet import quiet_libraries  # noqa: E402


@functools.cache
def _command():
    """The click command typer builds from `app`: once per process (~75 ms a build)."""
    return typer.main.get_command(app)


def log_dir() -> Path:
    """Where tracebacks of unexpected errors go: $TUNESMITH_LOG_DIR, else ~/.cache/tunesmith/logs."""
    if os.environ.get("TUNESMITH_LOG_DIR"):
        return Path(os.environ["TUNESMITH_LOG_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tunesmith" / "logs"


def write_crash_log(exc: BaseException, argv: list[str]) -> Path | None:
    """The traceback, the command line and the versions, in a new file; the oldest logs beyond KEEP_LOGS go."""
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"tunesmith-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        versions = []
        for name in ("tunesmith", "torch", "transformers", "trl", "peft"):
            module = sys.modules.get(name)
            versions.append(f"{name} {getattr(module, '__version__', '?')}" if module else f"{name} (not imported)")
        body = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        path.write_text(f"command: tunesmith {' '.join(argv)}\ncwd: {os.getcwd()}\npython {sys.version.split()[0]}; {'; '.join(versions)}\n\n{body}")
        for old in sorted(folder.glob("tunesmith-*.log"))[:-KEEP_LOGS]:
            old.unlink(missing_ok=True)
        return path
    except OSError:  # a read-only home: the message still goes out, with the traceback inline
        return None


def _unexpected(exc: BaseException, argv: list[str]) -> int:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        err_console.print(
            "[bold red]error:[/] out of memory; nothing was lost: checkpoints written so far are kept (resume with --resume RUN_DIR)\n"
            "hint: lower training.batch_size (raise gradient_accumulation to keep the effective batch), shorten data.max_length, or use LoRA/QLoRA",
            highlight=False,
        )
        return 2
    path = write_crash_log(exc, argv)
    summary = (str(exc).strip().splitlines() or [""])[0][:300]
    where = f"the traceback is in {path}" if path else "the traceback could not be written to a log file"
    if os.environ.get("TUNESMITH_DEBUG") == "1" or path is None:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    err_console.print(
        f"[bold red]error:[/] unexpected {type(exc).__name__}{': ' + escape(summary) if summary else ''}\n"
        f"this is a bug in tunesmith or a library it uses, not in your input as far as we can tell; {where}"
        + ("" if os.environ.get("TUNESMITH_DEBUG") == "1" else " (rerun with --debug to see it here)"),
        highlight=False,
        markup=True,
    )
    return 1


def run(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default sys.argv[1:]); returns the exit status instead of exiting."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_libraries()
    _register()
    try:
        _command()(args=argv, prog_name="tunesmith")
    except SystemExit as exc:
        if exc.code == 130:  # typer turns Ctrl-C into a silent Exit(130): say what was kept
            err_console.print(INTERRUPTED)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except TunesmithError as exc:
        err_console.print(f"[bold red]error:[/] {escape(exc.format())}", highlight=False, markup=True)
        return 2
    except KeyboardInterrupt:
        err_console.print(INTERRUPTED)
        return 130
    except Exception as exc:  # the boundary: a short message and a log file, never a wall of library internals
        return _unexpected(exc, argv)
    return 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":  # `python -m tunesmith.cli.main`: run the module the commands register on, not a copy
    from tunesmith.cli.main import main as _main

    _main()
