"""Sparklines for terminals and matplotlib PNGs for curves (LR schedule, loss)."""

from __future__ import annotations

from pathlib import Path

BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 60) -> str:
    """Bucket `values` into at most `width` columns (bucket mean) and draw each as a block character."""
    if not values:
        return ""
    n = min(width, len(values))
    buckets = [values[i * len(values) // n : (i + 1) * len(values) // n] for i in range(n)]
    means = [sum(b) / len(b) for b in buckets]
    lo, hi = min(means), max(means)
    span = hi - lo or 1.0
    return "".join(BLOCKS[round((m - lo) / span * (len(BLOCKS) - 1))] for m in means)


def plot_series(
    path: str | Path, series: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str, ylabel: str, marks: dict[str, list[int]] | None = None
) -> Path:
    """Write a PNG with one line per series; `marks` draws labelled vertical lines (e.g. checkpoints)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, label=label)
    for label, xs in (marks or {}).items():
        for i, x in enumerate(xs):
            ax.axvline(x, color="gray", linestyle=":", linewidth=1, label=label if i == 0 else None)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
