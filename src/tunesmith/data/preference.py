"""Preference, unpaired and prompt-only data: validated rows in the shapes TRL's trainers take.

SFT data is tokenized by us (tokenize.py) because we decide the loss mask. The other
stages hand TRL untokenized rows and let it apply the chat template, so here we only
validate, canonicalize and count tokens for the report. Canonical rows are TRL's
documented dataset formats, one form ("conversational" or "standard") per dataset:

    preference  {"prompt": [messages ending in a user turn], "chosen": [assistant], "rejected": [assistant]}
                {"prompt": str, "chosen": str, "rejected": str}
    unpaired    {"prompt": ..., "completion": [assistant] | str, "label": bool}
    prompt      {"prompt": str | [messages]} plus any extra columns, kept for reward functions

Conversations with no prompt column ("implicit prompt") are split into the shared
prefix and the differing last assistant turns, so every row reaches TRL explicit.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field

from tunesmith.data.formats import check_messages
from tunesmith.errors import DataError

KINDS = ("sft", "preference", "unpaired", "prompt")
STAGE_KINDS = {
    "sft": "sft",
    "reward": "preference",
    "dpo": "preference",
    "orpo": "preference",
    "cpo": "preference",
    "kto": "unpaired",
    "grpo": "prompt",
    "rloo": "prompt",
    "ppo": "prompt",
}

REQUIRED = {"preference": ("prompt", "chosen", "rejected"), "unpaired": ("prompt", "completion", "label"), "prompt": ("prompt",)}
SFT_KEYS = ("messages", "conversations", "instruction", "text")
NEEDS = {
    "sft": "conversations or prompt/completion pairs: messages, or prompt and completion",
    "preference": "preference pairs: prompt, chosen, rejected",
    "unpaired": "unpaired examples: prompt, completion, label",
    "prompt": "prompts: a prompt column (other columns are kept for reward functions)",
}
LOOKS_LIKE = {"sft": "SFT data", "preference": "preference pairs", "unpaired": "unpaired (KTO) data", "prompt": "prompt-only data"}
BUILTIN = {"sft": "pirate", "preference": "pirate-pairs", "unpaired": "pirate-kto"}
MESSAGE_HINT = "each message needs a role (system, user or assistant) and string content"


def detect_kind(record: dict) -> str | None:
    """The kind of data a record holds, by its keys; None when nothing fits."""
    if "chosen" in record and "rejected" in record:
        return "preference"
    if "completion" in record and "label" in record:
        return "unpaired"
    if any(key in record for key in SFT_KEYS) or ("prompt" in record and "completion" in record):
        return "sft"
    if "prompt" in record:
        return "prompt"
    return None


def _kind_keys(record: dict, kind: str) -> str:
    """The keys that gave the kind away, for 'this looks like SFT data (messages)'."""
    keys = {
        "sft": (*SFT_KEYS, "prompt", "completion"),
        "preference": ("prompt", "chosen", "rejected"),
        "unpaired": ("prompt", "completion", "label"),
        "prompt": ("prompt",),
    }[kind]
    return ", ".join(k for k in keys if k in record)


def _partly(record: dict, kind: str) -> bool:
    """A row that is clearly meant as `kind` but lacks a column: better told 'column x is missing'."""
    if kind == "preference":
        return "chosen" in record or "rejected" in record
    if kind == "unpaired":
        return ("label" in record or "completion" in record) and not any(k in record for k in SFT_KEYS)
    return False


def _wrong_kind_hint(found: str, need: str) -> str:
    if need == "sft":
        train = {"preference": "stage dpo (or orpo, reward)", "unpaired": "stage kto", "prompt": "stage grpo"}[found]
        return f"train this data with {train}; for sft use conversations like the built-in dataset 'pirate'"
    if need == "prompt":
        if found == "sft":
            return "rename the completion column (e.g. to 'answer') to keep it for reward functions, or keep only the prompt column"
        return "keep the prompt column (and any columns your reward functions need) and drop the answers"
    if need == "unpaired":
        return "see the built-in dataset 'pirate-kto' for the shape; preference pairs (prompt, chosen, rejected) are accepted too"
    if found == "unpaired":
        return "train unpaired data with stage kto, or see the built-in dataset 'pirate-pairs' for the pair shape"
    return f"see the built-in dataset '{BUILTIN[need]}' for the shape"


def check_kind(rows: list[tuple[str, dict]], stage: str) -> str:
    """The kind of data `stage` trains on, judged on the first row; a sentence if it is the wrong kind.

    Returns the kind of the rows as given: "preference" for stage kto means pairs to unpair.
    """
    if stage not in STAGE_KINDS:
        close = difflib.get_close_matches(stage, list(STAGE_KINDS), n=1)
        raise DataError(f"unknown training stage '{stage}'", hint=f"did you mean '{close[0]}'?" if close else f"known stages: {', '.join(STAGE_KINDS)}")
    need = STAGE_KINDS[stage]
    where, record = rows[0]
    found = detect_kind(record)
    if found == need or _partly(record, need):
        return need
    if stage == "kto" and found == "preference":
        return "preference"
    if need == "prompt" and found in ("preference", "unpaired"):
        return found  # their prompts, each once (the answers are dropped)
    if found is None:
        columns = "messages (a list of {role, content}), or prompt and completion" if need == "sft" else ", ".join(REQUIRED[need])
        raise DataError(
            f"cannot tell the kind of data from the fields {sorted(record)}; {stage} needs {NEEDS[need]}", where=where, hint=f"rename the columns to {columns}"
        )
    message = f"this looks like {LOOKS_LIKE[found]} ({_kind_keys(record, found)}); {stage} needs {NEEDS[need]}"
    if found == "unpaired" and need == "preference":
        message += "; kto takes unpaired data"
    raise DataError(message, where=where, hint=_wrong_kind_hint(found, need))


# --- one row -------------------------------------------------------------------------


def _missing(key: str, kind: str, where: str, hint: str | None = None):
    raise DataError(
        f"column '{key}' is missing; {kind} data needs {', '.join(REQUIRED[kind])}",
        where=where,
        hint=hint or f"add the '{key}' column" + (f"; the built-in dataset '{BUILTIN[kind]}' shows the shape" if kind in BUILTIN else ""),
    )


def _value(record: dict, key: str, kind: str, where: str):
    if record.get(key) is None:
        _missing(
            key,
            kind,
            where,
            "only conversations can leave the prompt out (it is split off chosen and rejected); add a prompt column"
            if key == "prompt" and kind == "preference"
            else None,
        )
    return record[key]


def _string(value, key: str, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(
            f"column '{key}' is a {type(value).__name__}; expected a string or a list of messages",
            where=where,
            hint="write it as text, or as a list of {role, content} messages",
        )
    if not value.strip():
        raise DataError(f"column '{key}' is empty", where=where, hint="remove the row or fill in the column")
    return value


def _messages(value, where: str, key: str, require_assistant: bool) -> list[dict]:
    """formats.check_messages, with a hint: its sentences name the field, ours say what to do."""
    try:
        return check_messages(value, where, key, require_assistant=require_assistant)
    except DataError as exc:
        raise DataError(
            exc.message, where=exc.where, hint=exc.hint or ("remove the row or fill in the message" if "empty" in exc.message else MESSAGE_HINT)
        ) from None


def _prompt_messages(value, where: str) -> list[dict]:
    """A conversational prompt: messages ending in the user turn to answer (a string becomes that turn)."""
    if isinstance(value, str):
        return [{"role": "user", "content": _string(value, "prompt", where)}]
    messages = _messages(value, where, "prompt", require_assistant=False)
    if messages[-1]["role"] != "user":
        raise DataError(
            f"prompt ends with a {messages[-1]['role']} message; a prompt must end with the user turn to answer",
            where=where,
            hint="move the answer into chosen/rejected/completion",
        )
    if not messages[-1]["content"].strip():
        raise DataError("prompt is empty: its last user message has no text", where=where, hint="remove the row or fill in the question")
    return messages


def _responses(value, where: str, key: str) -> list[dict]:
    """A conversational answer: assistant messages only, since the prompt holds the rest."""
    messages = _messages(value, where, key, require_assistant=True)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            raise DataError(
                f"{key}[{i}].role is '{message['role']}'; with a prompt column, {key} holds only the assistant reply",
                where=where,
                hint="move the earlier turns into prompt, or drop the prompt column so it is split off the shared conversation",
            )
    return messages


def _split_prompt(chosen, rejected, where: str) -> tuple[list[dict], list[dict], list[dict]]:
    """Implicit prompt: two whole conversations -> (shared prefix, last chosen turn, last rejected turn)."""
    chosen, rejected = _messages(chosen, where, "chosen", True), _messages(rejected, where, "rejected", True)
    for key, conversation in (("chosen", chosen), ("rejected", rejected)):
        if conversation[-1]["role"] != "assistant":
            raise DataError(
                f"{key} ends with a {conversation[-1]['role']} message; it must end with the assistant answer being compared",
                where=where,
                hint="end chosen and rejected with the two assistant answers to compare",
            )
    prompt, other = chosen[:-1], rejected[:-1]
    if prompt != other:
        first = next((i for i, (a, b) in enumerate(zip(prompt, other)) if a != b), min(len(prompt), len(other)))
        raise DataError(
            f"chosen and rejected conversations have different prompts (first difference at message {first})",
            where=where,
            hint="with no prompt column, chosen and rejected must be the same conversation up to their last assistant turn",
        )
    if not prompt:
        raise DataError(
            "chosen and rejected have no prompt: with no prompt column, the conversations must start with the user turn they answer",
            where=where,
            hint="add a prompt column, or put the user turn first in chosen and rejected",
        )
    return _prompt_messages(prompt, where), [chosen[-1]], [rejected[-1]]


def _form(value) -> str:
    return "conversational" if isinstance(value, list) else "standard"


def _mixed_in_row(where: str, answers: str):
    raise DataError(
        f"prompt is a list of messages but {answers} strings; use messages or strings for all of them",
        where=where,
        hint="write the prompt as a string, or the answers as lists of {role, content} messages",
    )


def _preference_row(record: dict, where: str) -> tuple[dict, bool]:
    """One pair as {prompt, chosen, rejected}, and whether its prompt was implicit."""
    chosen, rejected = _value(record, "chosen", "preference", where), _value(record, "rejected", "preference", where)
    if isinstance(chosen, list) != isinstance(rejected, list):
        raise DataError(
            f"chosen is {'a list of messages' if isinstance(chosen, list) else 'a string'} but rejected is not",
            where=where,
            hint="write chosen and rejected the same way: both strings or both lists of messages",
        )
    implicit = isinstance(chosen, list) and record.get("prompt") is None
    if implicit:
        prompt, chosen, rejected = _split_prompt(chosen, rejected, where)
    elif isinstance(chosen, list):
        prompt = _prompt_messages(_value(record, "prompt", "preference", where), where)
        chosen, rejected = _responses(chosen, where, "chosen"), _responses(rejected, where, "rejected")
    else:
        prompt = _value(record, "prompt", "preference", where)
        if isinstance(prompt, list):
            _mixed_in_row(where, "chosen and rejected are")
        prompt, chosen, rejected = _string(prompt, "prompt", where), _string(chosen, "chosen", where), _string(rejected, "rejected", where)
    if chosen == rejected:
        raise DataError(
            "chosen and rejected are identical, so there is no preference to learn", where=where, hint="remove the row or give it a worse rejected answer"
        )
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}, implicit


def _label(record: dict, where: str) -> bool:
    """JSON true/false, or the strings "true"/"false" in any case (CSV has no booleans)."""
    value = _value(record, "label", "unpaired", where)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise DataError(
        f"label is {value!r}; expected true or false", where=where, hint="label says whether the completion is desirable (true) or undesirable (false)"
    )


def _unpaired_row(record: dict, where: str) -> dict:
    prompt, completion = _value(record, "prompt", "unpaired", where), _value(record, "completion", "unpaired", where)
    if isinstance(completion, list):
        prompt, completion = _prompt_messages(prompt, where), _responses(completion, where, "completion")
    else:
        if isinstance(prompt, list):
            _mixed_in_row(where, "completion is a")
        prompt, completion = _string(prompt, "prompt", where), _string(completion, "completion", where)
    return {"prompt": prompt, "completion": completion, "label": _label(record, where)}


def _prompt_row(record: dict, where: str) -> dict:
    prompt = _value(record, "prompt", "prompt", where)
    prompt = _prompt_messages(prompt, where) if isinstance(prompt, list) else _string(prompt, "prompt", where)
    return {"prompt": prompt, **{k: v for k, v in record.items() if k != "prompt"}}


def _unpair(pair: dict) -> list[dict]:
    """A pair as two unpaired rows, as TRL's unpair_preference_dataset does: chosen True, rejected False."""
    return [
        {"prompt": copy.deepcopy(pair["prompt"]), "completion": pair["chosen"], "label": True},
        {"prompt": copy.deepcopy(pair["prompt"]), "completion": pair["rejected"], "label": False},
    ]


