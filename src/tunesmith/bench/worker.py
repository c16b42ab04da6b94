"""One benchmark run in a fresh process: `python -m tunesmith.bench.worker <bench> <side> '<job json>'`.

Prints the run's figures as one JSON line on stdout (the last line); everything else goes to stderr.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict

from tunesmith.errors import TunesmithError

BENCHMARKS = (
    "sft",
    "dpo",
    "preference",
    "grpo",
    "pretrain",
    "generate",
    "memory",
)  # modules of tunesmith.bench, each with a Job dataclass and run_side(side, job)


BASELINES = ("baseline", "trl-", "hf:")  # how the benches name a side that runs a plain TRL or transformers script


def environment(side: str) -> dict[str, str]:
    """The environment a side's process starts with: a baseline's is the user's own, without what importing tunesmith
    adds (`heap.prefer_huge_pages`), so the plain script runs as it would from the same shell."""
    from tunesmith.heap import plain_environment

    return plain_environment() if side.startswith(BASELINES) else dict(os.environ)


def spawn(bench: str, side: str, job, on_step=None) -> dict:
    """Run one side of `bench` once in a fresh Python process and return its figures. `on_step(line)` gets the
    run's progress lines ("step 3/5 ...") as they come, so a long run is never silent."""
    command = [sys.executable, "-m", "tunesmith.bench.worker", bench, side, json.dumps(asdict(job))]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(side))
    tail: list[str] = []

    def read_stderr():
        for line in process.stderr:
            tail.append(line.rstrip())
            del tail[:-15]
            if on_step and line.startswith("step "):
                on_step(line.strip())

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    stdout = process.stdout.read()
    process.wait()
    reader.join()
    if process.returncode != 0 or not stdout.strip():
        raise TunesmithError(
            f"the {bench} benchmark's {side} run failed (exit {process.returncode}):\n" + "\n".join(tail),
            hint="run the same job alone to see it whole: " + " ".join(command[1:4]) + f" '{command[4]}'",
        )
    return json.loads(stdout.strip().splitlines()[-1])


def alternate(
    bench: str, job, sides, repeats: int, progress, describe, stream: bool = False, once=(), deadline_s: float | None = None, announce: bool = False
) -> dict[str, list[dict]]:
    """Every side once per round, `repeats` rounds (A B A B ...), each run a fresh process; its figures by side name.

    sides: side names, or {name: worker side} where the two differ. After each run `progress` gets
    `describe(round, name, figures)`; with `stream` also a start line and the run's own step lines as they come,
    with `announce` the start line only (a slow side is then never minutes of silence).
    Sides named in `once` run in the first round only. With `deadline_s`, no round starts that would, at the
    pace of the last one, end past the deadline (counted from the start): the bench stays bounded in time on a
    slow CPU, and says how many rounds it ran."""
    import time

    sides = sides if isinstance(sides, dict) else {name: name for name in sides}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    start, last = time.perf_counter(), {}
    for i in range(repeats):
        for name, side in sides.items():
            if i > 0 and name in once:
                continue
            if stream or announce:
                progress(f"run {i + 1}/{repeats} {name}: starting" + (f" ({job.steps} steps)" if hasattr(job, "steps") else ""))
            began = time.perf_counter()
            figures = spawn(bench, side, job, on_step=(lambda line, name=name: progress(f"  {name}: {line}")) if stream else None)
            last[name] = time.perf_counter() - began
            runs[name].append(figures)
            progress(describe(i, name, figures))
        next_round = sum(seconds for name, seconds in last.items() if name not in once)
        if deadline_s is not None and i + 1 < repeats and time.perf_counter() - start + next_round > deadline_s:
            progress(f"stopping after {i + 1} of {repeats} rounds: another would end past the {deadline_s / 60:.0f}-minute bound at this CPU's pace")
            break
    return runs


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
