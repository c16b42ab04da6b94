"""Run tunesmith command lines one after another in this process, as a terminal shows them.

Reads a JSON list of argv lists on stdin; writes a JSON list of {"output", "status"} on stdout. Each command
goes through `tunesmith.cli.main.run`, the console script's own entry, with stdout and stderr captured
together (a terminal interleaves them), so many commands pay for one import of torch and transformers.
COLUMNS must be set before this starts: rich reads the width once, when the CLI's consoles are made.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys


def main() -> None:
    commands = json.load(sys.stdin)
    real_stdout = sys.stdout
    from tunesmith.cli.main import run

    results = []
    for argv in commands:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            status = run(argv)
        results.append({"output": buffer.getvalue(), "status": status})
    real_stdout.write(json.dumps(results))


if __name__ == "__main__":
    main()
