"""One benchmark run in a fresh process: `python -m tunesmith.bench.worker <bench> <side> '<job json>'`.

Prints the run's figures as one JSON line on stdout (the last line); everything else goes to stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

from tunesmith.errors import TunesmithError


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
        from tunesmith.cli.main import quiet_libraries

        quiet_libraries()
        if bench == "sft":
            from tunesmith.bench.sft import Job, run_side

            figures = run_side(side, Job(**json.loads(job)))
        elif bench == "generate":
            from tunesmith.bench.generate import Job, run_side

            figures = run_side(side, Job(**json.loads(job)))
        else:
            raise SystemExit(f"unknown benchmark {bench!r}")
    finally:
        sys.stdout = stdout
    print(json.dumps(figures))


if __name__ == "__main__":
    main(sys.argv[1:])
