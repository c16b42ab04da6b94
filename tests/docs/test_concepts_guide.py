"""docs/concepts.md runs: every command in it is run here and its output checked against the guide.

A block the guide checks is a ```console fence right after a marker:

    <!-- guide: fast -->                    run in the fast suite (no training)
    <!-- guide: slow cpu=bf16 tol=0.02 -->  the real model's runs; numbers within 2% (or 0.02 absolute)

Each `$ tunesmith ...` line (continued with a trailing backslash) is a command; the lines under it are its
output as the guide quotes it. Every quoted line must be the command's output line at that place, so the
guide can only leave lines out where it says so: a line `...` stands for any number of lines, and `…` inside
a line for any text. Runs of spaces match any run (table columns follow the widths of their numbers), and
times and speeds (`s`, `tok/s`, `eta`) are never compared: they differ from run to run. `cpu=bf16` (or
`cpu=fp32`) says what `precision: auto` chose where the guide's output was recorded; on a machine where it
chooses otherwise the command still runs and must succeed, but the numbers are not compared.

Blocks run in the order of the guide, in one working directory (so `runs/` from an earlier block is there for
a later one), with docs/concepts/ copied in and COLUMNS=110. TUNESMITH_GUIDE_RECORD=DIR writes every
command's whole output to DIR, for writing the guide.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "concepts.md"
RUNNER = Path(__file__).with_name("guide_runner.py")
COLUMNS = "110"
NUMBER = r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:e[-+]?\d+)?"
VOLATILE = [  # measurements of time and speed: never compared
    re.compile(r"\d+(?:\.\d+)?\s*tok/s"),
    re.compile(r"eta \d+m\d+s"),
    re.compile(r"\b\d+m ?\d+(?:\.\d+)?s\b"),
    re.compile(r"\b\d+(?:\.\d+)? ?(?:s|ms|min)\b"),
    re.compile(r"\(\d+(?:\.\d+)?x fp32 matmul\)"),
]


@dataclass
class Command:
    argv: list[str]
    expected: list[str] = field(default_factory=list)


@dataclass
class Block:
    line: int  # of the marker in the guide, 1-based
    speed: str  # fast | slow
    cpu: str | None
    tol: float
    commands: list[Command]

    @property
    def id(self) -> str:
        return f"line{self.line}-" + "-".join(c.argv[1] if len(c.argv) > 1 else c.argv[0] for c in self.commands[:2])


def parse_guide(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        marker = re.fullmatch(r"<!-- guide: (.*) -->", line.strip())
        if not marker:
            continue
        words = marker.group(1).split()
        options = dict(w.split("=", 1) for w in words if "=" in w)
        speed = next(w for w in words if w in ("fast", "slow"))
        assert lines[i + 1].startswith("```console"), f"docs/concepts.md:{i + 2}: a guide marker must be followed by a ```console block"
        body = []
        for inner in lines[i + 2:]:
            if inner.startswith("```"):
                break
            body.append(inner)
        commands: list[Command] = []
        pending = ""
        for inner in body:
            if pending or inner.startswith("$ "):
                pending += (inner[2:] if not pending else " " + inner.strip())
                if pending.endswith("\\"):
                    pending = pending[:-1].rstrip()
                    continue
                argv = shlex.split(pending)
                assert argv[0] == "tunesmith", f"docs/concepts.md:{i + 1}: only tunesmith commands are run ({pending!r})"
                commands.append(Command(argv))
                pending = ""
            else:
                commands[-1].expected.append(inner.rstrip())
        blocks.append(Block(i + 1, speed, options.get("cpu"), float(options.get("tol", 0)), commands))
    return blocks


BLOCKS = parse_guide(GUIDE.read_text())


def mask(text: str) -> str:
    for pattern in VOLATILE:
        text = pattern.sub("⏱", text)
    return text


def line_matches(expected: str, actual: str, tol: float) -> bool:
    """Whether an output line is the one the guide quotes: `…` any text, whitespace runs alike, numbers within tol."""
    expected, actual = mask(expected).strip(), mask(actual).strip()
    pattern, numbers = "", []
    for k, piece in enumerate(expected.split("…")):
        if k:
            pattern += ".*?"
        for token in re.split(f"({NUMBER})", piece):
            if re.fullmatch(NUMBER, token) and token not in ("-", "+"):
                pattern += f"({NUMBER})"
                numbers.append(token)
            else:
                pattern += r"\s+".join(re.escape(part) for part in re.split(r"\s+", token))
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

    def match(e: int, a: int) -> bool:
        if e == len(expected):
            return a == len(actual)
        if expected[e].strip() == "...":
            return any(match(e + 1, k) for k in range(a, len(actual) + 1))
        return a < len(actual) and line_matches(expected[e], actual[a], tol) and match(e + 1, a + 1)

    if match(0, 0):
        return None
    for e, line in enumerate(expected):  # name the first quoted line found nowhere
        if line.strip() != "..." and not any(line_matches(line, got, tol) for got in actual):
            return f"the guide's line {line!r} is not in the output"
    return "the quoted lines are all there, but not in the guide's order or with unmarked gaps (`...`)"


def auto_precision() -> str:
    from tunesmith.models.precision import resolve_precision

    return resolve_precision("auto").name


def run_commands(commands: list[list[str]], cwd: Path, timeout: float) -> list[dict]:
    env = {**os.environ, "COLUMNS": COLUMNS, "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("FORCE_COLOR", None)
    done = subprocess.run([sys.executable, str(RUNNER)], input=json.dumps(commands), capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert done.returncode == 0, f"the guide's runner failed:\n{done.stderr[-3000:]}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    where = tmp_path_factory.mktemp("guide")
    shutil.copytree(ROOT / "docs" / "concepts", where / "docs" / "concepts")
    return where


@pytest.fixture(scope="module")
def fast_results(workdir):
    """All fast blocks' commands in one runner process (one import of the libraries)."""
    blocks = [b for b in BLOCKS if b.speed == "fast"]
    flat = [c.argv[1:] for b in blocks for c in b.commands]
    results = iter(run_commands(flat, workdir, timeout=600))
    return {b.line: [next(results) for _ in b.commands] for b in blocks}


