"""The llama.cpp anchor of `bench serve` and `bench generate`: where its binaries are found, what is said when they are
not, and how its rows read (the timed runs themselves are `make test-slow` / by hand: minutes of serving)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tunesmith.bench.serve import ANCHOR_CLIENTS, anchor, llama_server, report_lines


def test_llama_server_is_found_where_make_llama_server_puts_it(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNESMITH_LLAMA_SERVER", raising=False)
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")
    assert llama_server() is None
    flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    cpu = hashlib.md5(f"{flags}\n".encode()).hexdigest()[:12]  # the Makefile's CPU_ID: md5sum of the first flags line
    binary = tmp_path / "wheels" / cpu / "llama-server" / "bin" / "llama-server"
    binary.parent.mkdir(parents=True)
    binary.write_text("")
    assert llama_server() == str(binary)
    monkeypatch.setenv("TUNESMITH_LLAMA_SERVER", "/opt/llama/llama-server")
    assert llama_server() == "/opt/llama/llama-server"


def test_without_llama_server_the_anchor_is_skipped_with_a_sentence(tmp_path, monkeypatch):
    from tunesmith.bench.serve import Job

    monkeypatch.delenv("TUNESMITH_LLAMA_SERVER", raising=False)
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    monkeypatch.setenv("PATH", "/nonexistent")
    assert "make llama-server" in anchor(Job(), [], print)["skipped"]


def test_the_anchor_rows_read_as_ratios():
    row = lambda tps: {"tokens_per_s": tps, "p50_s": 0.5, "errors": 0}  # noqa: E731
    rows = {f"{side}@{n}": row(tps) for n in ANCHOR_CLIENTS for side, tps in (("tunesmith", 10.0 * n), ("llama.cpp", 40.0))}
    load = {
        "ok": 1,
        "requests": 1,
        "errors": 0,
        "clients": 1,
        "seconds": 1.0,
        "tokens_per_s": 1.0,
        "requests_per_s": 1.0,
        "p50_s": 1.0,
        "p95_s": 1.0,
        "error_samples": [],
    }
    report = {
        "job": {"model": "m", "distinct": 1, "max_tokens": 8, "compare_requests": 4, "compare_clients": 2},
        "cpu": "cpu",
        "load": load,
        "batched": load,
        "one_at_a_time": load,
        "peak_batch": 1,
        "greedy_checked": 1,
        "greedy_differ": 0,
        "seeded_checked": 0,
        "seeded_differ": 0,
        "llama_cpp": {"skipped": None, "precision": "bf16", "rows": rows, "ratios": {str(n): 10.0 * n / 40.0 for n in ANCHOR_CLIENTS}},
    }
    lines = report_lines(report)
    assert "against llama.cpp's server (bf16 both, tunesmith max batch 32, llama.cpp 32 slots):" in lines
    assert any(line.strip().startswith("32 clients: tunesmith  320.0 tokens/s") and line.endswith("8.00x") for line in lines), lines
    assert report_lines({**report, "llama_cpp": {"skipped": "not built"}})[-1] == "llama.cpp anchor skipped: not built"
