"""The KTO/ORPO benchmark's arithmetic (no model): steps/s medians, the loss curves step by step, the targets."""

import pytest

from tunesmith.bench.preference import STAGES, Job, report_lines, summarise


def figures(seconds, rss, losses):
    return {
        "steps_per_s": 1 / seconds,
        "seconds_per_step": seconds,
        "peak_rss_mb": rss,
        "losses": losses,
        "settings": {"weights": "float32"},
        "process_seconds": 30.0,
    }


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_summary_compares_steps_per_second_and_the_loss_curves(stage):
    curve = [0.69, 0.60, 0.52]
    runs = {
        "baseline": [figures(10.0, 2000, curve), figures(12.0, 2100, curve), figures(11.0, 2050, curve)],
        "tunesmith": [figures(5.0, 1700, [0.69, 0.601, 0.521]), figures(6.0, 1800, curve), figures(5.5, 1750, curve)],
    }
    report = summarise(Job(stage=stage), runs)
    assert report["speed_ratio"] == pytest.approx(2.0) and report["memory_ratio"] == pytest.approx(1750 / 2050)
    assert report["loss_curve_max_gap"] == pytest.approx(0.001 / 0.52)
    assert all(report["targets"].values())
    text = "\n".join(report_lines(report))
    assert f"job: {stage} on {STAGES[stage][3]}" in text and "3: 0.5200/0.5210" in text
    drifted = summarise(Job(stage=stage), {**runs, "tunesmith": [figures(8.0, 2000, [0.69, 0.55, 0.45])]})
    assert list(drifted["targets"].values()) == [False, False, False]