# --- the dataset ---------------------------------------------------------------------


@dataclass
class PreferenceReport:
    source: str
    kind: str
    form: str  # "conversational" | "standard"
    num_rows: int = 0
    num_examples: int = 0
    implicit_prompt: int = 0  # rows whose prompt was split off shared chosen/rejected conversations
    unpaired_from_pairs: bool = False
    prompts_from: str = ""  # "preference" | "unpaired": prompt-only rows taken from data of that kind
    num_desirable: int = 0  # unpaired only
    num_undesirable: int = 0
    max_tokens: int = 0  # prompt + longest response, as the chat template renders it
    max_shared_tokens: int = 0  # pairs: prompt + chosen + rejected, the row they make when the prompt runs once (train/prefix.py)
    mean_shared_tokens: float = 0.0
    mean_tokens: float = 0.0
    num_over_max_length: int = 0
    max_length: int | None = None
    stage: str = ""  # TRL's reward trainer drops over-long pairs; the others truncate them

    def summary(self) -> str:
        noun = {"preference": "preference pairs", "unpaired": "unpaired examples", "prompt": "prompts"}[self.kind]
        text = f"{self.source}: {self.num_examples:,} {noun} ({self.form})"
        if self.kind == "unpaired":
            text += f", {self.num_desirable:,} desirable / {self.num_undesirable:,} undesirable"
            if self.unpaired_from_pairs:
                text += f", unpaired from {self.num_rows:,} preference pairs"
        if self.prompts_from:
            text += f", the distinct prompts of {self.num_rows:,} {'preference pairs' if self.prompts_from == 'preference' else 'unpaired examples'} (answers dropped)"
        if self.implicit_prompt:
            text += f", {self.implicit_prompt:,} implicit prompts split off"
        text += f"; longest {self.max_tokens} tokens, mean {self.mean_tokens:.0f}"
        if self.max_length:
            text += f"; {self.num_over_max_length} over max_length {self.max_length}" + (
                (" (dropped, as TRL's reward trainer does)" if self.stage == "reward" else " (TRL truncates them)") if self.num_over_max_length else ""
            )
        return text


