"""Every docs/*.md page runs: each checked block's commands are run here and their output checked against the page.

The contract (which blocks run, which lines are compared and how) is tests/docs/guide.py's docstring. Blocks run
in one long-lived runner process (one import of the libraries), each page's blocks in order in one working directory
of the page's own (so `runs/` from an earlier block is there for a later one) with docs/ copied in. The fast blocks
also run with the CPU probe forced to each kind (TUNESMITH_CPU_KIND), in the same directory after the page's own run:
a line that depends on the machine and is not a machine line fails there. TUNESMITH_GUIDE_RECORD=DIR writes every command's whole output to
DIR, for writing the pages.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guide import DOCS, ROOT, all_blocks, block_failure, output_matches, parse_page

RUNNER = Path(__file__).with_name("guide_runner.py")
BLOCKS = all_blocks()
FAST = [b for b in BLOCKS if b.speed == "fast"]
KINDS = ("amx", "avx512_bf16", "avx2")


class Runner:
    """A guide_runner.py process: commands in, outputs out, one at a time."""

    def __init__(self):
        env = {**os.environ, "COLUMNS": "110", "NO_COLOR": "1", "TERM": "dumb"}
        env.pop("FORCE_COLOR", None)
        env.pop("TUNESMITH_CPU_KIND", None)
        self.process = subprocess.Popen([sys.executable, str(RUNNER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)

    def run(self, argv: list[str], cwd: Path, env: dict[str, str]) -> dict:
        self.process.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "env": env}) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, f"the guide's runner died running `tunesmith {shlex.join(argv)}` (exit {self.process.poll()})"
        return json.loads(answer)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


class Workdirs:
    """One working directory per page, with docs/ copied in once."""

    def __init__(self, base: Path):
        self.base, self.made = base, {}

    def __call__(self, page: str) -> Path:
        if page not in self.made:
            where = self.base / Path(page).stem
            shutil.copytree(DOCS, where / "docs", ignore=shutil.ignore_patterns("*.png", "*.jpg"))
            self.made[page] = where
        return self.made[page]


@pytest.fixture(scope="session")
def runner():
    from tunesmith.models.load import resolve_model

    resolve_model("smollm2-135m-instruct")  # converted once per machine, before any page's first command (its note is no page's output)
    started = Runner()
    yield started
    started.close()


@pytest.fixture(scope="session")
def workdirs(tmp_path_factory):
    return Workdirs(tmp_path_factory.mktemp("guides"))


def auto_precision(kind: str | None) -> str:
    from tunesmith.models.precision import resolve_precision

    saved = os.environ.pop("TUNESMITH_CPU_KIND", None)
    try:
        if kind:
            os.environ["TUNESMITH_CPU_KIND"] = kind
        return resolve_precision("auto").name
    finally:
        os.environ.pop("TUNESMITH_CPU_KIND", None)
        if saved:
            os.environ["TUNESMITH_CPU_KIND"] = saved


RESULTS: dict[tuple[str, int, str | None], list[dict]] = {}  # (page, line, kind) -> its commands' results


def run_block(block, runner, workdirs, kind: str | None = None) -> list[dict]:
    key = (block.page, block.line, kind)
    if key not in RESULTS and not kind:  # the page's earlier fast blocks first, as the page runs them
        for earlier in FAST:
            if earlier.page == block.page and earlier.line < block.line:
                run_block(earlier, runner, workdirs)
    if key not in RESULTS:
        env = {"TUNESMITH_CPU_KIND": kind} if kind else {}  # as another kind too: in the page's directory, after its own run
        RESULTS[key] = [runner.run(c.argv[1:], workdirs(block.page), env) for c in block.commands]
        record = os.environ.get("TUNESMITH_GUIDE_RECORD")
        if record:
            Path(record).mkdir(parents=True, exist_ok=True)
            name = f"{block.id.replace(':', '-')}{'-' + kind if kind else ''}.txt"
            Path(record, name).write_text("".join(f"$ {shlex.join(c.argv)}\n{r['output']}" for c, r in zip(block.commands, RESULTS[key])))
    return RESULTS[key]


def check(block, results, kind: str | None = None) -> None:
    comparable = block.cpu is None or block.cpu == auto_precision(kind)
    why = block_failure(block, results, comparable)
    assert why is None, why


@pytest.mark.parametrize("block", FAST, ids=lambda b: b.id)
def test_fast_block(block, runner, workdirs):
    check(block, run_block(block, runner, workdirs))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("block", FAST, ids=lambda b: b.id)
def test_fast_block_on_every_cpu_kind(block, kind, runner, workdirs):
    """The same block with the probe reporting another kind of CPU: only machine lines may differ.

    The kind of CPU reaches an output in two ways only: through its flags (the precision `auto` picks from them)
    and through the probe naming the CPU (cpu_kind, cpu_model); the runner tells which a command used. A block is
    run again as a kind where that can change its output: its commands named the CPU, or read the flags where the
    kind makes `auto` pick another precision. Elsewhere its output is this machine's by construction."""
    native = run_block(block, runner, workdirs)
    named = any(r["described_cpu"] for r in native)
    flips = any(r["read_flags"] for r in native) and auto_precision(kind) != auto_precision(None)
    if not (named or flips):
        return
    check(block, run_block(block, runner, workdirs, kind), kind)


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.speed == "slow"], ids=lambda b: b.id)
def test_slow_block(block, runner, workdirs):
    check(block, run_block(block, runner, workdirs))


def test_a_changed_number_fails_and_a_changed_machine_line_does_not(runner, workdirs):
    """The contract bites: in a copy of the concepts guide, a non-machine number changed by one in its last digit
    fails the inspect precision block, while the CPU line rewritten as another machine's still passes."""
    text = (DOCS / "concepts.md").read_text()
    block = next(b for b in parse_page(text, "concepts.md") if b.commands[0].argv[1:3] == ["inspect", "precision"])
    results = run_block(block, runner, workdirs)
    assert block_failure(block, results, True) is None
    quoted = block.commands[0].expected
    changed = [line.replace("70144", "70145") for line in quoted]
    assert changed != quoted
    assert "70145" in output_matches(changed, results[0]["output"].splitlines(), 0)
    other_machine = [("cpu: AVX2 CPU (Some Other CPU), torch kernels AVX2, bf16 emulated" if line.startswith("cpu:") else line) for line in quoted]
    assert other_machine != quoted
    assert output_matches(other_machine, results[0]["output"].splitlines(), 0) is None


def test_every_page_with_blocks_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for page in {b.page for b in BLOCKS}:
        assert f"docs/{page}" in readme, f"README.md does not link docs/{page}"
