"""Diagnostic metrics as pure functions over texts and tensors (hand-checked in tests)."""

from __future__ import annotations

import re

import torch

TEMPLATE_MARKERS = ("[INST]", "[/INST]", "<<SYS>>", "<s>", "</s>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|start_header_id|>")


def leakage(texts: list[str], markers: list[str] | tuple[str, ...] = TEMPLATE_MARKERS) -> tuple[float, list[str]]:
    """Share of texts containing a chat-template / special token, and those texts."""
    leaked = [t for t in texts if any(m in t for m in markers if m)]
    return (len(leaked) / len(texts) if texts else 0.0), leaked


def distinct_n(texts: list[str], n: int) -> float:
    """Distinct n-grams / all n-grams over whitespace tokens of all texts (1.0 = no repetition)."""
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def longest_repeated_ngram(words: list[str]) -> int:
    """Length of the longest word n-gram occurring at least twice in `words` (0 if none)."""
    best = 0
    for n in range(1, len(words)):
        seen, found = set(), False
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            if gram in seen:
                found = True
                break
            seen.add(gram)
        if not found:
            break
        best = n
    return best


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", text.lower())


def longest_common_words(a: list[str], b: list[str]) -> int:
    """Longest common contiguous run of words (dynamic programming, O(len a * len b))."""
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def memorization(generations: list[str], train_answers: list[str], min_overlap_words: int = 12) -> tuple[float, list[tuple[int, str, str]]]:
    """Share of generations sharing >= `min_overlap_words` consecutive words with a training answer,
    and the worst cases as (overlap, generation, training answer), longest first."""
    answers = [_words(a) for a in train_answers]
    cases = []
    for text in generations:
        words = _words(text)
        overlap, source = max(((longest_common_words(words, a), i) for i, a in enumerate(answers)), default=(0, -1))
        cases.append((overlap, text, train_answers[source] if source >= 0 else ""))
    flagged = sorted((c for c in cases if c[0] >= min_overlap_words), key=lambda c: -c[0])
    return (len(flagged) / len(generations) if generations else 0.0), flagged


def accuracy(predictions: list[str], answers: list[str], mode: str = "contains") -> float:
    """exact (case/space-insensitive), contains (answer within prediction) or regex (answer is a pattern)."""

    def hit(p: str, a: str) -> bool:
        if mode == "exact":
            return p.strip().lower() == a.strip().lower()
        if mode == "contains":
            return a.strip().lower() in p.lower()
        if mode == "regex":
            return re.search(a, p) is not None
        raise ValueError(f"unknown match mode {mode!r}; expected exact, contains or regex")

    return sum(hit(p, a) for p, a in zip(predictions, answers)) / len(answers) if answers else 0.0


def mean_kl(logp: torch.Tensor, logq: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over masked positions of KL(p || q) = sum_v p (log p - log q); logp, logq (B, T, V) log-softmax, mask (B, T)."""
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return float((kl * mask).sum() / mask.sum().clamp(min=1))
