"""Benchmarks stay bounded on a slow CPU: a side's time budget, rounds cut at a deadline, the report says so."""

from __future__ import annotations

import time

import pytest
import torch

from tunesmith.bench import worker
from tunesmith.bench.measure import BudgetSpent, batch_counter
from tunesmith.bench.sft import curve_gap, report_lines


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(time, "perf_counter", fake)
    return fake


def _spawned(clock, seconds: dict, calls: list):
    def spawn(bench, side, job, on_step=None):
        calls.append(side)
        clock.now += seconds[side]
        return {"side": side}

    return spawn


@pytest.mark.parametrize(("deadline", "rounds"), [(250, 1), (600, 2), (None, 3)])
def test_rounds_stop_before_the_deadline_and_once_sides_run_once(monkeypatch, clock, deadline, rounds):
    calls: list[str] = []
    monkeypatch.setattr(worker, "spawn", _spawned(clock, {"slow": 100, "a": 100, "b": 100}, calls))
    progress: list[str] = []
    job = type("Job", (), {"steps": 2})()
    runs = worker.alternate("sft", job, ("slow", "a", "b"), 3, progress.append, lambda i, name, f: f"{i} {name}", once={"slow"}, deadline_s=deadline)
    assert len(runs["slow"]) == 1 and len(runs["a"]) == len(runs["b"]) == rounds
    assert calls[:3] == ["slow", "a", "b"] and "slow" not in calls[3:]
    assert any(line.startswith(f"stopping after {rounds} of 3 rounds") for line in progress) == (rounds < 3)


def test_announced_runs_say_when_they_start(monkeypatch, clock):
    calls: list[str] = []
    monkeypatch.setattr(worker, "spawn", _spawned(clock, {"a": 1, "b": 1}, calls))
    progress: list[str] = []
    worker.alternate("sft", type("Job", (), {"steps": 5})(), ("a", "b"), 1, progress.append, lambda i, name, f: f"done {name}", announce=True)
    assert progress == ["run 1/1 a: starting (5 steps)", "done a", "run 1/1 b: starting (5 steps)", "done b"]


def stepper(clock):
    """A fresh stand-in for a trainer class (batch_counter patches the class it is given): `training_step`
    takes a batch and spends 30 ms on it, on the fake clock (a loaded machine cannot stretch it)."""

    class Stepper:
        def __init__(self):
            self.state = type("State", (), {"global_step": 0})()

        def training_step(self, model, inputs):
            clock.now += 0.03
            return 0.0

    return Stepper


def test_a_budgeted_run_stops_and_is_timed_over_its_micro_batches(clock):
    Stepper = stepper(clock)
    counter = batch_counter(Stepper, budget_s=0.07)
    trainer = Stepper()
    batch = {
        "input_ids": torch.ones(2, 5, dtype=torch.long),
        "attention_mask": torch.tensor([[1] * 5, [0, 0, 1, 1, 1]]),
        "labels": torch.ones(2, 5, dtype=torch.long),
    }
    with pytest.raises(BudgetSpent, match=r"stopped after 3 micro-batches"):
        for _ in range(10):
            Stepper.training_step(trainer, None, batch)
    figures = counter.partial_figures()
    assert figures["timed_micro_batches"] == 2 and figures["timed_tokens"] == 16  # micro-batches 2 and 3, 8 real tokens each
    assert figures["tokens_per_s"] == pytest.approx(16 / figures["timed_seconds"]) and figures["timed_seconds"] == pytest.approx(0.06)


def test_a_run_whose_first_micro_batch_spends_the_budget_is_timed_over_it(clock):
    Stepper = stepper(clock)
    counter = batch_counter(Stepper, budget_s=0.01)
    batch = {
        "input_ids": torch.ones(1, 4, dtype=torch.long),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
        "labels": torch.ones(1, 4, dtype=torch.long),
    }
    with pytest.raises(BudgetSpent, match=r"stopped after 1 micro-batch,"):
        Stepper.training_step(Stepper(), None, batch)
    figures = counter.partial_figures()
    assert figures["timed_micro_batches"] == 1 and figures["warm_up_included"] and figures["timed_tokens"] == 4


def test_loss_curves_compare_over_the_steps_both_logged():
    assert curve_gap([1.0, 2.0], [1.0, 2.1, 3.0]) == pytest.approx(0.1 / 2.1)
    assert curve_gap([1.0], []) is None


def _side(tps, peak, loss, stopped=None, **settings):
    return {
        "tokens_per_s": tps,
        "peak_rss_mb": peak,
        "final_loss": loss,
        "gflops_per_s": tps / 2,
        "mfu": 0.3,
        "stopped": stopped,
        "settings": settings or {"weights": "float32"},
    }


def test_the_report_names_the_cpu_each_sides_precision_and_a_cut_run():
    report = {
        "cpu": {"summary": "AVX2 CPU (x), torch kernels AVX2, bf16 emulated (fp32 is the fast precision)"},
        "precision": {"tunesmith": "fp32", "reason": "no native bf16"},
        "matmul_peak_dtype": "fp32",
        "matmul_peak_gflops": 148.0,
        "timed": "optimizer steps 2..5",
        "rounds": 2,
        "sides": {
            "trl-defaults": _side(6.1, 2300, None, stopped="stopped after 3 micro-batches, 95 s (budget 90 s)", autocast="bf16"),
            "trl-tuned": _side(103.0, 2198, 1.9, autocast="none"),
            "tunesmith": _side(218.0, 2150, 1.9, autocast="none"),
        },
        "speed_ratio": 2.12,
        "speed_ratio_vs_defaults": 35.7,
        "memory_ratio": 0.98,
        "loss_curve_max_gap": 0.0,
    }
    lines = report_lines(report)
    assert lines[0].startswith("CPU: AVX2 CPU") and "fp32 matmul peak" in lines[2] and "median of 2" in lines[2]
    defaults = next(line for line in lines if line.startswith("trl-defaults"))
    assert "no step finished" in defaults and "autocast bf16" in defaults and "[stopped after 3 micro-batches" in defaults
    assert lines[-1].startswith("tunesmith: 2.12x trl-tuned, 35.70x trl-defaults; memory 0.98x trl-tuned")
    report["sides"]["trl-tuned"] = {**report["sides"]["trl-defaults"], "same_as": "trl-defaults"}
    assert any(line.startswith("trl-tuned    = trl-defaults on this CPU") for line in report_lines(report))
