"""The sampling maths against hand-computed values and against Hugging Face's own logits warpers."""

import math

import pytest
import torch

from tunesmith.errors import TunesmithError
from tunesmith.infer.sampling import SamplingParams, explain, next_token_distribution, sample

LOGITS = torch.tensor([4.2, 1.5, -2.0, -3.5])
# exp: 66.686, 4.4817, 0.13534, 0.030197; sum 71.333
SOFTMAX = [0.93485, 0.062827, 0.0018972, 0.00042333]


def sig3(x: float) -> float:
    return float(f"{x:.3g}")


def test_softmax_of_the_issue_example():
    e = explain(LOGITS, SamplingParams())
    assert [sig3(p) for p in e.p_softmax] == [0.935, 0.0628, 0.0019, 0.000423]
    assert [round(p, 3) for p in e.p_softmax[:3]] == [0.935, 0.063, 0.002] and round(e.p_softmax[3], 4) == 0.0004
    assert e.p_final == pytest.approx(SOFTMAX, rel=1e-4)  # no filter: final == softmax
    assert e.cumulative == pytest.approx([0.93485, 0.99768, 0.99958, 1.0], rel=1e-4)
    assert e.kept_counts == {"top_k": 4, "top_p": 4, "min_p": 4, "final": 4}


def test_temperature_2_flattens():
    e = explain(LOGITS, SamplingParams(temperature=2.0))
    # exp(2.1, 0.75, -1, -1.75) = 8.1662, 2.1170, 0.36788, 0.17377; sum 10.825
    assert e.p_temperature == pytest.approx([0.75439, 0.19557, 0.033985, 0.016053], rel=1e-4)
    assert e.p_softmax == pytest.approx(SOFTMAX, rel=1e-4)  # the plain softmax column is unchanged
    assert e.entropy_final > e.entropy_softmax


def test_top_k_2_renormalises():
    e = explain(LOGITS, SamplingParams(top_k=2))
    assert e.kept_top_k == [True, True, False, False]
    assert e.p_final == pytest.approx([66.686 / 71.168, 4.4817 / 71.168, 0, 0], rel=1e-4)  # 0.93703, 0.06297


def test_top_p_keeps_the_token_that_crosses_the_threshold():
    assert explain(LOGITS, SamplingParams(top_p=0.9)).kept_counts["final"] == 1  # 0.935 >= 0.9 already
    e = explain(LOGITS, SamplingParams(top_p=0.95))  # 0.935 < 0.95 <= 0.998: the second token crosses it
    assert e.kept_top_p == [True, True, False, False]
    assert e.p_final == pytest.approx([0.93703, 0.06297, 0, 0], rel=1e-4)


def test_top_p_measures_what_top_k_left():
    # p = 0.5, 0.3, 0.2; top-k 2 leaves 0.625, 0.375, which already reaches top_p 0.6 (as HF's warpers do)
    e = explain(torch.tensor([0.5, 0.3, 0.2]).log(), SamplingParams(top_k=2, top_p=0.6))
    assert e.cumulative[:2] == pytest.approx([0.625, 1.0])
    assert e.kept_top_p == [True, False, False] and e.p_final == pytest.approx([1.0, 0, 0])


def test_min_p_is_relative_to_the_top_token():
    e = explain(LOGITS, SamplingParams(min_p=0.05))  # threshold 0.05 * 0.935 = 0.0467: 0.0628 stays, 0.0019 goes
    assert e.kept_min_p == [True, True, False, False] and e.kept_counts["min_p"] == 2


def test_at_least_the_top_token_survives():
    for params in (SamplingParams(top_p=1e-9), SamplingParams(min_p=1.0), SamplingParams(top_k=1, top_p=1e-9, min_p=1.0)):
        assert next_token_distribution(LOGITS[None], params).tolist() == [[1.0, 0.0, 0.0, 0.0]]


def test_greedy_is_one_hot_after_the_repetition_penalty():
    assert next_token_distribution(LOGITS[None], SamplingParams(temperature=0)).tolist() == [[1.0, 0.0, 0.0, 0.0]]
    # penalty 3 on token 0: 4.2 / 3 = 1.4 < 1.5, so token 1 wins
    probs = next_token_distribution(LOGITS[None], SamplingParams(temperature=0, repetition_penalty=3.0), torch.tensor([[0]]))
    assert probs.tolist() == [[0.0, 1.0, 0.0, 0.0]]