@dataclass
class PreferenceData:
    dataset: object  # datasets.Dataset in the shape TRL's trainer for this kind takes
    report: PreferenceReport
    examples: list[dict] = field(default_factory=list)  # the canonical rows, in order


def template_ids(tokenizer, conversation_or_text, generation_prompt: bool = False) -> list[int]:
    """Token ids of a conversation (chat template) or a plain string, as TRL's trainers tokenise a row."""
    if isinstance(conversation_or_text, list):
        out = tokenizer.apply_chat_template(conversation_or_text, tokenize=True, return_dict=True, add_generation_prompt=generation_prompt)
        return list(out["input_ids"])
    return list(tokenizer(conversation_or_text)["input_ids"])


def _num_tokens(tokenizer, prompt, response=None) -> int:
    """Tokens of prompt + response as TRL will see them (the prompt alone ends in the generation prompt)."""
    if response is None:
        return len(template_ids(tokenizer, prompt, generation_prompt=isinstance(prompt, list)))
    return len(template_ids(tokenizer, prompt + response))


def _length(tokenizer, example: dict, kind: str) -> int:
    """Prompt plus its response (the prompt alone for prompt-only rows); pairs: `_pair_lengths`."""
    if kind == "prompt":
        return _num_tokens(tokenizer, example["prompt"])
    return _num_tokens(tokenizer, example["prompt"], example["completion"])