def check_block(block: Block, results: list[dict]) -> None:
    record = os.environ.get("TUNESMITH_GUIDE_RECORD")
    if record:
        Path(record).mkdir(parents=True, exist_ok=True)
        Path(record, f"{block.id}.txt").write_text("".join(f"$ {shlex.join(c.argv)}\n{r['output']}" for c, r in zip(block.commands, results)))
    comparable = block.cpu is None or block.cpu == auto_precision()
    for command, result in zip(block.commands, results):
        shown = shlex.join(command.argv)
        wants_error = bool(command.expected) and command.expected[0].startswith("error:")
        assert (result["status"] == 2) if wants_error else (result["status"] == 0), f"`{shown}` exited {result['status']}:\n{result['output'][-3000:]}"
        if comparable:
            why = output_matches(command.expected, result["output"].splitlines(), block.tol)
            assert why is None, f"docs/concepts.md:{block.line}: `{shown}`: {why}\nits output:\n{result['output'][-6000:]}"
    if not comparable:
        pytest.skip(f"recorded where precision auto chose {block.cpu}; here it chooses {auto_precision()}: the commands ran, numbers not compared")


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.speed == "fast"], ids=lambda b: b.id)
def test_fast_block(block, fast_results):
    check_block(block, fast_results[block.line])


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.speed == "slow"], ids=lambda b: b.id)
def test_slow_block(block, workdir):
    check_block(block, run_commands([c.argv[1:] for c in block.commands], workdir, timeout=3600))


def test_guide_covers_every_concept():
    """Twelve concepts, each with at least one checked block, and the README links the guide."""
    text = GUIDE.read_text()
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    numbered = [s for s in sections if re.match(r"\d+\. ", s)]
    assert [int(s.split(".")[0]) for s in numbered] == list(range(1, 13))
    for section in numbered:
        assert "<!-- guide:" in section, f"concept {section.splitlines()[0]!r} has no checked command"
    assert "docs/concepts.md" in (ROOT / "README.md").read_text()


def test_matching_rules():
    assert line_matches("loss 1.660  lr 9.99e-04  206 tok/s  eta 4m01s", "loss 1.661  lr 9.99e-04  301 tok/s  eta 2m01s", 0.01)
    assert not line_matches("loss 1.660", "loss 1.661", 0)
    assert not line_matches("loss 1.660", "loss 1.760", 0.01)
    assert line_matches("│ fp16 │  65504 │", "│ fp16   │     65504 │", 0)
    assert line_matches("cpu: … torch kernels AVX512", "cpu: AMX CPU (Xeon), torch kernels AVX512", 0)
    assert not line_matches("chose 'Paris'", "chose 'Rome'", 0.5)
    assert output_matches(["a", "...", "d"], ["a", "b", "c", "d"], 0) is None
    assert output_matches(["a", "d"], ["a", "b", "d"], 0) is not None  # a gap must be marked
    assert output_matches(["a", "..."], ["a", "b"], 0) is None
    assert output_matches(["b"], ["a", "b"], 0) is not None  # leading lines too


def test_the_guides_data_regenerates(tmp_path):
    """docs/concepts/*.jsonl are what tools/make_concepts_data.py writes, byte for byte."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_concepts_data", ROOT / "tools" / "make_concepts_data.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    tool.main(tmp_path)
    written = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    assert written == sorted(p.name for p in (ROOT / "docs" / "concepts").glob("*.jsonl")) == ["pirate-llama2-eval.jsonl", "pirate-llama2.jsonl"]
    for name in written:
        assert (tmp_path / name).read_bytes() == (ROOT / "docs" / "concepts" / name).read_bytes(), name
