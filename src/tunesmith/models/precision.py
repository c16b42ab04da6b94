"""Pick the numeric precision for a run, and say why.

Measured on an AMD EPYC with avx512_bf16 (2 cores): bf16 matmul ~4.7x fp32, and a
LoRA step on SmolLM2 ~1.8x faster with bf16 base weights. So `auto` takes bf16
wherever the hardware does it natively, fp16 (with loss scaling) on older GPUs,
and fp32 otherwise.
"""

from __future__ import annotations

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


@lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has native bf16 matmul (avx512_bf16 or AMX)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


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
            raise TunesmithError(f"precision bf16 asked for, but {name} (compute capability {major}.{minor}) has no native bf16", hint="use precision: fp16 or auto")
        return Precision(requested, "asked for in the recipe", "cuda")
    if requested == "fp16":
        raise TunesmithError("precision fp16 needs a CUDA GPU; this machine has none", hint="use precision: auto (bf16 where the CPU supports it) or fp32")
    if requested == "auto":
        if cpu_has_fast_bf16():
            return Precision("bf16", "CPU has avx512_bf16/AMX: bf16 matmul is several times faster than fp32", "cpu")
        return Precision("fp32", "no GPU and no native bf16 on this CPU", "cpu")
    return Precision(requested, "asked for in the recipe", "cpu")
