"""The commands docs/concepts.md teaches with: inspect precision, loss, clip and kl, the alpha line of inspect
modules and eval side by side. Numbers are checked against hand arithmetic, and the library functions they print
against what training computes."""

import contextlib
import io
import json
import math
import shutil

import pytest

from tunesmith.cli.main import run


def invoke(*args):
    """The exit status and the output (stdout and stderr) of `tunesmith ARGS`, through the CLI's error boundary."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        code = run([str(a) for a in args])
    return code, buffer.getvalue()


def test_precision_formats_come_from_torch():
    from tunesmith.models.precision import PROBES, number_formats

    formats = {f.name: f for f in number_formats()}
    assert (formats["bf16"].exponent_bits, formats["bf16"].mantissa_bits, formats["fp16"].largest) == (8, 7, 65504.0)
    stored = {name: dict(zip(PROBES, f.stored)) for name, f in formats.items()}
    assert stored["bf16"][70000.0] == 70144.0 and math.isinf(stored["fp16"][70000.0])  # range: bf16 keeps it, fp16 overflows
    assert stored["fp16"][1e-8] == 0.0 and stored["bf16"][1e-8] > 0  # tiny values: fp16 underflows
    assert stored["bf16"][1.001] == 1.0 and stored["fp16"][1.001] > 1.0  # precision: fp16 keeps more digits
    code, out = invoke("inspect", "precision")
    assert code == 0 and "inf (overflow)" in out and "0 (underflow)" in out and "this machine: precision auto -> " in out
    code, out = invoke("inspect", "precision", "--json")
    assert code == 0 and json.loads(out)["auto"]["precision"] in ("bf16", "fp32")


def test_inspect_loss_is_the_training_loss(tiny_model_dir, smol_tokenizer):
    from tunesmith.data import prepare_dataset
    from tunesmith.evaluate.tokens import explain_loss
    from tunesmith.models import load_model

    data = prepare_dataset("pirate", smol_tokenizer)
    ids, labels = data.dataset[2]["input_ids"], data.dataset[2]["labels"]
    result = explain_loss(load_model(tiny_model_dir), smol_tokenizer, ids, labels)
    trained = [t for t in result.tokens if t.trained]
    assert len(trained) == sum(label != -100 for label in labels[1:]) and not result.tokens[0].trained
    assert result.loss == pytest.approx(sum(t.nll for t in trained) / len(trained), rel=1e-6)
    assert result.loss == pytest.approx(result.training_loss, rel=1e-4)  # by hand from the softmax = training's loss function
    code, out = invoke("inspect", "loss", "-m", tiny_model_dir, "--dataset", "pirate", "--row", "3", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["loss"] == pytest.approx(result.loss, rel=1e-5) and shown["trained_tokens"] == len(trained)
    code, out = invoke("inspect", "loss", "-m", tiny_model_dir, "--dataset", "pirate", "--row", "3", "--train-on-prompt", "--json")
    assert json.loads(out)["trained_tokens"] == len(ids) - 1  # everything but the first token, which nothing predicts
    code, out = invoke("inspect", "loss", "-m", tiny_model_dir, "-p", "Hi", "-a", "Ahoy!")
    assert code == 0 and "· (-100)" in out and "training's loss function on this example" in out


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "give --dataset (and --row), or --prompt and --answer"),
        (("--dataset", "pirate", "-p", "x"), "not both"),
        (("--dataset", "pirate", "--row", "9999"), "--row is 9999, but pirate has 250 examples"),
    ],
)
def test_inspect_loss_refuses(tiny_model_dir, args, message):
    code, out = invoke("inspect", "loss", "-m", tiny_model_dir, *args)
    assert code == 2 and message in out


def test_inspect_clip_is_ppo_surrogate():
    code, out = invoke("inspect", "clip", "--advantage", "0.4", "--ratios", "0.6,1.0,1.5", "--json")
    rows = {r["ratio"]: r for r in json.loads(out)["rows"]}
    assert code == 0
    assert rows[1.0]["loss"] == pytest.approx(-0.4) and rows[1.0]["gradient"] == pytest.approx(-0.4)  # d(-A r)/d log p = -A r
    assert rows[1.5]["loss"] == pytest.approx(-0.48) and rows[1.5]["gradient"] == 0  # past 1.2: clipped, no push
    assert rows[0.6]["loss"] == pytest.approx(-0.24) and not rows[0.6]["clipped_term_taken"]  # below 0.8 with A > 0: unclipped
    code, out = invoke("inspect", "clip", "--advantage", "-0.4", "--ratios", "0.6,1.5", "--json")
    rows = {r["ratio"]: r for r in json.loads(out)["rows"]}
    assert rows[0.6]["gradient"] == 0 and rows[1.5]["loss"] == pytest.approx(0.6)  # the wrong way is pulled back in full
    code, out = invoke("inspect", "clip", "--advantage", "0.4")
    assert code == 0 and "clipped: no push" in out and "[0.80, 1.20]" in out
    assert invoke("inspect", "clip", "-a", "1", "--cliprange", "1.5")[0] == 2
    assert "must be above 0" in invoke("inspect", "clip", "-a", "1", "--ratios", "0,1")[1]


def test_inspect_kl_is_the_ppo_penalty():
    code, out = invoke("inspect", "kl", "--logprobs", "-0.9,-0.2,-1.6", "--ref-logprobs", "-1.4,-0.3,-1.5", "--score", "1", "--kl-coef", "0.05", "--json")
    result = json.loads(out)
    assert code == 0 and result["kl"] == pytest.approx([0.5, 0.1, -0.1]) and result["kl_sum"] == pytest.approx(0.5)
    assert result["rewards"] == pytest.approx([-0.025, -0.005, 1.005])  # -kl_coef x KL_t, the score on the last token
    code, out = invoke("inspect", "kl", "--logprobs", "-0.9", "--ref-logprobs", "-1.4,-0.3", "--score", "1")
    assert code == 2 and "one of each per token" in out
    code, out = invoke("inspect", "kl", "--logprobs", "0.5", "--ref-logprobs", "-0.3", "--score", "1")
    assert code == 2 and "at most 0" in out


def test_modules_say_the_lora_scale(tiny_model_dir):
    code, out = invoke("inspect", "modules", "--model", tiny_model_dir, "--lora-r", "8")
    assert code == 0 and "lora_alpha=16 (the default, 2r)" in out and "scaled by 2" in out
    code, out = invoke("inspect", "modules", "--model", tiny_model_dir, "--lora-r", "8", "--lora-alpha", "4")
    assert "lora_alpha=4:" in out and "scaled by 0.5" in out


def test_eval_side_by_side(tiny_model_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    code, out = invoke("eval", "-m", tiny_model_dir, "-m", str(other), "--max-prompts", "2", "--max-new-tokens", "3", "--json")
    assert code == 0, out
    result = json.loads(out)
    assert list(result["values"]) == [tiny_model_dir.rstrip("/").split("/")[-1], "other"]
    first, second = result["values"].values()
    assert first["eval_loss"] == pytest.approx(second["eval_loss"])  # the same weights measure the same
    code, out = invoke("eval", "-m", tiny_model_dir, "-m", str(other), "--reference-model", tiny_model_dir)
    assert code == 2 and "measure one model" in out
    code, out = invoke("eval", "-m", tiny_model_dir, "--pairs", "pirate-pairs-eval")
    assert code == 2 and "--pairs compares several models" in out
