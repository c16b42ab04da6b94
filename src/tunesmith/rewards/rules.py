"""Built-in rule-based rewards: each one small function, registered by name, checked in the shared test table.

A parameter without default after `*` is a dataset column the reward needs (`answer`); one with a default is
an option the recipe may set (`max_chars`). `**_` takes the columns a reward does not use.
"""

from __future__ import annotations

import math
import re

from tunesmith.errors import DataError
from tunesmith.evaluate.metrics import TEMPLATE_MARKERS, leakage
from tunesmith.rewards import register

# A number as people write it: optional minus (not after a letter/digit: "3-4" is 3 and 4, "x-1" is 1),
# digits with optional thousands separators ("1,234", not "12,34") and an optional decimal part.
# A trailing period ("7.") is punctuation, not a decimal point.
NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")

# ChatML role headers leaked as text: TRL decodes completions with skip_special_tokens=True, so a model that
# runs on into the next turn (`<|im_end|>\n<|im_start|>user\n...`) reaches us as "...\nuser\n...": the
# special-token markers are gone and only the bare role word on its own line is left. Llama 3's
# `<|start_header_id|>user<|end_header_id|>\n\n` decodes the same way. A line that is just "user" is rare in
# a real answer, so the false positives are few.
ROLE_HEADER = re.compile(r"(?:^|\n)(?:system|user|assistant)\n")


def parse_number(text: str) -> float | None:
    """The number `text` is, as a whole ("1,234" -> 1234.0, "-12" -> -12.0); None when it is not one."""
    match = NUMBER.fullmatch(text.strip())
    return float(match.group().replace(",", "")) if match else None


def last_number(text: str) -> float | None:
    """The last number written in `text` ("3 + 4 = 7" -> 7.0), None when there is none."""
    found = NUMBER.findall(text)
    return float(found[-1].replace(",", "")) if found else None


def same_number(a: float, b: float) -> bool:
    """Equal up to float rounding (0.1 + 0.2 == 0.3)."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _reply(text: str) -> str:
    """The reply stripped of surrounding whitespace and one trailing period."""
    text = text.strip()
    return text[:-1].rstrip() if text.endswith(".") else text


@register("exact_answer")
def exact_answer(prompts, completions, *, answer, **_) -> list[float]:
    """1.0 when the reply (whitespace and a trailing period stripped) is the `answer` column, else 0.0.
    Numbers compare by value when both sides are numbers ("7.0" == 7); text compares exactly, case included."""
    out = []
    for reply, expected in zip(completions, answer):
        reply, expected = _reply(reply), str(expected).strip()
        a, b = parse_number(reply), parse_number(expected)
        out.append(float(same_number(a, b) if a is not None and b is not None else reply == expected))
    return out


def _number_answer(value, row: int) -> float:
    number = None if isinstance(value, bool) else float(value) if isinstance(value, (int, float)) else parse_number(str(value)) if value is not None else None
    if number is None:
        raise DataError(
            f"numeric_answer needs a number in the 'answer' column; row {row} has {value!r}",
            hint="write answers as numbers (72, -3.5, 1,234), or use exact_answer for text",
        )
    return number


@register("numeric_answer")
def numeric_answer(prompts, completions, *, answer, **_) -> list[float]:
    """1.0 when the LAST number in the reply equals the `answer` column by value, else 0.0 (also with no number).
    The last, because models show their working ("3 + 4 = 7"): the first number is an operand."""
    out = []
    for row, (reply, expected) in enumerate(zip(completions, answer)):
        got = last_number(reply)
        out.append(float(got is not None and same_number(got, _number_answer(expected, row))))
    return out


def _check_pattern(options: dict) -> None:
    try:
        re.compile(options["pattern"])
    except re.error as exc:
        raise ValueError(f"the pattern {options['pattern']!r} is not a valid regular expression ({exc})") from None


@register("format", check=_check_pattern)
def format_(prompts, completions, *, pattern: str = r"-?\d+", search: bool = False, **_) -> list[float]:
    """1.0 when the stripped reply matches `pattern` as a whole (default: a bare integer), else 0.0.
    With `search: true` the pattern may match anywhere in the reply (re.search)."""
    regex = re.compile(pattern)
    match = regex.search if search else regex.fullmatch
    return [float(match(reply.strip()) is not None) for reply in completions]


def _check_max_chars(options: dict) -> None:
    if options["max_chars"] <= 0:
        raise ValueError(f"max_chars must be a positive number of characters, got {options['max_chars']}")


@register("length_penalty", check=_check_max_chars)
def length_penalty(prompts, completions, *, max_chars: int = 100, **_) -> list[float]:
    """0.0 for replies up to `max_chars` characters, then falling linearly to -1.0 at 2 * max_chars, and -1.0
    beyond: -(len - max_chars) / max_chars, clipped to [-1, 0]. With max_chars 100: 150 chars -> -0.5."""
    return [-min(max(len(reply) - max_chars, 0) / max_chars, 1.0) for reply in completions]


@register("no_template_leakage")
def no_template_leakage(prompts, completions, **_) -> list[float]:
    """1.0 when the reply holds no chat-template marker (evaluate.metrics.TEMPLATE_MARKERS) and no role
    header on a line of its own (see ROLE_HEADER), else 0.0: a model that writes the next turn itself."""
    return [float(leakage([reply], TEMPLATE_MARKERS)[0] == 0 and not ROLE_HEADER.search(reply)) for reply in completions]
