"""The pretrain benchmark's arithmetic (no model): medians, ratios, each side's fraction of the matmul peak."""

import pytest

from tunesmith.bench.pretrain import Job, report_lines, summarise


def figures(tokens_per_s, rss, gflops):
    return {
        "tokens_per_s": tokens_per_s,
        "seconds_per_step": 4096 / tokens_per_s,
        "peak_rss_mb": rss,
        "gflops_per_s": gflops,
        "losses": [2.5, 2.4, 2.3],
        "settings": {"weights": "float32"},
        "process_seconds": 60.0,
    }


def test_summary_takes_medians_and_reports_the_fraction_of_peak():
    runs = {
        "baseline": [figures(100, 2000, 40), figures(120, 2100, 48), figures(110, 2050, 44)],
        "tunesmith": [figures(250, 1800, 100), figures(230, 1900, 92), figures(240, 1850, 96)],
    }
    report = summarise(Job(), runs, {"gflops": 320.0, "dtype": "bf16"})
    assert report["speed_ratio"] == pytest.approx(240 / 110)
    assert report["memory_ratio"] == pytest.approx(1850 / 2050)
    assert report["sides"]["tunesmith"]["mfu"] == pytest.approx(96 / 320) and report["sides"]["baseline"]["mfu"] == pytest.approx(44 / 320)
    assert all(report["targets"].values())
    text = "\n".join(report_lines(report))
    assert "bf16 matmul peak on this machine, now: 320 GFLOP/s" in text
    assert "96 GFLOP/s = 30% of peak" in text and "44 GFLOP/s = 14% of peak" in text
    slow = summarise(Job(), {**runs, "tunesmith": [figures(150, 2500, 60)] * 3})
    assert list(slow["targets"].values()) == [False, False] and slow["sides"]["tunesmith"]["mfu"] is None
