"""The doc-test contract of every docs/*.md page: which blocks run, and when a quoted line is the output's.

A page's checked block is a ```console fence right after a marker line:

    <!-- guide: fast -->                    run in the fast suite (`make test`; trains nothing, a few seconds)
    <!-- guide: slow cpu=bf16 tol=0.02 -->  training runs (`make test-slow`); numbers within 2% (or 0.02 absolute)

Each `$ tunesmith ...` line (continued with a trailing backslash) is a command; the lines under it are its output as
the page quotes it. Every quoted line must be the command's output line at that place:

- a line `...` stands for any number of lines, and `…` inside a line for any text;
- runs of spaces match any run, and so do runs of a table's rule characters (━ ─ ═), since columns follow the
  widths of what is in them;
- times and speeds (`12 s`, `2m01s`, `eta 1m15s`, `344 tok/s`, `3.2 min`, `(4.3x fp32 matmul)`) are never compared;
- **machine lines** depend on the CPU and are compared by their label only: lines that start with `cpu:` (the
  probe: CPU name, vector extensions, torch's kernels, bf16 speed), `this machine:` (what `precision: auto` picks
  here), and the lines labelled `precision`, `speed` and `memory (est.)` (what a plan or a run chose for this
  CPU: the precision, the kernels that follow from it, the memory they take). Everything else is compared exactly
  (numbers within the block's `tol`).

`cpu=bf16` (or `cpu=fp32`) on a block says what `precision: auto` chose where its output was recorded: a training
run's numbers follow the precision, so where auto chooses otherwise the commands still run and must succeed, but
the numbers are not compared. A command whose quoted output starts with `error:` must exit with status 2.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
NUMBER = r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:e[-+]?\d+)?"
VOLATILE = [  # measurements of time and speed: never compared
    re.compile(r"\d+(?:\.\d+)?\s*tok/s"),
    re.compile(r"eta \d+m\d+s"),
    re.compile(r"\b\d+m ?\d+(?:\.\d+)?s\b"),
    re.compile(r"\b\d+(?:\.\d+)? ?(?:s|ms|min)\b"),
    re.compile(r"\(\d+(?:\.\d+)?x fp32 matmul\)"),
]
MACHINE = re.compile(r"(cpu:|this machine:|(?:precision|speed|memory \(est\.\))(?::|\s))")  # a machine line's label
FLEXIBLE = re.compile(r"(\s+|━+|─+|═+)")  # runs whose length follows the content around them


@dataclass
class Command:
    argv: list[str]
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    page: str  # the page's file name, e.g. concepts.md
    line: int  # of the marker in the page, 1-based
    speed: str  # fast | slow
    cpu: str | None
    tol: float
    commands: list[Command]

    @property
    def id(self) -> str:
        words = "-".join(c.argv[1] if len(c.argv) > 1 else c.argv[0] for c in self.commands[:2])
        return f"{Path(self.page).stem}:{self.line}-{words}"


def parse_page(text: str, page: str) -> list[Block]:
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        marker = re.fullmatch(r"<!-- guide: (.*) -->", line.strip())
        if not marker:
            continue
        words = marker.group(1).split()
        options = dict(w.split("=", 1) for w in words if "=" in w)
        speed = next((w for w in words if w in ("fast", "slow")), None)
        assert speed, f"docs/{page}:{i + 1}: a guide marker says `fast` or `slow`"
        assert i + 1 < len(lines) and lines[i + 1].startswith("```console"), f"docs/{page}:{i + 2}: a guide marker must be followed by a ```console block"
        body = []
        for inner in lines[i + 2:]:
            if inner.startswith("```"):
                break
            body.append(inner)
        commands: list[Command] = []
        pending = ""
        for inner in body:
            if pending or inner.startswith("$ "):
                pending += inner[2:] if not pending else " " + inner.strip()
                if pending.endswith("\\"):
                    pending = pending[:-1].rstrip()
                    continue
                argv = shlex.split(pending)
                assert argv[0] == "tunesmith", f"docs/{page}:{i + 1}: only tunesmith commands are run ({pending!r})"
                commands.append(Command(argv))
                pending = ""
            else:
                assert commands, f"docs/{page}:{i + 3}: a checked block starts with a `$ tunesmith` command"
                commands[-1].expected.append(inner.rstrip())
        blocks.append(Block(page, i + 1, speed, options.get("cpu"), float(options.get("tol", 0)), commands))
    return blocks


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def all_blocks() -> list[Block]:
    return [b for p in pages() for b in parse_page(p.read_text(), p.name)]


def mask(text: str) -> str:
    for pattern in VOLATILE:
        text = pattern.sub("⏱", text)
    return text


def line_matches(expected: str, actual: str, tol: float) -> bool:
    """Whether an output line is the one the page quotes (the rules in this module's docstring)."""
    expected, actual = mask(expected).strip(), mask(actual).strip()
    label = MACHINE.match(expected)
    if label:  # a machine line: its label, then anything
        return actual.startswith(label.group(1).rstrip())
    pattern, numbers = "", []
    for k, piece in enumerate(expected.split("…")):
        if k:
            pattern += ".*?"
        for token in re.split(f"({NUMBER})", piece):
            if re.fullmatch(NUMBER, token) and token not in ("-", "+"):
                pattern += f"({NUMBER})"
                numbers.append(token)
                continue
            for part in FLEXIBLE.split(token):
                run = FLEXIBLE.fullmatch(part)
                pattern += (r"\s+" if part[0].isspace() else f"{re.escape(part[0])}+") if run else re.escape(part)
    found = re.fullmatch(pattern, actual)
    if not found:
        return False
    for want, got in zip(numbers, found.groups()):
        w, g = float(want.replace(",", "")), float(got.replace(",", ""))
        if tol == 0 and want != got:
            return False
        if abs(w - g) > tol * max(abs(w), 1.0):
            return False
    return True


def output_matches(expected: list[str], actual: list[str], tol: float) -> str | None:
    """None if `actual` is what `expected` quotes (with its `...` gaps), else why not."""
    while actual and not actual[-1].strip():
        actual = actual[:-1]
    memo: dict[tuple[int, int], bool] = {}

    def match(e: int, a: int) -> bool:
        if (e, a) not in memo:
            if e == len(expected):
                memo[e, a] = a == len(actual)
            elif expected[e].strip() == "...":
                memo[e, a] = any(match(e + 1, k) for k in range(a, len(actual) + 1))
            else:
                memo[e, a] = a < len(actual) and line_matches(expected[e], actual[a], tol) and match(e + 1, a + 1)
        return memo[e, a]

    if match(0, 0):
        return None
    for line in expected:  # name the first quoted line found nowhere
        if line.strip() != "..." and not any(line_matches(line, got, tol) for got in actual):
            return f"the page's line {line!r} is not in the output"
    return "the quoted lines are all there, but not in the page's order or with unmarked gaps (`...`)"


def block_failure(block: Block, results: list[dict], comparable: bool) -> str | None:
    """Why a block's run does not match the page (None when it does): every command exits as quoted and, where the
    numbers are comparable here, prints every quoted line."""
    for command, result in zip(block.commands, results):
        shown = shlex.join(command.argv)
        wants_error = bool(command.expected) and command.expected[0].startswith("error:")
        if result["status"] != (2 if wants_error else 0):
            return f"docs/{block.page}:{block.line}: `{shown}` exited {result['status']}:\n{result['output'][-3000:]}"
        if comparable:
            why = output_matches(command.expected, result["output"].splitlines(), block.tol)
            if why:
                return f"docs/{block.page}:{block.line}: `{shown}`: {why}\nits output:\n{result['output'][-6000:]}"
    return None
