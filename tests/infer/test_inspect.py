"""`inspect logits`: the walk shows the distribution generation samples from, and picks the tokens it picks."""

import json

import pytest
import torch
from typer.testing import CliRunner

from tunesmith.cli.main import _register, app
from tunesmith.infer import SamplingParams, complete, next_token_distribution
from tunesmith.infer.inspect import walk

_register()
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from tunesmith.models import load_model, load_tokenizer

    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


@pytest.mark.parametrize("params", [SamplingParams(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.2), SamplingParams(temperature=0)])
def test_walk_shows_and_picks_what_generation_does(tiny, params):
    model, tok = tiny
    steps = walk(model, tok, "Shanghai is in", params, steps=6, rows=5, seed=11)
    generated = complete(model, tok, ["Shanghai is in"], params, chat=False, seed=11, max_new_tokens=6, stop=[])[0]
    assert [s["chosen_id"] for s in steps] == generated.token_ids
    ids = tok("Shanghai is in", return_tensors="pt")["input_ids"]
    for step in steps:  # each step's final column is next_token_distribution, recomputed from scratch
        with torch.no_grad():
            probs = next_token_distribution(model(input_ids=ids).logits[:, -1], params, ids)[0]
        assert [t["p_final"] for t in step["tokens"]] == pytest.approx(probs[[t["token_id"] for t in step["tokens"]]].tolist(), abs=1e-6)
        ids = torch.cat([ids, torch.tensor([[step["chosen_id"]]])], -1)


def test_inspect_logits_json_shape(tiny_model_dir):
    result = runner.invoke(app, ["inspect", "logits", "-m", tiny_model_dir, "-p", "Shanghai is in", "--top-k", "3", "--rows", "4", "--steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)
    assert len(steps) == 2 and [s["step"] for s in steps] == [1, 2]
    assert set(steps[0]) == {
        "step",
        "context_tail",
        "tokens",
        "kept",
        "vocab_size",
        "entropy_bits_softmax",
        "entropy_bits_final",
        "chosen_id",
        "chosen",
        "chosen_p",
    }
    assert set(steps[0]["tokens"][0]) == {
        "rank",
        "token_id",
        "token",
        "logit",
        "p_softmax",
        "p_temperature",
        "cumulative",
        "top_k",
        "top_p",
        "min_p",
        "p_final",
    }
    assert len(steps[0]["tokens"]) == 4 and steps[0]["kept"] == {"top_k": 3, "top_p": 49152, "min_p": 49152, "final": 3}
    assert sum(t["p_final"] for t in steps[0]["tokens"][:3]) == pytest.approx(1.0, abs=1e-5) and steps[0]["tokens"][3]["p_final"] == 0
    assert steps[1]["context_tail"].endswith(steps[0]["chosen"])


def test_inspect_logits_table(tiny_model_dir):
    result = runner.invoke(app, ["inspect", "logits", "-m", tiny_model_dir, "-p", "Shanghai is in", "--top-k", "3", "--top-p", "0.5", "--rows", "5"])
    assert result.exit_code == 0, result.output
    for text in (
        "step 1: after 'Shanghai is in'",
        "p softmax",
        "cum. after top-k",
        "top-p",
        "✓",
        "✗",
        "kept of 49,152: top-k 3, top-p",
        "min-p off",
        "bits",
        "chose",
    ):
        assert text in result.output, text


@pytest.mark.slow
def test_real_model_shanghai():
    from tunesmith.models import load_model, load_tokenizer

    model, tok = load_model("smollm2-135m-instruct"), load_tokenizer("smollm2-135m-instruct")
    step = walk(model, tok, "Shanghai is in", SamplingParams(top_k=5, top_p=0.9), rows=5)[0]
    assert step["tokens"][0]["token"] == " the" and step["kept"]["final"] == 4 and step["chosen"] == " the"
    assert complete(model, tok, ["What is the capital of France?"], max_new_tokens=20)[0].text.count("Paris") >= 1
