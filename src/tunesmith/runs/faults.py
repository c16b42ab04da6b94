"""Fault injection for crash tests: `TUNESMITH_FAULT=<point>[:<n>]` kills the process (SIGKILL, as the OOM killer or a
power cut would stop it: no cleanup, no `finally`) at the n-th time (default: the first) it reaches `<point>`.

The points (see tests/reliability/test_kill_campaign.py for what each proves):

    step                after optimizer step n, before that step's log row and checkpoint
    metrics-line        half way through appending a row to metrics.jsonl (a torn last line)
    metrics-rewrite     on resume, after the kept rows are written aside, before they replace metrics.jsonl
    checkpoint-weights  a checkpoint's model/adapter files written, optimizer, RNG and trainer state not yet
    checkpoint-rng      optimizer and scheduler written, RNG state and trainer state not yet
    checkpoint-state    half way through writing the checkpoint's trainer_state.json
    checkpoint-saved    a checkpoint complete, older ones not yet rotated away
    final-model         the final model's weights written into <run>/.model.tmp, its tokenizer not yet
    final-rename        <run>/.model.tmp complete, not yet renamed to <run>/model
    final-swap          replacing an existing <run>/model: the old one moved aside, the new one not yet in
    summary             the final model (and everything else) written, summary.json not yet
    corpus-shard        pretrain's tokenisation: a part's shard written into the cache, the next not yet

Without the variable every point is a no-op (one dictionary lookup).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

ENV = "TUNESMITH_FAULT"
_seen: dict[str, int] = {}


def _armed(name: str) -> bool:
    spec = os.environ.get(ENV)
    if not spec:
        return False
    point, _, nth = spec.partition(":")
    if point != name:
        return False
    _seen[name] = _seen.get(name, 0) + 1
    return _seen[name] == (int(nth) if nth else 1)


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def fault_point(name: str) -> None:
    """Die here if TUNESMITH_FAULT names this point (and this is its n-th occurrence)."""
    if _armed(name):
        kill()


def torn_write(name: str, path: str | Path, text: str, mode: str = "w") -> bool:
    """If the fault `name` is armed: write the first half of `text` to `path` (as a write cut off by the kill would
    leave it) and die. Returns False (nothing written) otherwise, so the caller writes normally."""
    if not _armed(name):
        return False
    with open(path, mode, encoding="utf-8") as fh:
        fh.write(text[: max(1, len(text) // 2)])
    kill()
    return True  # not reached
