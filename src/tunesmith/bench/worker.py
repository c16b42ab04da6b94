"""One benchmark run in a fresh process: `python -m tunesmith.bench.worker <bench> <side> '<job json>'`.

Prints the run's figures as one JSON line on stdout (the last line); everything else goes to stderr.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from dataclasses import asdict

from tunesmith.errors import TunesmithError

BENCHMARKS = ("sft", "dpo", "generate")  # modules of tunesmith.bench, each with a Job dataclass and run_side(side, job)


def spawn(bench: str, side: str, job) -> dict:
    """Run one side of `bench` once in a fresh Python process and return its figures."""
    command = [sys.executable, "-m", "tunesmith.bench.worker", bench, side, json.dumps(asdict(job))]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise TunesmithError(f"the {bench} benchmark's {side} run failed (exit {done.returncode}):\n{tail}", hint="run the same job alone to see it whole: " + " ".join(command[1:4]) + f" '{command[4]}'")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    bench, side, job = argv
    stdout, sys.stdout = sys.stdout, sys.stderr  # libraries print; only the figures go to the real stdout
    try:
        from tunesmith.quiet import quiet_libraries

        quiet_libraries()
        if bench not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {bench!r}")
        module = importlib.import_module(f"tunesmith.bench.{bench}")
        figures = module.run_side(side, module.Job(**json.loads(job)))
    finally:
        sys.stdout = stdout
    print(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
