"""`tunesmith inspect precision`: fp32, bf16 and fp16 side by side (range vs precision, read from torch),
and what `precision: auto` picks on this machine and why."""

from __future__ import annotations

import json
import math

import typer
from rich.table import Table

from tunesmith.cli.inspect import inspect_app
from tunesmith.cli.main import console, say


@inspect_app.command("precision")
def precision(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")):
    """fp32 vs bf16 vs fp16: bits, range and precision, how each stores a few numbers, and what
    precision: auto picks on this machine (the choice every training command makes)."""
    from tunesmith.models.precision import PROBES, cpu_capability, number_formats, resolve_precision
    from tunesmith.recipes.schema import ModelSection

    formats = number_formats()
    chosen = resolve_precision("auto")
    machine = cpu_capability() if chosen.device == "cpu" else None
    if as_json:
        finite = lambda xs: [x if math.isfinite(x) else str(x) for x in xs]  # noqa: E731  (JSON has no inf: "inf")
        print(
            json.dumps(
                {
                    "formats": [{**f.__dict__, "stored": finite(f.stored), "digits": f.digits} for f in formats],
                    "probes": PROBES,
                    "auto": {"precision": chosen.name, "reason": chosen.reason, "device": chosen.device},
                    "cpu": machine,
                },
                indent=2,
            )
        )
        return
    table = Table(title="three ways to store a number in 16 or 32 bits")
    for column in ("format", "bits: sign / exponent / mantissa", "largest", "smallest normal", "step after 1.0", "digits"):
        table.add_column(column, justify="left" if column == "format" else "right")
    for f in formats:
        table.add_row(f.name, f"1 / {f.exponent_bits} / {f.mantissa_bits}", _number(f.largest), _number(f.smallest_normal), _number(f.eps), f"~{f.digits:.1f}")
    console.print(table)
    stored = Table(title="what each format stores")
    stored.add_column("value", justify="right")
    for f in formats:
        stored.add_column(f.name, justify="right")
    for i, value in enumerate(PROBES):
        stored.add_row(_number(value), *(_stored(f.stored[i], value, f.smallest_normal) for f in formats))
    console.print(stored)
    say(
        "bf16 keeps fp32's exponent (its range) and drops mantissa bits (precision); fp16 keeps more mantissa but "
        "overflows above 65504 and loses tiny values, so fp16 training needs loss scaling."
    )
    say(f"rule: {ModelSection.model_fields['precision'].description}")
    say(f"this machine: precision auto -> {chosen.name} ({chosen.reason})")
    if machine:
        say(f"cpu: {machine['summary']}")


def _number(x: float) -> str:
    """Three significant digits, whole numbers below a million in full: 65504, 300.7, 0.00781, 3.4e+38."""
    return f"{x:.0f}" if x == int(x) and abs(x) < 1e6 else f"{x:.4g}" if abs(x) >= 1 else f"{x:.3g}"


def _stored(got: float, wanted: float, smallest_normal: float) -> str:
    """The stored value with enough digits to see the rounding; overflow, underflow and subnormals said plainly."""
    if math.isinf(got):
        return "inf (overflow)"
    if got == 0 and wanted != 0:
        return "0 (underflow)"
    return f"{got:.8g}" + (" (subnormal)" if abs(got) < smallest_normal else "")
