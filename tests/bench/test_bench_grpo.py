"""The GRPO benchmark's arithmetic (no model): steps/s medians, ratios, and the reward-noise verdict."""

import math

import pytest

from tunesmith.bench.grpo import Job, reward_difference, summarise


def figures(seconds, rewards, rss):
    return {
        "steps_per_s": 1 / seconds,
        "seconds_per_step": seconds,
        "peak_rss_mb": rss,
        "rewards": rewards,
        "kl": [0.01] * len(rewards),
        "completion_lengths": [20.0] * len(rewards),
        "generate_share": [0.4],
        "losses": [0.1],
        "train_seconds": 10.0,
        "process_seconds": 20.0,
        "settings": {"weights": "float32"},
        "gflops_per_s": 100 / seconds,
    }


def test_reward_difference_is_the_mean_gap_and_its_standard_error():
    difference, error = reward_difference([1.0, 0.0], [0.5, 0.5])
    assert difference == pytest.approx(0.0)
    assert error == pytest.approx(math.sqrt(0.5 / 2 + 0.0))


def test_summary_takes_medians_and_judges_the_targets():
    runs = {
        "baseline": [figures(12.0, [0.1, 0.2], 2000), figures(14.0, [0.0, 0.3], 2100), figures(13.0, [0.2, 0.1], 2050)],
        "tunesmith": [figures(6.0, [0.2, 0.1], 1900), figures(7.0, [0.1, 0.3], 1950), figures(6.5, [0.0, 0.2], 1925)],
    }
    report = summarise(Job(), runs)
    assert report["sides"]["baseline"]["seconds_per_step"] == 13.0 and report["sides"]["tunesmith"]["seconds_per_step"] == 6.5
    assert report["speed_ratio"] == pytest.approx(2.0)
    assert report["memory_ratio"] == pytest.approx(1925 / 2050)
    assert all(report["targets"].values())
    slow = {**runs, "tunesmith": [figures(10.0, [0.9, 0.9], 2500)] * 3}
    verdicts = list(summarise(Job(), slow)["targets"].values())
    assert verdicts == [False, False, False]


def test_each_side_reports_its_fraction_of_the_matmul_peak():
    runs = {"baseline": [figures(10.0, [0.1], 2000)], "tunesmith": [figures(5.0, [0.1], 1900)]}
    report = summarise(Job(), runs, {"gflops": 100.0, "dtype": "bf16"})
    assert report["sides"]["baseline"]["mfu"] == pytest.approx(0.1) and report["sides"]["tunesmith"]["mfu"] == pytest.approx(0.2)
    from tunesmith.bench.grpo import report_lines

    text = "\n".join(report_lines(report))
    assert "bf16 matmul peak on this machine, now: 100 GFLOP/s" in text and "20 GFLOP/s = 20% of peak" in text
    assert summarise(Job(), runs)["sides"]["tunesmith"]["mfu"] is None  # no peak measured: no fraction claimed
