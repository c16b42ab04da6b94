"""Pick the numeric precision for a run, and say why.

Measured on an AMD EPYC with avx512_bf16 (2 cores): bf16 matmul ~4.7x fp32, and a
LoRA step on SmolLM2 ~1.8x faster with bf16 base weights. So `auto` takes bf16
wherever the hardware does it natively, fp16 (with loss scaling) on older GPUs,
and fp32 otherwise.

TUNESMITH_CPU_KIND=amx|avx512_bf16|avx2 makes the probe report that kind of CPU (its flags; the model name says it
was forced) while every speed is still measured on the real one: the doc tests run the guides' commands as each
kind of CPU would show them. A CPU forced to list bf16 that does not run it natively still gets fp32 from `auto`
(the measured bf16 speed-up decides), so forcing a kind never runs a slow emulated bf16 training step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from tunesmith.errors import TunesmithError


@dataclass(frozen=True)
class Precision:
    name: str  # bf16 | fp16 | fp32
    reason: str
    device: str  # cpu | cuda

    @property
    def dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[self.name]


BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # the flags of a CPU with native bf16 matmul


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's /proc/cpuinfo fields (empty where there is no such file)."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


FORCE_KIND = "TUNESMITH_CPU_KIND"
FORCED_FLAGS = {  # the flags each kind of CPU lists, for TUNESMITH_CPU_KIND
    "amx": frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
    "avx512_bf16": frozenset({"avx2", "avx512f", "avx512_bf16"}),
    "avx2": frozenset({"avx2"}),
}


def forced_kind() -> str | None:
    """The kind of CPU TUNESMITH_CPU_KIND asks the probe to report, or None."""
    value = os.environ.get(FORCE_KIND, "").strip().lower()
    if not value:
        return None
    if value not in FORCED_FLAGS:
        raise TunesmithError(f"{FORCE_KIND}={value!r} is not a kind of CPU the probe knows", hint=f"use one of {', '.join(FORCED_FLAGS)}, or unset it")
    return value


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (those of the forced kind under TUNESMITH_CPU_KIND)."""
    forced = forced_kind()
    if forced:
        return FORCED_FLAGS[forced]
    return frozenset(_cpuinfo().get("flags", "").split())


def cpu_model() -> str:
    """The CPU's model name, saying so when the probe's kind is forced."""
    model = _cpuinfo().get("model name", "")
    forced = forced_kind()
    return f"forced by {FORCE_KIND}={forced}; really {model or 'model unknown'}" if forced else model


def matmul_seconds(dtype, size: int, repeats: int, budget_s: float) -> float:
    """Fastest of up to `repeats` square `torch.matmul`s of `size` in `dtype` (after one warm-up), stopping early
    once `budget_s` is spent: bounded even where the dtype is emulated."""
    import time

    import torch

    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)  # warm-up: packing buffers, thread pool
    best, start = float("inf"), time.perf_counter()
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return best


@lru_cache(maxsize=1)
def bf16_speedup(size: int = 512) -> float:
    """bf16 matmul speed over fp32 on this CPU as torch runs it now, from a bounded probe (< 1 s even where bf16
    is emulated: a 512 x 512 product is 0.27 GFLOP, ~1 s at the 0.3 GFLOP/s of an AVX2-only CPU).

    The flags alone are not enough: torch's kernels can be capped below what the CPU has (ATEN_CPU_CAPABILITY,
    ONEDNN_MAX_CPU_ISA, a VM that hides an instruction set), and then bf16 runs emulated at a fraction of fp32."""
    import torch

    return matmul_seconds(torch.float32, size, 3, 0.5) / matmul_seconds(torch.bfloat16, size, 3, 0.5)


def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmul (avx512_bf16 or AMX) and torch's kernels really use it."""
    return bool(cpu_flags() & BF16_FLAGS) and bf16_speedup() >= 1.0


