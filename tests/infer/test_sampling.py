"""The sampling maths against hand-computed values, and generation using exactly it."""

import math

import pytest
import torch

from tunesmith.errors import TunesmithError
from tunesmith.infer import SamplingParams, complete, explain, generate, next_token_distribution

LOGITS = torch.tensor([4.2, 1.5, -2.0, -3.5])


def test_softmax_of_the_issue_example():
    e = explain(LOGITS, SamplingParams())
    # exp(4.2)=66.686, exp(1.5)=4.4817, exp(-2)=0.13534, exp(-3.5)=0.030197; sum 71.333
    assert e.p_softmax == pytest.approx([0.935, 0.0628, 0.0019, 0.000423], abs=5e-4)
    assert e.p_final == pytest.approx(e.p_softmax, abs=1e-6)
    assert e.cumulative[-1] == pytest.approx(1.0)


def test_temperature_flattens():
    e = explain(LOGITS, SamplingParams(temperature=2.0))
    z = [math.exp(x / 2) for x in LOGITS.tolist()]
    assert e.p_temperature == pytest.approx([v / sum(z) for v in z], rel=1e-5)  # 0.7513, 0.1947, 0.0338, 0.0203


def test_top_k_renormalises():
    e = explain(LOGITS, SamplingParams(top_k=2))
    assert e.kept_top_k == [True, True, False, False]
    assert e.p_final == pytest.approx([66.686 / 71.168, 4.4817 / 71.168, 0, 0], rel=1e-3)


def test_top_p_keeps_the_token_that_crosses():
    assert explain(LOGITS, SamplingParams(top_p=0.9)).kept_counts["final"] == 1  # 0.935 >= 0.9
    assert explain(LOGITS, SamplingParams(top_p=0.95)).kept_counts["final"] == 2  # 0.935 < 0.95 <= 0.998


def test_min_p_and_greedy():
    assert explain(LOGITS, SamplingParams(min_p=0.05)).kept_counts["min_p"] == 2  # 0.0628 >= 0.05*0.935; 0.0019 is not
    assert next_token_distribution(LOGITS[None], SamplingParams(temperature=0)).tolist() == [[1.0, 0.0, 0.0, 0.0]]


def test_repetition_penalty_hf_convention():
    probs = next_token_distribution(LOGITS[None], SamplingParams(repetition_penalty=2.0), torch.tensor([[0, 2]]))
    z = torch.tensor([2.1, 1.5, -4.0, -3.5]).softmax(-1)  # 4.2/2, -2.0*2
    assert torch.allclose(probs[0], z, atol=1e-6)


def test_bad_params_are_explained():
    with pytest.raises(TunesmithError, match="top_p is 1.5"):
        SamplingParams(top_p=1.5)
    with pytest.raises(TunesmithError, match="temperature is -1"):
        SamplingParams(temperature=-1)


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from tunesmith.models import load_model, load_tokenizer

    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


def test_greedy_equals_transformers_generate(tiny):
    model, tok = tiny
    prompts = ["hello there", "a much longer prompt so that the batch needs left padding"]
    ours = complete(model, tok, prompts, max_new_tokens=12)
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in prompts]
    tok.padding_side = "left"
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    tok.padding_side = "right"
    ref = model.generate(**batch, max_new_tokens=12, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    for mine, row in zip(ours, ref[:, batch["input_ids"].shape[1]:]):
        expected = [t for t in row.tolist() if t != tok.pad_token_id]
        assert mine.token_ids == expected[: len(mine.token_ids)] and len(mine.token_ids) >= len(expected) - 1


def test_seed_reproduces_and_stop_strings_cut(tiny):
    model, tok = tiny
    params = SamplingParams(temperature=1.0, top_k=50)
    a = complete(model, tok, ["x"], params, seed=5, max_new_tokens=15)
    b = complete(model, tok, ["x"], params, seed=5, max_new_tokens=15)
    assert a[0].token_ids == b[0].token_ids
    text = a[0].text
    if len(text) > 4:
        stop = text[2:4]
        cut = complete(model, tok, ["x"], params, seed=5, max_new_tokens=15, stop=[stop])[0]
        assert cut.finish_reason == "stop" and stop not in cut.text and text.startswith(cut.text.strip()[:2])


def test_streamed_deltas_add_up(tiny):
    model, tok = tiny
    deltas = []
    result = complete(model, tok, ["stream me"], max_new_tokens=10, on_token=lambda i, d: deltas.append(d))[0]
    assert "".join(deltas).strip() == result.text
    assert "<|im_start|>" not in result.text and "<|im_end|>" not in result.text


def test_inspector_shows_the_distribution_generation_samples(tiny):
    from tunesmith.infer.inspect import walk

    model, tok = tiny
    params = SamplingParams(temperature=0.7, top_k=20, top_p=0.9)
    steps = walk(model, tok, "Shanghai is in", params, steps=3, rows=5, seed=11)
    ids = tok("Shanghai is in", return_tensors="pt")["input_ids"]
    generator = torch.Generator().manual_seed(11)
    for step in steps:
        with torch.no_grad():
            probs = next_token_distribution(model(input_ids=ids).logits[:, -1], params)
        assert [r["p_final"] for r in step["tokens"]] == pytest.approx(probs[0, [r["token_id"] for r in step["tokens"]]].tolist(), abs=1e-7)
        chosen = int(torch.multinomial(probs, 1, generator=generator))
        assert chosen == step["chosen_id"]
        ids = torch.cat([ids, torch.tensor([[chosen]])], -1)
    assert set(steps[0]) >= {"tokens", "kept", "entropy_softmax", "entropy_final", "chosen"}
