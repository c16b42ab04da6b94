"""`tunesmith bench` end to end on the embedded model, at the smallest settings (slow: real model, subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _bench(*args: str) -> tuple[dict, str]:
    done = subprocess.run(
        [sys.executable, "-c", "from tunesmith.cli.main import main; main()", "bench", *args, "--json"], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *body, last = done.stdout.strip().splitlines()
    return json.loads("\n".join(body)), last


@pytest.mark.slow
def test_bench_sft_json():
    report, last = _bench("sft", "--steps", "2", "--repeats", "1", "--batch-size", "2", "--gradient-accumulation-steps", "1")
    assert last == f"speed ratio tunesmith/trl-tuned: {report['speed_ratio']:.2f}"
    sides = report["sides"]
    defaults, tuned, ours = sides["trl-defaults"], sides["trl-tuned"], sides["tunesmith"]
    assert defaults["settings"]["weights"] == "float32" and defaults["settings"]["autocast"] == "bf16" and defaults["settings"]["gradient_checkpointing"]
    assert report["cpu"]["flags"] in ("AMX", "avx512_bf16", "AVX-512", "AVX2") and report["cpu"]["summary"]
    if report["cpu"]["fast_bf16"]:  # TRL's bf16 autocast already is the tuned precision: not run twice
        assert tuned["same_as"] == "trl-defaults" and ours["settings"]["attention"] == "eager" and not ours["settings"]["gradient_checkpointing"]
    else:  # tuned: bf16=False; ours: fp32, one layer in 3 checkpointed
        assert tuned["settings"]["autocast"] == "none" and ours["settings"]["checkpointed_layers"] == "10/30"
    assert report["matmul_peak_dtype"] == report["precision"]["tunesmith"]
    assert defaults["runs"][0]["timed_real_tokens"] == ours["runs"][0]["timed_real_tokens"] > 0  # the same batches on every side
    assert report["final_loss_gap"] <= report["loss_curve_max_gap"] < 0.02 and 0 < ours["mfu"] < 1


@pytest.mark.slow
def test_bench_generate_json():
    report, last = _bench("generate", "--prompts", "2", "--max-new-tokens", "8", "--repeats", "1")
    assert last == f"speed ratio tunesmith/hf-tuned: {report['speed_ratio']:.2f}"
    assert set(report["sides"]) == {"hf-defaults", "hf-tuned", "tunesmith"} and report["cpu"]["summary"]
    assert all(c["batch_1"]["share_identical"] == 1.0 for c in report["outputs"])
    assert all(c["batch_8_vs_hf_batch_8"]["of"] == 2 for c in report["outputs"])


@pytest.mark.slow
def test_bench_dpo_json():
    report, last = _bench("dpo", "--steps", "2", "--repeats", "1")
    assert last == f"speed ratio tunesmith/baseline: {report['speed_ratio']:.2f}"
    base, ours = report["sides"]["baseline"], report["sides"]["tunesmith"]
    assert base["settings"]["weights"] == "float32" and base["settings"]["autocast"] == "bf16" and base["settings"]["gradient_checkpointing"]
    assert ours["settings"]["weights"] == "bfloat16" and not ours["settings"]["gradient_checkpointing"]
    assert report["same_batches"] and base["runs"][0]["timed_real_tokens"] == ours["runs"][0]["timed_real_tokens"] > 0  # the same pairs on both sides
    assert len(report["loss_curve"]["baseline"]) == len(report["loss_curve"]["tunesmith"]) == 2
    assert report["loss_curve_max_gap"] < 0.02  # step 1 trains at lr 0 (warmup), so both steps score the untouched policy
    assert set(report["targets"]) == {"speed ratio >= 2", "peak memory <= baseline", "loss within 2% at every step"}


@pytest.mark.slow
def test_bench_grpo_json():
    report, last = _bench("grpo", "--steps", "2", "--repeats", "1", "--num-generations", "4", "--max-completion-length", "8")
    assert last == f"speed ratio tunesmith/baseline: {report['speed_ratio']:.2f}"
    base, ours = report["sides"]["baseline"], report["sides"]["tunesmith"]
    assert base["settings"]["weights"] == "float32" and base["settings"]["gradient_checkpointing"]
    assert len(base["runs"][0]["rewards"]) == len(ours["runs"][0]["rewards"]) == 2  # a mean reward logged per step on both sides
    assert ours["generate_share"] is not None and 0 < ours["generate_share"] < 1
    assert len(report["targets"]) == 3


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["kto", "orpo"])
def test_bench_kto_and_orpo_json(stage):
    report, last = _bench(stage, "--steps", "2", "--repeats", "1", "--batch-size", "2", "--gradient-accumulation-steps", "1")
    assert last == f"speed ratio tunesmith/baseline: {report['speed_ratio']:.2f}" and report["benchmark"] == stage
    base, ours = report["sides"]["baseline"], report["sides"]["tunesmith"]
    assert base["settings"]["weights"] == "float32" and ours["settings"]["weights"] == "bfloat16"
    assert len(base["losses"]) == len(ours["losses"]) == 2 and report["loss_curve_max_gap"] is not None


@pytest.mark.slow
def test_bench_pretrain_json():
    report, last = _bench("pretrain", "--steps", "2", "--repeats", "1", "--gradient-accumulation-steps", "1", "--max-length", "128")
    assert last == f"speed ratio tunesmith/baseline: {report['speed_ratio']:.2f}"
    for side in report["sides"].values():
        run = side["runs"][0]
        assert run["timed_positions"] == 2 * 128  # one step timed: a micro-batch of 2 full blocks
        assert 0 < side["mfu"] < 1 and run["gflops_per_s"] > 0


@pytest.mark.slow
def test_bench_memory_json():
    """The plan's estimate within 25% of the peak two real runs reach: the SFT demo's recipe and GRPO's (its rollouts)."""
    command = [sys.executable, "-c", "from tunesmith.cli.main import main; main()", "bench", "memory", "--case", "sft-lora", "--case", "grpo"]
    done = subprocess.run([*command, "--steps", "1", "--json"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert [r["case"] for r in report["rows"]] == ["sft-lora", "grpo"]
    for row in report["rows"]:
        assert 0.75 <= row["ratio"] <= 1.25, row
        assert max(row["phases_mb"].values()) <= row["peak_rss_mb"] + 1  # the sampled phases never exceed the kernel's peak


def test_bench_memory_refuses_an_unknown_case():
    done = subprocess.run(
        [sys.executable, "-c", "from tunesmith.cli.main import main; main()", "bench", "memory", "--case", "nope"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "unknown case nope" in done.stderr + done.stdout


def test_bench_memory_reports_resident_memory_on_a_cpu_and_device_memory_on_a_gpu():
    from tunesmith.bench.memory import report_lines

    cpu = {
        "case": "dpo",
        "estimate_mb": 3318.0,
        "measured_mb": 3400.0,
        "peak_rss_mb": 3400.0,
        "ratio": 3318 / 3400,
        "phases_mb": {"before": 1300, "train": 3400, "after": 3000},
    }
    lines = report_lines({"job": {"steps": 3, "model": None, "device": None}, "rows": [cpu]})
    assert lines[0].endswith("measured: peak resident memory (RSS)") and "the embedded model" in lines[0]
    assert lines[2].split() == ["dpo", "3.24", "GiB", "3.32", "GiB", "0.98", "train", "(1300", "/", "3400", "/", "3000)"]
    gpu = {**cpu, "measured_mb": 1922.0, "peak_device_mb": 1922.0, "peak_allocated_mb": 1314.0, "peak_rss_mb": 3072.0, "ratio": 3318 / 1922}
    lines = report_lines({"job": {"steps": 3, "model": "/tmp/smol", "device": "NVIDIA H200"}, "rows": [gpu]})
    assert lines[0].endswith("measured: peak device memory held by torch on NVIDIA H200") and "/tmp/smol" in lines[0]
    assert lines[2].split() == ["dpo", "3.24", "GiB", "1.88", "GiB", "1.73", "(1.28", "GiB,", "3.00", "GiB)"]
