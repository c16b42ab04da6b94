"""Chat-template quirks, handled once when a tokenizer loads, so every stage and command sees the same rendering.

Gemma 2's template raises on a system message ("System role not supported"); a recipe, a DPO row or
`generate --system` that brings one would fail deep inside a trainer. Such a template is wrapped: a
leading system message is folded into the first user turn (system text, a blank line, the user text),
which is what Gemma 3's own template does. The wrapped template is the one saved with a trained model,
so a run renders at inference exactly what it was trained on. The note is printed once per process.
"""

from __future__ import annotations

import sys

FOLD_MARK = "{#- tunesmith: a system message is folded into the first user turn (the original template takes none) -#}"
FOLD = (
    FOLD_MARK + "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- if messages|length > 1 and messages[1]['role'] == 'user' -%}"
    "{%- set messages = [{'role': 'user', 'content': messages[0]['content'] + '\\n\\n' + messages[1]['content']}] + messages[2:] -%}"
    "{%- else -%}{%- set messages = [{'role': 'user', 'content': messages[0]['content']}] + messages[1:] -%}{%- endif -%}"
    "{%- endif -%}"
)
PROBE_SYSTEM, PROBE_USER = "PROBE-SYSTEM-7", "PROBE-USER-7"
_noted: set[str] = set()


def takes_system(tokenizer) -> bool:
    """Whether the chat template renders a system message (it neither raises nor drops it)."""
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": PROBE_SYSTEM}, {"role": "user", "content": PROBE_USER}], tokenize=False, add_generation_prompt=True
        )
    except Exception:  # jinja2 TemplateError from raise_exception, or anything a template does with an unknown role
        return False
    return PROBE_SYSTEM in text


def fold_system(messages: list[dict]) -> list[dict]:
    """The conversation with a leading system message folded into the first user turn (what FOLD does in Jinja)."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], messages[1:]
    if rest and rest[0]["role"] == "user":
        return [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
    return [{"role": "user", "content": system}, *rest]


def adapt_chat_template(tokenizer, name: str) -> str | None:
    """Wrap a template that refuses system messages with FOLD (in place); returns the note, or None when nothing changed."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or FOLD_MARK in template or takes_system(tokenizer):
        return None
    tokenizer.chat_template = FOLD + template
    if not takes_system(tokenizer):  # the fold did not help (a template that also refuses the folded turn): leave it as it was
        tokenizer.chat_template = template
        return None
    note = f"the chat template of '{name}' takes no system message: a system prompt is folded into the first user turn (system text, a blank line, then the user's)"
    if name not in _noted:
        _noted.add(name)
        print(f"note: {note}", file=sys.stderr)
    return note
