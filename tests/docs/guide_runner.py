"""Run tunesmith command lines one after another in this process, as a terminal shows them.

Reads one JSON request a line on stdin, {"argv": [...], "cwd": DIR, "env": {NAME: VALUE}}, and answers each with one
JSON line {"output", "status", "read_flags", "described_cpu"} on stdout: whether the command read the CPU's flags
(cpu_flags: what precision `auto` and the bench's bf16 checks decide from) and whether it asked the probe to name the
CPU (cpu_kind, cpu_model). Those are the only ways the kind of CPU reaches a tunesmith output. Each command goes through `tunesmith.cli.main.run`, the console script's
own entry, with stdout and stderr captured together (a terminal interleaves them), in `cwd` and with `env` set for
that command alone, so every page's commands pay for one import of torch and transformers.
COLUMNS must be set before this starts: rich reads the width once, when the CLI's consoles are made.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys


def main() -> None:
    real_stdout = sys.stdout
    from tunesmith.cli.main import run
    from tunesmith.models import precision

    read: set[str] = set()
    for name in ("cpu_flags", "cpu_kind", "cpu_model"):  # callers look these up in the module when they run: wrapped, they tell
        original = getattr(precision, name)

        def telling(*args, _original=original, _name=name, **kwargs):
            read.add(_name)
            return _original(*args, **kwargs)

        setattr(precision, name, telling)

    for line in sys.stdin:
        request = json.loads(line)
        saved = {name: os.environ.get(name) for name in request.get("env", {})}
        os.environ.update(request.get("env", {}))
        here = os.getcwd()
        os.chdir(request["cwd"])
        buffer = io.StringIO()
        read.clear()
        try:
            with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
                status = run(request["argv"])
        finally:
            os.chdir(here)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        real_stdout.write(json.dumps({"output": buffer.getvalue(), "status": status, "read_flags": "cpu_flags" in read, "described_cpu": bool(read & {"cpu_kind", "cpu_model"})}) + "\n")
        real_stdout.flush()


if __name__ == "__main__":
    main()
