"""Template and tokenize canonical examples; decide token by token what is trained.

Loss is on the completion / assistant part by default, and the end-of-turn token is
always trained so the model learns to stop. Chat templates rarely carry
`{% generation %}` markers (SmolLM2's does not), so the assistant spans are found
from template-rendered prefixes instead:

    start = len(render(messages[:i], add_generation_prompt=True))   # up to "<|im_start|>assistant\n"
    end   = len(render(messages[:i + 1]))                            # through "...<|im_end|>\n"

and every token whose characters overlap [start, end) is trained. The span thus
includes the end-of-turn token and the template's newline after it (harmless: a reply
stops at the end-of-turn token). This needs a template where a conversation's
rendering starts with the rendering of each of its prefixes; we check that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunesmith.errors import DataError

IGNORE = -100


def _render(tokenizer, messages, generation_prompt=False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer, messages: list[dict], where: str = "") -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    full = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head = _render(tokenizer, messages[:i], generation_prompt=True) if i else ""
        upto = _render(tokenizer, messages[: i + 1])
        if not (full.startswith(upto) and upto.startswith(head)):
            raise DataError(
                "the chat template renders a conversation differently from its prefixes, so assistant tokens cannot be located",
                where=where or None,
                hint="use a template that renders turns left to right, or set data.train_on_prompt: true",
            )
        spans.append((len(head), len(upto)))
    return full, spans


def _eos(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no eos token, so the model could not learn to stop", hint="use a tokenizer with an eos token")
    return tokenizer.eos_token_id


def tokenize_example(example: dict, tokenizer, *, train_on_prompt: bool = False, where: str = "") -> dict:
    """Canonical example -> {"input_ids", "labels"} (labels are -100 where nothing is learned)."""
    if "messages" in example:
        text, spans = assistant_spans(tokenizer, example["messages"], where)
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = encoded["input_ids"]
        trained = [train_on_prompt or any(s < e_tok and b_tok < e for s, e in spans) for b_tok, e_tok in encoded["offset_mapping"]]
        last = max((i for i, t in enumerate(trained) if t), default=None)
        eos = _eos(tokenizer)
        # A template that does not close assistant turns with eos: add it, trained, so the model stops.
        if last is not None and eos not in ids[: last + 1][-3:]:
            ids = ids[: last + 1] + [eos] + ids[last + 1 :]
            trained = trained[: last + 1] + [True] + trained[last + 1 :]
    elif "prompt" in example:
        prompt = tokenizer(example["prompt"])["input_ids"] if example["prompt"] else []
        completion = tokenizer(example["completion"], add_special_tokens=False)["input_ids"] + [_eos(tokenizer)]
        ids = prompt + completion
        trained = [train_on_prompt] * len(prompt) + [True] * len(completion)
    else:
        ids = tokenizer(example["text"])["input_ids"] + [_eos(tokenizer)]
        trained = [True] * len(ids)
    return {"input_ids": ids, "labels": [t if keep else IGNORE for t, keep in zip(ids, trained)]}


@dataclass
class DataReport:
    source: str
    format: str
    num_rows: int = 0
    num_examples: int = 0
    num_truncated: int = 0
    num_dropped_too_long: int = 0
    num_dropped_no_target: int = 0
    num_tokens: int = 0
    num_trained_tokens: int = 0
    max_tokens: int = 0
    mean_tokens: float = 0.0

    def summary(self) -> str:
        text = (
            f"{self.source}: {self.num_examples:,} examples ({self.format}), {self.num_tokens:,} tokens "
            f"({self.num_trained_tokens:,} trained), longest {self.max_tokens}, mean {self.mean_tokens:.0f}; "
            f"{self.num_truncated} truncated"
        )
        dropped = self.num_dropped_too_long + self.num_dropped_no_target
        if dropped:
            text += f", {dropped} dropped ({self.num_dropped_too_long} too long, {self.num_dropped_no_target} with nothing to learn)"
        else:
            text += ", 0 dropped"
        return text


@dataclass
class PreparedData:
    dataset: object  # datasets.Dataset with columns input_ids, labels
    report: DataReport
    examples: list[dict] = field(default_factory=list)  # canonical examples kept, in order


def _same_format(record: dict, where: str, fmt, first: str) -> None:
    """A row in another format than the first row's (e.g. a directory of .jsonl and .csv files written differently)."""
    from tunesmith.data.formats import FORMATS

    if all(key in record for key in fmt.required):
        return
    other = next((f for f in FORMATS.values() if all(key in record for key in f.required)), None)
    if other is not None:
        raise DataError(
            f"this row is in the {other.name} format ({', '.join(other.required)}) but the first row ({first}) is {fmt.name} ({', '.join(fmt.required)}); a dataset holds one format",
            where=where,
            hint="convert the rows (or files) to one format, or train on them as separate datasets",
        )


def prepare_dataset(
    source,
    tokenizer,
    *,
    format: str = "auto",
    max_length: int | None = 1024,
    truncation: str = "truncate",
    train_on_prompt: bool = False,
    name: str | None = None,
) -> PreparedData:
    """Read, validate, convert, template and tokenize a dataset exactly as training will see it."""
    import datasets

    from tunesmith.data.formats import detect_format, get_format
    from tunesmith.data.readers import read_rows

    if truncation not in ("truncate", "drop"):
        raise DataError(f"data.truncation is '{truncation}'; expected truncate or drop")
    rows = read_rows(source) if isinstance(source, str) else list(source)
    label = name or (source if isinstance(source, str) else "data")
    if not rows:
        raise DataError("no examples: the dataset is empty", where=label)
    fmt = detect_format(rows) if format == "auto" else get_format(format)
    report = DataReport(source=label, format=fmt.name, num_rows=len(rows))
    ids_col, labels_col, kept = [], [], []
    for where, record in rows:
        if format == "auto":
            _same_format(record, where, fmt, rows[0][0])
        example = fmt.convert(record, where)
        tokens = tokenize_example(example, tokenizer, train_on_prompt=train_on_prompt, where=where)
        ids, labels = tokens["input_ids"], tokens["labels"]
        if max_length and len(ids) > max_length:
            if truncation == "drop":
                report.num_dropped_too_long += 1
                continue
            report.num_truncated += 1
            ids, labels = ids[:max_length], labels[:max_length]
        if all(label == IGNORE for label in labels):
            report.num_dropped_no_target += 1
            continue
        ids_col.append(ids)
        labels_col.append(labels)
        kept.append(example)
    if not kept:
        why = "all were longer than max_length" if report.num_dropped_too_long else "none had tokens to learn after templating/truncation"
        raise DataError(f"no examples left of {len(rows)}: {why}", where=label, hint="raise data.max_length, or check the completion/assistant fields")
    lengths = [len(x) for x in ids_col]
    report.num_examples = len(kept)
    report.num_tokens = sum(lengths)
    report.num_trained_tokens = sum(sum(1 for t in lab if t != IGNORE) for lab in labels_col)
    report.max_tokens = max(lengths)
    report.mean_tokens = report.num_tokens / len(lengths)
    dataset = datasets.Dataset.from_dict({"input_ids": ids_col, "labels": labels_col})
    return PreparedData(dataset, report, kept)
