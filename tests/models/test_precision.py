"""Precision `auto` on a CPU: native bf16 only where the flags list it *and* torch's kernels really run it fast."""

from __future__ import annotations

import time

import pytest

from tunesmith.models import precision as p


@pytest.fixture
def cpu(monkeypatch):
    """Pretend to be a CPU with these flags and this measured bf16/fp32 matmul speed ratio."""

    def set_cpu(flags: set[str], speedup: float):
        monkeypatch.setattr(p, "cpu_flags", lambda: frozenset(flags))
        monkeypatch.setattr(p, "bf16_speedup", lambda size=512: speedup)

    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    return set_cpu


def test_native_bf16_cpu_takes_bf16(cpu):
    cpu({"avx2", "avx512f", "avx512_bf16"}, 2.4)
    assert p.resolve_precision("auto").name == "bf16"
    assert p.cpu_capability()["flags"] == "avx512_bf16" and p.cpu_capability()["fast_bf16"]


def test_avx2_cpu_takes_fp32_and_says_bf16_is_emulated(cpu):
    cpu({"avx2", "fma"}, 0.002)
    chosen = p.resolve_precision("auto")
    assert chosen.name == "fp32" and "emulated" in chosen.reason
    capability = p.cpu_capability()
    assert capability["flags"] == "AVX2" and not capability["fast_bf16"] and "bf16 emulated" in capability["summary"]


def test_bf16_flags_with_capped_kernels_take_fp32(cpu):
    """ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA (or a VM) can hide the CPU's bf16 from torch: the probe catches it."""
    cpu({"avx2", "avx512f", "avx512_bf16"}, 0.01)
    chosen = p.resolve_precision("auto")
    assert chosen.name == "fp32" and "0.01x fp32" in chosen.reason
    assert "torch's kernels do not use the CPU's bf16" in p.cpu_capability()["summary"]


def test_amx_is_named_first(cpu):
    cpu({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, 6.0)
    assert p.cpu_capability()["flags"] == "AMX"


def test_the_real_probe_is_bounded():
    """On this machine, whatever it is: a positive ratio, measured in well under the time a slow bf16 CPU allows."""
    p.bf16_speedup.cache_clear()
    start = time.perf_counter()
    ratio = p.bf16_speedup()
    assert ratio > 0 and time.perf_counter() - start < 10


@pytest.mark.parametrize("kind, named", [("amx", "AMX"), ("avx512_bf16", "avx512_bf16"), ("avx2", "AVX2")])
def test_the_probe_can_be_forced_to_each_kind_of_cpu(monkeypatch, kind, named):
    """TUNESMITH_CPU_KIND makes the probe report another kind of CPU (the doc tests run every page as each kind),
    says so in the model name, and still measures bf16 on the real CPU: auto picks bf16 only where both agree."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setenv("TUNESMITH_CPU_KIND", kind)
    capability = p.cpu_capability()
    assert capability["flags"] == named and "forced by TUNESMITH_CPU_KIND=" + kind in capability["model"]
    assert p.resolve_precision("auto").name == ("bf16" if kind != "avx2" and p.bf16_speedup() >= 1.0 else "fp32")
    monkeypatch.setattr(p, "bf16_speedup", lambda size=512: 0.003)  # a CPU forced to list bf16 that runs it emulated
    assert p.resolve_precision("auto").name == "fp32"


def test_an_unknown_forced_kind_is_a_sentence(monkeypatch):
    monkeypatch.setenv("TUNESMITH_CPU_KIND", "z80")
    with pytest.raises(p.TunesmithError) as caught:
        p.cpu_flags()
    assert "TUNESMITH_CPU_KIND='z80'" in str(caught.value) and "amx, avx512_bf16, avx2" in caught.value.format()