def _pair_lengths(tokenizer, example: dict, max_length: int | None, shared: bool) -> tuple[int, int]:
    """A pair's prompt plus its longer answer, and (with `shared`; else 0) the row the pair makes with its prompt once
    (train/prefix.py): TRL's two sequences, each cut at max_length, less the prompt they share, TRL's prompt being
    the common prefix of the templated prompt and each templated conversation. Each conversation is templated once."""
    from trl.data_utils import common_prefix_length

    chosen, rejected = (template_ids(tokenizer, example["prompt"] + example[answer]) for answer in ("chosen", "rejected"))
    longest = max(len(chosen), len(rejected))
    if not shared:
        return longest, 0
    prompt = template_ids(tokenizer, example["prompt"], generation_prompt=isinstance(example["prompt"], list))
    common = min(common_prefix_length(prompt, chosen), common_prefix_length(prompt, rejected))
    limit = max_length or len(chosen) + len(rejected)
    return longest, min(len(chosen), limit) + min(len(rejected), limit) - min(common, limit)


def _check_columns(columns: list[str], record: dict, where: str):
    """Prompt-only rows keep their extra columns, so every row must have the same ones."""
    if set(record) != set(columns):
        missing, extra = [c for c in columns if c not in record], [c for c in record if c not in columns]
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"extra {', '.join(extra)}"] if extra else [])
        raise DataError(
            f"the columns differ from the first row's ({'; '.join(parts)})",
            where=where,
            hint="give every row the same columns; reward functions receive them by name",
        )