def test_repetition_penalty_hf_convention():
    # tokens 0 and 2 seen: positive 4.2 is divided (2.1), negative -2.0 multiplied (-4.0)
    probs = next_token_distribution(LOGITS[None], SamplingParams(repetition_penalty=2.0), torch.tensor([[0, 2, 2]]))
    assert probs[0].tolist() == pytest.approx([0.64319, 0.35299, 0.0014426, 0.0023784], rel=1e-4)
    assert explain(LOGITS, SamplingParams(repetition_penalty=2.0), torch.tensor([0, 2])).logits == pytest.approx([2.1, 1.5, -3.5, -4.0])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(temperature=0.7),
        dict(top_k=10),
        dict(top_p=0.8),
        dict(min_p=0.1),
        dict(temperature=1.3, top_k=20, top_p=0.9),
        dict(temperature=0.5, top_k=50, top_p=0.95, min_p=0.05),
        dict(top_p=0.5, repetition_penalty=1.3),
    ],
)
def test_equals_hugging_face_warpers(kwargs):
    from transformers.generation.logits_process import (
        MinPLogitsWarper,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    torch.manual_seed(0)
    logits, seen = torch.randn(3, 200) * 3, torch.randint(0, 200, (3, 12))
    p = SamplingParams(**kwargs)
    scores = RepetitionPenaltyLogitsProcessor(p.repetition_penalty)(seen, logits.clone()) if p.repetition_penalty != 1 else logits.clone()
    for warper in (
        TemperatureLogitsWarper(p.temperature),
        p.top_k and TopKLogitsWarper(p.top_k),
        p.top_p < 1 and TopPLogitsWarper(p.top_p),
        p.min_p and MinPLogitsWarper(p.min_p),
    ):
        scores = warper(seen, scores) if warper else scores
    assert torch.allclose(next_token_distribution(logits, p, seen), scores.softmax(-1), atol=1e-6)


def test_explain_is_the_distribution_generation_samples_from():
    torch.manual_seed(1)
    logits, params = torch.randn(500), SamplingParams(temperature=0.8, top_k=40, top_p=0.9, min_p=0.02)
    e = explain(logits, params, rows=10)
    full = next_token_distribution(logits[None], params)[0]
    assert torch.equal(e.distribution, full)
    assert e.p_final == full[e.token_ids].tolist() and e.kept_counts["final"] == int((full > 0).sum())
    assert e.p_temperature == sorted(e.p_temperature, reverse=True) and len(e.token_ids) == 10


def test_entropy_in_nats():
    assert explain(torch.zeros(4), SamplingParams()).entropy_softmax == pytest.approx(math.log(4))
    assert explain(LOGITS, SamplingParams(top_k=1)).entropy_final == 0.0


def test_top_k_keeps_ties_with_the_kth_token_as_hf_does():
    assert explain(torch.tensor([2.0, 1.0, 1.0, 0.0]), SamplingParams(top_k=2)).kept_counts["top_k"] == 3


def test_sample_is_reproducible_and_greedy_leaves_the_generator_alone():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.1, 0.2, 0.7]])
    draws = [sample(probs, torch.Generator().manual_seed(3)).tolist() for _ in range(2)]
    assert draws[0] == draws[1] and draws[0][0] != 2
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    assert sample(torch.tensor([[0.0, 1.0]]), g).tolist() == [1] and torch.equal(g.get_state(), state)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-1), "temperature is -1"),
        (dict(top_p=1.5), "top_p is 1.5"),
        (dict(top_p=0), "top_p is 0"),
        (dict(top_k=-2), "top_k is -2"),
        (dict(top_k=2.5), "top_k is 2.5; it must be an integer"),
        (dict(min_p=2), "min_p is 2"),
        (dict(repetition_penalty=0), "repetition_penalty is 0"),
        (dict(temperature=float("nan")), "finite"),
    ],
)
def test_bad_params_are_explained(kwargs, message):
    with pytest.raises(TunesmithError, match=message.replace(".", r"\.")):
        SamplingParams(**kwargs)


@pytest.mark.parametrize("penalty", [1.0, 1.7])
def test_greedy_fast_path_takes_the_token_the_distribution_puts_all_mass_on(penalty):
    """Generation's greedy shortcut (arg-max of the penalised logits) is the one-hot the inspector shows."""
    from tunesmith.infer.sampling import next_tokens

    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(3))
    logits[0, 7] = logits[0, 9] = logits[0].max() + 1  # a tie: both pick the first
    seen = torch.randint(0, 50, (6, 12), generator=torch.Generator().manual_seed(4))
    params = SamplingParams(temperature=0, repetition_penalty=penalty)
    assert next_tokens(logits, params, seen).tolist() == next_token_distribution(logits, params, seen).argmax(-1).tolist()


@pytest.mark.parametrize(
    "kwargs",
    [dict(top_p=0.9), dict(top_p=0.5, top_k=20), dict(temperature=1.2, top_p=0.95), dict(temperature=0.3, top_p=0.99), dict(top_p=0.999999)],
)
def test_top_p_on_its_candidates_keeps_what_the_full_sort_keeps(kwargs):
    """Generation sorts only top-p's candidates (256, else 4096 tokens, else all); the inspector sorts the whole
    vocabulary. Peaked and flat distributions over a 49k vocabulary, with bf16-like ties, keep the same tokens."""
    from tunesmith.infer.sampling import _steps

    torch.manual_seed(0)
    params = SamplingParams(**kwargs)
    for scale in (8.0, 2.0, 0.5):  # peaked (a few candidates) to flat (the whole vocabulary)
        logits = (torch.randn(3, 49152) * scale).bfloat16().float()  # bf16 logits: many exact ties
        fast, full = _steps(logits, params, None), _steps(logits, params, None, cumulative_column=True)
        assert torch.equal(fast.keep_top_p, full.keep_top_p) and torch.equal(fast.final, full.final), scale


def test_a_draw_follows_the_distribution_and_never_takes_a_token_of_probability_zero():
    from tunesmith.infer.sampling import pick, uniforms

    probs = torch.tensor([[0.0, 0.2, 0.0, 0.5, 0.3, 0.0]]).repeat(20000, 1)
    tokens = pick(probs, uniforms(20000, torch.Generator().manual_seed(0)))
    counts = torch.bincount(tokens, minlength=6) / 20000
    assert counts[[0, 2, 5]].sum() == 0
    assert torch.allclose(counts, probs[0], atol=0.015)
    edge = pick(torch.tensor([[0.25, 0.75, 0.0]]), torch.tensor([1.0], dtype=torch.float64))  # u * total reaching the total
    assert edge.tolist() == [1]
