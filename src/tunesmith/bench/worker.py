"""One benchmark run in a fresh process: `python -m tunesmith.bench.worker <bench> <side> '<job json>'`.

Prints the run's figures as one JSON line on stdout (the last line); everything else goes to stderr.
"""

from __future__ import annotations

import json
import sys


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
