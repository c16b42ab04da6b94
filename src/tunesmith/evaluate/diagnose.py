"""Run the diagnostics: loss/perplexity, generation checks, drift from a reference, accuracy."""

from __future__ import annotations

import math

import torch

from tunesmith.evaluate.metrics import TEMPLATE_MARKERS, accuracy, distinct_n, leakage, longest_repeated_ngram, mean_kl, memorization
from tunesmith.evaluate.report import DiagnosticsReport
from tunesmith.train.loss import causal_lm_loss


def _batches(dataset, size: int, model):
    """Right-padded (input_ids, labels, attention_mask) batches from a tokenized dataset, on the model's device."""
    device = next(model.parameters()).device
    for start in range(0, len(dataset), size):
        rows = dataset[start : start + size]
        width = max(len(x) for x in rows["input_ids"])
        ids = torch.tensor([x + [0] * (width - len(x)) for x in rows["input_ids"]])
        labels = torch.tensor([x + [-100] * (width - len(x)) for x in rows["labels"]])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in rows["input_ids"]])
        yield ids.to(device), labels.to(device), mask.to(device)


@torch.no_grad()
def eval_loss(model, dataset, batch_size: int = 8) -> tuple[float, float]:
    """Mean cross-entropy over trained tokens (labels != -100), and its perplexity exp(loss).

    The loss is training's own (`causal_lm_loss`), so an eval number compares with the logged train loss."""
    model.eval()
    total, count = 0.0, 0
    for ids, labels, mask in _batches(dataset, batch_size, model):
        # num_items_in_batch=1: the summed loss of the batch; the mean is taken over all batches below
        loss, stats = causal_lm_loss(model, {"input_ids": ids, "attention_mask": mask, "labels": labels}, num_items_in_batch=1)
        total += float(loss)
        count += int(stats.tokens)
    mean = total / max(count, 1)
    return mean, math.exp(min(mean, 50))


@torch.no_grad()
def drift(model, reference, dataset, batch_size: int = 8) -> float:
    """Mean per-token KL(model || reference), teacher-forced on the eval answers (trained positions)."""
    model.eval()
    reference.eval()
    total, count = 0.0, 0
    for ids, labels, mask in _batches(dataset, batch_size, model):
        logp = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)
        logq = reference(input_ids=ids, attention_mask=mask).logits[:, :-1].float().log_softmax(-1)
        positions = (labels[:, 1:] != -100).float()
        n = float(positions.sum())
        total += mean_kl(logp, logq, positions) * n
        count += n
    return total / max(count, 1)


def split_example(example: dict) -> tuple[object, str | None]:
    """(prompt to generate from, reference answer) of a canonical example."""
    if "messages" in example:
        messages = example["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        return messages[:last], messages[last]["content"]
    if "prompt" in example:
        return example["prompt"], example["completion"]
    words = example["text"].split()
    return " ".join(words[: max(1, len(words) // 2)]), None


def short_answers(data: str, field: str = "answer") -> list[str] | None:
    """Each row's short answer (`field`) of a data file or built-in, for --match; None unless every row has one."""
    from tunesmith.data import read_rows

    found = [record.get(field) for _, record in read_rows(data)]
    return [str(a) for a in found] if all(a is not None for a in found) else None


def answers_of(examples: list[dict]) -> list[str]:
    return [a for a in (split_example(e)[1] for e in examples) if a]


def diagnose(
    model,
    tokenizer,
    eval_data,
    *,
    name: str = "model",
    train_examples: list[dict] | None = None,
    reference=None,
    max_prompts: int = 16,
    max_new_tokens: int = 64,
    match: str | None = None,
    answers: list[str] | None = None,
    min_overlap_words: int = 12,
) -> DiagnosticsReport:
    """All diagnostics on `eval_data` (a data.PreparedData). Generation is greedy, as a user would first try."""
    from tunesmith.infer import complete

    report = DiagnosticsReport(name)
    loss, ppl = eval_loss(model, eval_data.dataset)
    report.add("eval_loss", loss)
    report.add("perplexity", ppl)
    pairs = [split_example(e) for e in eval_data.examples[:max_prompts]]
    prompts = [p if isinstance(p, list) or not p else p for p, _ in pairs]
    chat = isinstance(prompts[0], list)
    results = complete(model, tokenizer, prompts, chat=chat, max_new_tokens=max_new_tokens)
    texts = [r.text for r in results]
    raw = [tokenizer.decode(r.token_ids, skip_special_tokens=False) for r in results]
    markers = sorted({*TEMPLATE_MARKERS, *(t for t in tokenizer.all_special_tokens if len(t) > 2)})
    rate, leaked = leakage(raw, markers)
    report.add("leakage_rate", rate)
    report.examples["leaked"] = leaked[:5]
    report.add("distinct_1", distinct_n(texts, 1))
    report.add("distinct_2", distinct_n(texts, 2))
    report.add("longest_repeat_mean", sum(longest_repeated_ngram(t.split()) for t in texts) / len(texts))
    report.add("stopped_rate", sum(r.finish_reason == "stop" for r in results) / len(results))
    report.add("mean_length_tokens", sum(r.completion_tokens for r in results) / len(results))
    if train_examples:
        rate, cases = memorization(texts, answers_of(train_examples), min_overlap_words)
        report.add("memorization_rate", rate)
        report.examples["memorized"] = cases[:5]
    if match:  # short answers (an `answer` field) when the data has them, else the reference replies
        references = answers[: len(pairs)] if answers else [a for _, a in pairs]
        report.add("accuracy", accuracy(texts, [a or "" for a in references], match))
    if reference is not None:
        report.add("kl_to_reference", drift(model, reference, eval_data.dataset))
    report.examples["generations"] = [{"prompt": p if isinstance(p, str) else p[-1]["content"], "text": t} for (p, _), t in zip(pairs, texts)][:8]
    return report
