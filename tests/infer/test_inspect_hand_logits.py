"""`inspect logits --logits ...`: the sampling table on logits given by hand (no model), the textbook's Paris example."""

import json
import math
import sys

import pytest
from typer.testing import CliRunner

from tunesmith.cli.main import _register, app, main
from tunesmith.errors import TunesmithError
from tunesmith.infer import SamplingParams
from tunesmith.infer.inspect import explain_logits

_register()
runner = CliRunner()
PARIS = ["inspect", "logits", "--logits", "4.2,-2.0,1.5,-3.5", "--tokens", "Paris,London,Rome,Berlin"]

# softmax by hand, relative to the largest logit 4.2: exp(0) = 1, exp(1.5 - 4.2) = exp(-2.7) = 0.06721,
# exp(-2.0 - 4.2) = exp(-6.2) = 0.00203, exp(-3.5 - 4.2) = exp(-7.7) = 0.00045; sum 1.06969
# -> Paris 0.9349, Rome 0.0628, London 0.0019, Berlin 0.0004 (the textbook's 0.935 / 0.063 / 0.002 / 0.0004)
EXPECTED = [("Paris", 0.9349), ("Rome", 0.0628), ("London", 0.0019), ("Berlin", 0.0004)]


def test_textbook_softmax_json():
    result = runner.invoke(app, [*PARIS, "--json"])
    assert result.exit_code == 0, result.output
    (step,) = json.loads(result.stdout)
    assert [t["token"] for t in step["tokens"]] == [name for name, _ in EXPECTED]  # ordered by probability
    assert [t["p_softmax"] for t in step["tokens"]] == pytest.approx([p for _, p in EXPECTED], abs=5e-5)
    assert [round(t["p_softmax"], 3) for t in step["tokens"]] == [0.935, 0.063, 0.002, 0.0]
    assert round(step["tokens"][3]["p_softmax"], 4) == 0.0004
    assert [t["logit"] for t in step["tokens"]] == pytest.approx([4.2, 1.5, -2.0, -3.5])
    assert step["context_tail"] is None and step["vocab_size"] == 4 and step["kept"]["final"] == 4


def test_textbook_softmax_table():
    result = runner.invoke(app, PARIS)
    assert result.exit_code == 0, result.output
    assert "step 1: logits given by hand" in result.output
    lines = {name: next(line for line in result.output.splitlines() if f"'{name}'" in line) for name, _ in EXPECTED}
    for name, p in EXPECTED:
        assert f"{p:.4f}" in lines[name], (name, lines[name])
    assert result.output.index("'Paris'") < result.output.index("'Rome'") < result.output.index("'London'") < result.output.index("'Berlin'")


def test_sampling_options_apply_as_for_a_model():
    # T = 2: logits / 2 = 2.1, 0.75, -1.0, -1.75 -> exp(-1.35) = 0.2592, exp(-3.1) = 0.0450, exp(-3.85) = 0.0213; top-k 2 keeps Paris, Rome
    step = explain_logits([4.2, -2.0, 1.5, -3.5], SamplingParams(temperature=2.0, top_k=2), ["Paris", "London", "Rome", "Berlin"])
    total = 1 + math.exp(-1.35) + math.exp(-3.1) + math.exp(-3.85)
    assert [t["p_temperature"] for t in step["tokens"]] == pytest.approx(
        [1 / total, math.exp(-1.35) / total, math.exp(-3.1) / total, math.exp(-3.85) / total], abs=1e-6
    )
    assert [t["top_k"] for t in step["tokens"]] == [True, True, False, False]
    assert [t["p_final"] for t in step["tokens"]] == pytest.approx([1 / (1 + math.exp(-1.35)), math.exp(-1.35) / (1 + math.exp(-1.35)), 0, 0], abs=1e-6)
    table = runner.invoke(app, [*PARIS, "--temperature", "0"]).output
    assert "greedy (T=0)" in table and "chose 'Paris' (p=1.0000)" in table


def test_default_token_names():
    (step,) = json.loads(runner.invoke(app, ["inspect", "logits", "--logits", "0,1", "--json"]).stdout)
    assert [t["token"] for t in step["tokens"]] == ["token1", "token0"] and [t["token_id"] for t in step["tokens"]] == [1, 0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--logits", "1,2", "--tokens", "a"], "1 token names for 2 logits"),
        (["--logits", "1,x"], "--logits: 'x' is not a number"),
        (["--logits", "1,2", "-p", "hi"], "not both"),
        ([], "give --prompt (a model's next-token logits) or --logits"),
        (["--logits", "1,2", "--steps", "2"], "need --prompt"),
        (["--logits", "1,2", "--repetition-penalty", "1.2"], "repetition penalty needs previous tokens"),
        (["-p", "hi", "--tokens", "a,b"], "--tokens names the numbers given with --logits"),
    ],
)
def test_bad_combinations_are_one_sentence(args, message):
    result = runner.invoke(app, ["inspect", "logits", *args])
    assert isinstance(result.exception, TunesmithError) and message in str(result.exception), result.output


def test_bad_value_exits_2_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["tunesmith", "inspect", "logits", "--logits", "4.2,oops"])
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "'oops' is not a number" in err and "Traceback" not in err
