"""Data formats: each is one small registry entry that turns a raw record into a canonical example.

Canonical examples are exactly one of:
    {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}   conversational
    {"prompt": str, "completion": str}                                            completion
    {"text": str}                                                                 plain language modelling
A new format is a `Format(...)` and a `register_format` call.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from tunesmith.errors import DataError

ROLES = ("system", "user", "assistant")
MESSAGE_HINT = 'each message is {"role": "system" | "user" | "assistant", "content": "text"}'


@dataclass(frozen=True)
class Format:
    name: str
    required: tuple[str, ...]  # keys whose presence identifies the format
    convert: Callable[[dict, str], dict]
    description: str = ""


FORMATS: dict[str, Format] = {}


def register_format(fmt: Format) -> Format:
    FORMATS[fmt.name] = fmt
    return fmt


def _string(record: dict, key: str, where: str, fmt: str, *, allow_empty: bool = False) -> str:
    if key not in record or record[key] is None:
        raise DataError(
            f"field '{key}' is missing; the {fmt} format needs {', '.join(FORMATS[fmt].required)}",
            where=where,
            hint=f"give every row the field '{key}' (or remove the row)",
        )
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f"field '{key}' is a {type(value).__name__}; expected a string", where=where, hint=f"write '{key}' as text")
    if not allow_empty and not value.strip():
        raise DataError(f"field '{key}' is empty", where=where, hint="remove the row or fill the field")
    return value


def check_messages(messages, where: str, field: str = "messages", require_assistant: bool = True) -> list[dict]:
    """Validate a list of {role, content} messages; at least one assistant turn to learn from unless told."""
    if not isinstance(messages, list) or not messages:
        raise DataError(
            f"{field} is {'empty' if messages == [] else 'a ' + type(messages).__name__}; expected a non-empty list of {{role, content}}",
            where=where,
            hint=f"write {field} as a list of messages; {MESSAGE_HINT}",
        )
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(f"{field}[{i}] is a {type(message).__name__}; expected an object with role and content", where=where, hint=MESSAGE_HINT)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(
                f"{field}[{i}].role is {role!r}; expected system, user or assistant",
                where=where,
                hint=MESSAGE_HINT + " (map other role names, e.g. human -> user, bot -> assistant)",
            )
        if not isinstance(content, str):
            raise DataError(
                f"{field}[{i}].content is {'missing' if content is None else 'a ' + type(content).__name__}; expected a string",
                where=where,
                hint=MESSAGE_HINT + " (content is the message's text, a string)",
            )
        out.append({"role": role, "content": content})
    if require_assistant and not any(m["role"] == "assistant" for m in out):
        raise DataError(
            f"{field} has no assistant message, so there is nothing to learn", where=where, hint="each conversation needs at least one assistant turn"
        )
    if any(m["role"] == "assistant" and not m["content"].strip() for m in out):
        raise DataError(f"{field} has an empty assistant message", where=where, hint="remove the row or fill in the assistant's reply")
    return out


def _text(record, where):
    return {"text": _string(record, "text", where, "text")}


def _prompt_completion(record, where):
    prompt, completion = record.get("prompt"), record.get("completion")
    if isinstance(prompt, list) and isinstance(completion, list):  # conversational prompt/completion
        return {"messages": check_messages(prompt, where, "prompt", require_assistant=False) + check_messages(completion, where, "completion")}
    return {
        "prompt": _string(record, "prompt", where, "prompt_completion", allow_empty=True),
        "completion": _string(record, "completion", where, "prompt_completion"),
    }


def _messages(record, where):
    return {"messages": check_messages(record.get("messages"), where)}


def _alpaca(record, where):
    instruction = _string(record, "instruction", where, "alpaca")
    extra = record.get("input") or ""
    if not isinstance(extra, str):
        raise DataError(f"field 'input' is a {type(extra).__name__}; expected a string", where=where, hint="write 'input' as text, or leave it out")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages = [{"role": "system", "content": record["system"]}] if isinstance(record.get("system"), str) and record["system"].strip() else []
    return {"messages": [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": _string(record, "output", where, "alpaca")}]}


SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def _sharegpt(record, where):
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise DataError(
            "conversations is empty or not a list; expected a list of {from, value}",
            where=where,
            hint='each turn is {"from": "human" | "gpt" | "system", "value": "text"}',
        )
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in SHAREGPT_ROLES:
            found = turn.get("from") if isinstance(turn, dict) else turn
            raise DataError(
                f"conversations[{i}].from is {found!r}; expected system, human or gpt",
                where=where,
                hint='each turn is {"from": "human" | "gpt" | "system", "value": "text"}',
            )
        messages.append({"role": SHAREGPT_ROLES[turn["from"]], "content": turn.get("value")})
    return {"messages": check_messages(messages, where, "conversations")}


# Most specific first: detection takes the first whose keys are all present.
register_format(Format("messages", ("messages",), _messages, "conversational: messages = [{role, content}, ...]"))
register_format(Format("sharegpt", ("conversations",), _sharegpt, "ShareGPT: conversations = [{from: human|gpt|system, value}, ...]"))
register_format(Format("alpaca", ("instruction", "output"), _alpaca, "Alpaca: instruction, optional input, output"))
register_format(Format("prompt_completion", ("prompt", "completion"), _prompt_completion, "prompt and completion (strings, or lists of messages)"))
register_format(Format("text", ("text",), _text, "plain text for continued pretraining"))


def get_format(name: str) -> Format:
    if name not in FORMATS:
        close = difflib.get_close_matches(name, list(FORMATS), n=1)
        raise DataError(f"unknown data format '{name}'", hint=f"did you mean '{close[0]}'?" if close else f"known formats: auto, {', '.join(FORMATS)}")
    return FORMATS[name]


def detect_format(rows: list[tuple[str, dict]]) -> Format:
    """The format of the first row, by its keys (most specific format first)."""
    where, record = rows[0]
    for fmt in FORMATS.values():
        if all(key in record for key in fmt.required):
            return fmt
    accepted = "; ".join(f"{f.name} ({', '.join(f.required)})" for f in FORMATS.values())
    raise DataError(f"cannot tell the data format from the fields {sorted(record)}", where=where, hint=f"accepted: {accepted}; or set data.format")
