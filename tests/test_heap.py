"""Large CPU tensors go on huge pages in tunesmith's processes; a benchmark's baseline runs with the user's own setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.heap import HUGE_PAGES

PROBE = """
import json, os, tunesmith, torch
from tunesmith.bench.worker import environment
block = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MB, written: its pages are in
rollup = open("/proc/self/smaps_rollup").read() if os.path.exists("/proc/self/smaps_rollup") else ""
huge = int(rollup.split("AnonHugePages:")[1].split()[0]) if "AnonHugePages:" in rollup else None
print(json.dumps({"switch": os.environ.get(SWITCH), "huge_kib": huge,
                  "sides": {side: environment(side).get(SWITCH) for side in ("baseline", "trl-tuned", "hf:fp32:1", "tunesmith", "tunesmith:auto:8")}}))
""".replace("SWITCH", repr(HUGE_PAGES))


def probe(switch: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != HUGE_PAGES}
    if switch is not None:
        env[HUGE_PAGES] = switch
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_importing_tunesmith_turns_huge_pages_on_and_baselines_get_torchs_default():
    got = probe(None)
    assert got["switch"] == "1"
    assert got["sides"] == {"baseline": "0", "trl-tuned": "0", "hf:fp32:1": "0", "tunesmith": "1", "tunesmith:auto:8": "1"}


@pytest.mark.parametrize("setting", ["0", "1"])
def test_a_users_own_setting_is_kept_everywhere(setting):
    got = probe(setting)
    assert got["switch"] == setting
    assert set(got["sides"].values()) == {setting}


def test_the_switch_puts_large_tensors_on_huge_pages_where_the_kernel_leaves_it_to_the_program():
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not mode.exists() or "[madvise]" not in mode.read_text():
        pytest.skip("the kernel's transparent huge pages are not in madvise mode here: the switch changes nothing")
    assert probe(None)["huge_kib"] >= 32 * 1024
    assert probe("0")["huge_kib"] == 0