def cpu_kind() -> str:
    """The best vector extension this CPU's flags list: AMX, avx512_bf16, AVX-512, AVX2 (else the machine's name)."""
    import platform

    flags = cpu_flags()
    return next(
        (name for flag, name in (("amx_bf16", "AMX"), ("avx512_bf16", "avx512_bf16"), ("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags),
        platform.machine() or "unknown",
    )


def cpu_capability() -> dict:
    """What this CPU can do for torch, in words a benchmark report can carry: the best vector extension its flags
    list (AMX, avx512_bf16, AVX-512, AVX2), the kernels torch dispatches to, and whether bf16 is fast here."""
    import torch

    flags = cpu_flags()
    best = cpu_kind()
    model = cpu_model()
    fast = cpu_has_fast_bf16()
    kernels = torch.backends.cpu.get_cpu_capability()
    summary = f"{best} CPU ({model or 'model unknown'}), torch kernels {kernels}, " + (
        f"bf16 native ({bf16_speedup():.1f}x fp32 matmul)"
        if fast
        else (
            "bf16 emulated (fp32 is the fast precision)"
            if not flags & BF16_FLAGS
            else f"bf16 slow here ({bf16_speedup():.2f}x fp32 matmul: torch's kernels do not use the CPU's bf16)"
        )
    )
    return {"flags": best, "model": model, "torch_kernels": kernels, "fast_bf16": fast, "cores": torch.get_num_threads(), "summary": summary}


def resolve_precision(requested: str = "auto") -> Precision:
    """Turn `auto|bf16|fp16|fp32` into a concrete choice for this machine, refusing what it cannot do."""
    import torch

    if torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        name = torch.cuda.get_device_name()
        if requested == "auto":
            if major >= 8:
                return Precision("bf16", f"{name} (compute capability {major}.{minor}) has native bf16", "cuda")
            return Precision("fp16", f"{name} (compute capability {major}.{minor}) lacks bf16; fp16 with loss scaling", "cuda")
        if requested == "bf16" and major < 8:
            raise TunesmithError(
                f"precision bf16 asked for, but {name} (compute capability {major}.{minor}) has no native bf16", hint="use precision: fp16 or auto"
            )
        return Precision(requested, "asked for in the recipe", "cuda")
    if requested == "fp16":
        raise TunesmithError("precision fp16 needs a CUDA GPU; this machine has none", hint="use precision: auto (bf16 where the CPU supports it) or fp32")
    if requested == "auto":
        if cpu_has_fast_bf16():
            return Precision("bf16", "CPU has avx512_bf16/AMX: bf16 matmul is several times faster than fp32", "cpu")
        if cpu_flags() & BF16_FLAGS:
            return Precision("fp32", f"the CPU lists bf16, but torch's kernels here run a bf16 matmul at {bf16_speedup():.2f}x fp32", "cpu")
        return Precision("fp32", "no GPU and no native bf16 on this CPU (bf16 would be emulated, far slower)", "cpu")
    return Precision(requested, "asked for in the recipe", "cpu")


# ---------------------------------------------------------------- the three formats, side by side

FORMATS = ("fp32", "bf16", "fp16")
PROBES = (0.1, 1 / 3, 1.001, 300.7, 70000.0, 1e-6, 1e-8)  # what each format keeps of these: precision and range


@dataclass(frozen=True)
class NumberFormat:
    """One floating-point format as torch implements it (`torch.finfo`), and what it stores for each probe."""

    name: str
    exponent_bits: int
    mantissa_bits: int
    largest: float
    smallest_normal: float
    eps: float  # the gap between 1.0 and the next number: the relative precision
    stored: tuple[float, ...]  # PROBES after a round trip through this format

    @property
    def digits(self) -> float:
        """Significant decimal digits: log10 of 2^(mantissa bits + 1)."""
        import math

        return (self.mantissa_bits + 1) * math.log10(2)


def number_formats(probes: tuple[float, ...] = PROBES) -> list[NumberFormat]:
    """fp32, bf16 and fp16 read from torch itself (bits, limits; exponent and mantissa widths from finfo's bits and
    eps), and each probe value as it is really stored."""
    import math

    import torch

    out = []
    for name in FORMATS:
        dtype = Precision(name, "", "cpu").dtype
        info = torch.finfo(dtype)
        mantissa = round(-math.log2(info.eps))  # eps = 2^-mantissa bits
        stored = torch.tensor(probes, dtype=torch.float64).to(dtype).to(torch.float64).tolist()
        out.append(NumberFormat(name, info.bits - 1 - mantissa, mantissa, float(info.max), float(info.tiny), float(info.eps), tuple(stored)))
    return out
