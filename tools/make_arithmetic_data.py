"""Write the built-in `arithmetic` prompts (src/tunesmith/data/builtin/arithmetic*.jsonl).

Single-digit sums and differences, each asked in two phrasings (the textbook's "Solve 2+2"
among them), with the answer in an `answer` column for the reward functions. Deterministic:
running this again writes the same files. 25 problems are held out for the eval split, so the
before/after pass rate is measured on sums the policy never trained on.

Why single digits: SmolLM2-135M-Instruct sampled at temperature 0.9 gets them right about half
the time (usually written "3 + 4 = 7"), two-digit sums mostly wrong; a group whose rewards are
all equal gives GRPO no signal, so the data sits where the model is sometimes right.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PHRASINGS = (
    "Solve {a}{op}{b}. Reply with the number only.",
    "What is {a} {op} {b}? Answer with just the number.",
)
HELD_OUT = 25


def problems() -> list[tuple[int, str, int]]:
    sums = [(a, "+", b) for a in range(10) for b in range(10)]
    differences = [(a, "-", b) for a in range(10) for b in range(a + 1)]
    return sums + differences


def rows(chosen: list[tuple[int, str, int]]) -> list[dict]:
    out = []
    for a, op, b in chosen:
        answer = a + b if op == "+" else a - b
        for phrasing in PHRASINGS:
            out.append({"prompt": [{"role": "user", "content": phrasing.format(a=a, op=op, b=b)}], "answer": answer})
    return out


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "src" / "tunesmith" / "data" / "builtin", help="folder to write the files to"
    )
    target = parser.parse_args().out
    all_problems = problems()
    rng = random.Random(0)
    rng.shuffle(all_problems)
    held_out, train = all_problems[:HELD_OUT], all_problems[HELD_OUT:]
    for name, chosen in (("arithmetic.jsonl", train), ("arithmetic_eval.jsonl", held_out)):
        lines = rows(chosen)
        rng.shuffle(lines)
        (target / name).write_text("".join(json.dumps(line) + "\n" for line in lines))
        print(f"{name}: {len(lines)} prompts")


if __name__ == "__main__":
    main()