def _canonical_rows(rows, kind: str, report: PreferenceReport) -> list[dict]:
    """Validate and convert every row, holding the whole dataset to the first row's form."""
    examples, first_form, columns = [], None, list(rows[0][1])
    for where, record in rows:
        if kind == "preference":
            example, implicit = _preference_row(record, where)
            report.implicit_prompt += implicit
            form = _form(example["chosen"])
        elif kind == "unpaired":
            example = _unpaired_row(record, where)
            form = _form(example["completion"])
        else:
            _check_columns(columns, record, where)
            example = _prompt_row(record, where)
            form = _form(example["prompt"])
        if first_form is None:
            first_form = form
        elif form != first_form:
            shape = {"conversational": "lists of messages", "standard": "strings"}
            raise DataError(
                f"this row is {form} ({shape[form]}) but the rows before it are {first_form} ({shape[first_form]}); use one form in a dataset",
                where=where,
                hint="write every row with lists of {role, content} messages, or every row with plain strings",
            )
        examples.append(example)
    report.form = first_form
    return examples


def prepare_preference_data(source, tokenizer, *, stage: str, max_length: int | None = None, name: str | None = None) -> PreferenceData:
    """Read and validate a dataset for a preference / unpaired / prompt stage, in the rows TRL takes.

    source: a dataset spec (built-in name, file, directory; see readers.read_rows) or a list
    of (where, record) pairs. No chat template is applied: TRL does that itself.
    """
    import datasets

    from tunesmith.data.readers import read_rows

    rows = read_rows(source) if isinstance(source, str) else list(source)
    label = name or (source if isinstance(source, str) else "data")
    if not rows:
        raise DataError("no examples: the dataset is empty", where=label, hint="check the file has rows")
    given = check_kind(rows, stage)
    if given == "sft":
        raise ValueError("stage sft is prepared by tunesmith.data.prepare_dataset, not prepare_preference_data")
    kind = STAGE_KINDS[stage]
    report = PreferenceReport(source=label, kind=kind, form="", num_rows=len(rows), max_length=max_length, stage=stage)
    examples = _canonical_rows(rows, given, report)
    if given != kind and kind == "prompt":  # pairs or unpaired answers for an RL stage: their prompts, once each
        unique = {json.dumps(e["prompt"], sort_keys=True): e["prompt"] for e in examples}
        examples = [{"prompt": p} for p in unique.values()]
        report.prompts_from = given
    elif given != kind:  # pairs for kto
        examples = [row for pair in examples for row in _unpair(pair)]
        report.unpaired_from_pairs = True
    if kind == "unpaired":
        report.num_desirable = sum(1 for e in examples if e["label"])
        report.num_undesirable = len(examples) - report.num_desirable
    if kind == "preference":  # the shared row only where the prompt can run once: the reward model scores each sequence alone
        measured = [_pair_lengths(tokenizer, e, max_length, shared=stage != "reward") for e in examples]
        lengths, shared = [n for n, _ in measured], [m for _, m in measured]
        report.max_shared_tokens, report.mean_shared_tokens = max(shared), sum(shared) / len(shared)
    else:
        lengths = [_length(tokenizer, e, kind) for e in examples]
    report.num_examples = len(examples)
    report.max_tokens = max(lengths)
    report.mean_tokens = sum(lengths) / len(lengths)
    report.num_over_max_length = sum(1 for n in lengths if max_length and n > max_length)
    if stage == "reward" and report.num_over_max_length:
        # TRL's RewardTrainer drops these rows; drop them here, so that the counts, the plan and the trainer agree
        examples = [e for e, n in zip(examples, lengths) if n <= max_length]
        if not examples:
            raise DataError(f"every pair is longer than max_length {max_length}", where=label, hint="raise data.max_length")
        report.num_examples = len(examples)
    try:
        dataset = datasets.Dataset.from_list(examples)
    except Exception as exc:  # arrow's many type errors; the user needs one sentence
        raise DataError(
            f"the rows cannot be stored as one table: {str(exc).splitlines()[0]}", where=label, hint="give each column the same type in every row"
        ) from None
    return PreferenceData(dataset, report, examples)
