"""The README's demo on the real embedded model (minutes): slow, run with `make test-slow`."""

import re

import pytest

PIRATE = re.compile(r"\b(arr+|ahoy|matey|aye|ye|me hearties|landlubber|shiver)\b", re.I)


@pytest.mark.slow
def test_demo_turns_smollm2_into_a_correct_pirate(tmp_path):
    from tunesmith.recipes import load_recipe
    from tunesmith.train.sft import run_sft

    result = run_sft(load_recipe(None, {"output_dir": str(tmp_path / "demo")}), live=False)
    france = result.after[0]
    assert "Paris" in france, france
    assert PIRATE.search(france), france
    assert sum(bool(PIRATE.search(a)) for a in result.after) >= len(result.after) - 1, result.after
    assert not any(PIRATE.search(b) for b in result.before), result.before  # the style was learned, not there before
    assert result.eval_loss is not None and result.eval_loss < 2.0
