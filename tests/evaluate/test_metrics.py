"""Diagnostics on crafted outputs, with hand-computed values."""

import torch

from tunesmith.evaluate.metrics import accuracy, distinct_n, leakage, longest_repeated_ngram, mean_kl, memorization
from tunesmith.evaluate.report import judge

TRAIN = ["Arr, the capital o' Spain be Madrid, matey, a fine port city with a grand old palace and many tapas bars for hungry sailors."]


def test_leakage_catches_template_tokens():
    rate, leaked = leakage(["Paris, matey.", "<|im_start|>assistant\nArr", "fine [/INST] text", "clean"])
    assert rate == 0.5 and len(leaked) == 2
    assert judge("leakage_rate", rate).verdict == "bad" and "chat template" in judge("leakage_rate", rate).hint
    assert judge("leakage_rate", 0.0).verdict == "fine"


def test_distinct_and_repeats():
    assert distinct_n(["a b a b"], 1) == 0.5  # 2 distinct of 4
    assert distinct_n(["a b a b"], 2) == 2 / 3  # (a b), (b a), (a b)
    assert longest_repeated_ngram("the cat the cat sat".split()) == 2
    assert longest_repeated_ngram("all different words".split()) == 0


def test_memorization_flags_copies_and_shows_worst():
    copied = "Sure: the capital o' Spain be Madrid, matey, a fine port city with a grand old palace and many tapas bars."
    rate, worst = memorization([copied, "Madrid, matey!"], TRAIN, min_overlap_words=12)
    assert rate == 0.5
    assert worst[0][0] >= 20 and worst[0][1] == copied and worst[0][2] == TRAIN[0]
    assert memorization(["Madrid, matey!"], TRAIN)[0] == 0.0


def test_accuracy_modes():
    preds = ["Arr, it be Paris, matey", "Berlin"]
    assert accuracy(preds, ["paris", "Berlin"], "contains") == 1.0
    assert accuracy(preds, ["paris", "berlin"], "exact") == 0.5
    assert accuracy(preds, [r"\bParis\b", r"^B"], "regex") == 1.0


def test_kl_hand_computed():
    p = torch.tensor([[[0.5, 0.5]]]).log()
    q = torch.tensor([[[0.9, 0.1]]]).log()
    expected = 0.5 * torch.log(torch.tensor(0.5 / 0.9)) + 0.5 * torch.log(torch.tensor(0.5 / 0.1))  # 0.5108
    assert abs(mean_kl(p, q, torch.ones(1, 1)) - float(expected)) < 1e-6
    assert mean_kl(p, p, torch.ones(1, 1)) == 0.0
