"""An Ollama Modelfile whose TEMPLATE renders exactly what the tokenizer's chat template renders.

Ollama does not run Jinja: its TEMPLATE is a Go text/template over `.Messages` (each `.Role`,
`.Content`). A template that differs by one newline, or a missing stop token, makes an exported
model ramble. So the chat template is not parsed: it is *rendered* on probe conversations and
matched against a few known families, each written twice: a Python mirror, checked here against
the Jinja output on every probe, and the Go template it stands for (tests run that one through Go's
own text/template, byte for byte). The families: ChatML (Qwen 2/3, SmolLM2; a default system prompt
where the template has one), Llama 3 headers, Gemma turns (`model` for the assistant), Phi-3's
`<|role|>` blocks, and Mistral/Llama 2 `[INST]`.

A template that refuses a system message (Gemma 2) gets one the way tunesmith hands it to such
templates: folded into the first user turn, system + "\n\n" + user (what Gemma 3's template does
itself). The probe is rendered folded, and the Go template folds `.Messages` the same way.

Conventions: every message is closed and the generation prompt appended, as
`apply_chat_template(..., add_generation_prompt=True)` renders a conversation ending in a user turn.
A leading BOS that the tokenizer adds by itself is left out: llama.cpp adds it (add_bos_token).
Ollama turns a Modelfile SYSTEM into a first system message, so it goes through the same logic.
A template that writes a system turn whatever is given (Llama 3.1/3.2: "Cutting Knowledge Date: December 2023",
"Today Date: <the day it renders>", then the system text) keeps that preamble as rendered on the export day: Go's
text/template has no clock, as Ollama's own llama3.2 TEMPLATE has none.
Not mirrored: a template's `| trim` of contents (Llama 3, Gemma; text/template has no trim), and
Qwen3's stripping of `<think>...</think>` from history replies (no string search in text/template):
the Go template renders .Content as given, so a client must send replies without their thinking.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

from tunesmith.errors import ModelError
from tunesmith.models.template import fold_system  # what tunesmith hands a template that refuses a system message

U1, A1, U2, S = "PROBE-USER-1", "PROBE-ASSISTANT-1", "PROBE-USER-2", "PROBE-SYSTEM"
PROBES = [
    [{"role": "user", "content": U1}],
    [{"role": "user", "content": U1}, {"role": "assistant", "content": A1}, {"role": "user", "content": U2}],
    [{"role": "system", "content": S}, {"role": "user", "content": U1}],
    [{"role": "system", "content": S}, {"role": "user", "content": U1}, {"role": "assistant", "content": A1}, {"role": "user", "content": U2}],
]

# block families: a message is PRE + role + MID + content + CLOSE; the generation prompt is PRE + "assistant" + MID
BLOCKS = {
    "chatml": ("<|im_start|>", "\n", "<|im_end|>\n", "<|im_end|>"),  # (pre, mid, close, end-of-turn stop)
    "llama3": ("<|start_header_id|>", "<|end_header_id|>\n\n", "<|eot_id|>", "<|eot_id|>"),
    "gemma": ("<start_of_turn>", "\n", "<end_of_turn>\n", "<end_of_turn>"),
    "phi3": ("<|", "|>\n", "<|end|>\n", "<|end|>"),
}
ROLE_NAMES = {"gemma": {"assistant": "model"}}  # a role the template writes under another name
# Go: $sys and $skip = 0 when the first message is a system one (else $skip = -1); shared by the folding families
GO_SYSTEM = (
    '{{ $sys := "" }}{{ $skip := -1 }}{{ if .Messages }}{{ if eq (index .Messages 0).Role "system" }}'
    "{{ $sys = (index .Messages 0).Content }}{{ $skip = 0 }}{{ end }}{{ end }}"
)
INST_SYSTEM = {"prepend": ("", "\n\n"), "llama2": ("<<SYS>>\n", "\n<</SYS>>\n\n")}  # system text around, before the first user turn


@dataclass(frozen=True)
class Block:
    """ChatML / Llama 3 / Gemma / Phi-3: `start` opens the text (BOS or nothing); `default` is the system prompt used
    when none is given; `fold` puts a system message into the first user turn (never with a default: no template does both);
    `prefix` opens every first system turn, given or not (Llama 3.1/3.2: "Cutting Knowledge Date: ...", then the system text)."""

    style: str
    start: str
    default: str | None
    fold: bool = False
    prefix: str = ""

    def render(self, messages: list[dict]) -> str:
        pre, mid, close, _ = BLOCKS[self.style]
        names = ROLE_NAMES.get(self.style, {})
        out = self.start
        for i, m in enumerate(fold_system(messages) if self.fold else messages):
            if i == 0 and m["role"] != "system" and self.default is not None:
                out += pre + "system" + mid + self.default + close
            lead = self.prefix if i == 0 and m["role"] == "system" else ""
            out += pre + names.get(m["role"], m["role"]) + mid + lead + m["content"] + close
        return out + pre + names.get("assistant", "assistant") + mid

    def go(self, start: str) -> str:
        pre, mid, close, _ = BLOCKS[self.style]
        default = _lit(pre + "system" + mid + self.default + close) if self.default is not None else ""
        fold = '{{ if and (eq $skip 0) (eq $m.Role "user") }}{{ $sys }}' + _lit("\n\n") + "{{ $skip = -1 }}{{ end }}"
        lead = '{{ if and (eq $i 0) (eq $m.Role "system") }}' + _lit(self.prefix) + "{{ end }}" if self.prefix else ""
        turn = (
            ('{{ if and (eq $i 0) (ne $m.Role "system") }}' + default + "{{ end }}" if default else "")
            + _lit(pre)
            + _go_role(ROLE_NAMES.get(self.style, {}))
            + _lit(mid)
            + (fold if self.fold else "")
            + lead
            + "{{ $m.Content }}"
            + _lit(close)
        )
        if self.fold:  # $skip drops the system message at index 0 until the first user turn has taken it (then -1)
            turn = GO_SYSTEM + "{{ range $i, $m := .Messages }}{{ if ne $i $skip }}" + turn + "{{ end }}{{ end }}"
        else:
            turn = "{{ range $i, $m := .Messages }}" + turn + "{{ end }}"
        return _lit(start) + turn + _lit(pre + ROLE_NAMES.get(self.style, {}).get("assistant", "assistant") + mid)


@dataclass(frozen=True)
class Inst:
    """Mistral / Llama 2 `[INST] user [/INST]assistant</s>`; the spacing and system style vary by model, so they are parameters."""

    start: str
    bos_each_turn: str
    open: str
    close: str
    reply_before: str
    reply_end: str
    system: str

    def render(self, messages: list[dict]) -> str:
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else None
        before, after = INST_SYSTEM[self.system]
        out = self.start
        for i, m in enumerate(messages[1:] if system is not None else messages):
            if m["role"] == "user":
                prefix = before + system + after if system is not None and i == 0 else ""
                out += self.bos_each_turn + self.open + prefix + m["content"] + self.close
            elif m["role"] == "assistant":
                out += self.reply_before + m["content"] + self.reply_end
        return out

    def go(self, start: str) -> str:
        before, after = INST_SYSTEM[self.system]
        return (
            _lit(start) + GO_SYSTEM + "{{ range $i, $m := .Messages }}{{ if ne $i $skip }}"
            '{{ if eq $m.Role "user" }}'
            + _lit(self.bos_each_turn + self.open)
            + "{{ if and (eq $skip 0) (eq $i 1) }}"
            + _lit(before)
            + "{{ $sys }}"
            + _lit(after)
            + "{{ end }}"
            + "{{ $m.Content }}"
            + _lit(self.close)
            + '{{ else if eq $m.Role "assistant" }}'
            + _lit(self.reply_before)
            + "{{ $m.Content }}"
            + _lit(self.reply_end)
            + "{{ end }}{{ end }}{{ end }}"
        )


def _lit(text: str) -> str:
    """`text` as literal Go template text; as a quoted string action if it holds template delimiters."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if "{{" in text or "}}" in text else text


def _go_role(names: dict[str, str]) -> str:
    """Go for the role as the template writes it: `.Role`, or a renamed role (Gemma's assistant is `model`)."""
    out = "{{ $m.Role }}"
    for role, name in names.items():
        out = "{{ if eq $m.Role " + json.dumps(role) + " }}" + _lit(name) + "{{ else }}" + out + "{{ end }}"
    return out


def _render(tokenizer, messages: list[dict]) -> str | None:
    """The tokenizer's own rendering, or None where its template refuses the conversation (raise_exception)."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - jinja's TemplateError and whatever a template raises
        return None


def _expected(tokenizer, messages: list[dict]) -> str | None:
    """What the Go template must render for `messages`: the template's rendering, or where it refuses a system
    message, its rendering of the folded conversation; None where it refuses even that (the probe is not checked)."""
    text = _render(tokenizer, messages)
    return text if text is not None or messages[0]["role"] != "system" else _render(tokenizer, fold_system(messages))


def _candidates(tokenizer, first: str):
    """Family instances worth checking, given the rendering of a one-user-message conversation."""
    bos, eos = tokenizer.bos_token or "", tokenizer.eos_token or ""
    for style, (pre, mid, close, _) in BLOCKS.items():
        for start in dict.fromkeys(["", bos]):
            head = start + pre + "system" + mid
            default = first[len(head) : first.index(close, len(head))] if first.startswith(head) and close in first[len(head) :] else None
            yield from (Block(style, start, d) for d in dict.fromkeys([None, default]))
            yield Block(style, start, None, fold=True)
            if default:  # a preamble every system turn opens with (Llama 3.1/3.2's knowledge and today's date)
                yield Block(style, start, default, prefix=default)
    for each, opn, cls, before, end, system in itertools.product(
        (False, True), ("[INST] ", "[INST]", " [INST] "), (" [/INST]", "[/INST]"), (" ", ""), (eos, " " + eos), INST_SYSTEM
    ):
        yield Inst("" if each else bos, bos if each else "", opn, cls, before, end, system)


def _stops(family, tokenizer) -> list[str]:
    """The family's end-of-turn token, then eos where it differs (Phi-3 ends a turn with <|end|>, its eos is <|endoftext|>)."""
    turn_end = BLOCKS[family.style][3] if isinstance(family, Block) else None
    return [s for s in dict.fromkeys([turn_end, tokenizer.eos_token]) if s]


def go_template_for(tokenizer) -> tuple[str, list[str]]:
    """(Go template, stop strings) equivalent to `tokenizer`'s chat template; ModelError if no family fits it."""
    from tunesmith.export.gguf import adds_bos_eos

    hint = "pass modelfile(..., template=...) with a Go template over .Messages (.Role, .Content), and stops=[...]"
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError("the tokenizer has no chat template, so there is nothing to write as the Modelfile TEMPLATE", hint=hint)
    rendered = [_expected(tokenizer, probe) for probe in PROBES]
    if rendered[0] is None:
        raise ModelError("the chat template fails on a one-message conversation, so its family cannot be recognised", hint=hint)
    for family in _candidates(tokenizer, rendered[0]):
        if all(text is None or family.render(probe) == text for probe, text in zip(PROBES, rendered)):
            start = "" if family.start and adds_bos_eos(tokenizer)[0] else family.start  # llama.cpp adds that BOS itself
            return family.go(start), _stops(family, tokenizer)
    raise ModelError(
        "the chat template's family is not recognised (known: ChatML, Llama 3 headers, Gemma turns, Phi-3 blocks, Mistral/Llama 2 [INST])", hint=hint
    )


def modelfile(
    tokenizer, gguf_filename: str, *, system: str | None = None, parameters: dict | None = None, template: str | None = None, stops: list[str] | None = None
) -> str:
    """The text of an Ollama Modelfile: FROM ./<gguf>, TEMPLATE, PARAMETER stop ..., optional SYSTEM and PARAMETERs.

    `template` (a Go template) overrides the derived one, for chat templates no family fits; its
    `stops` default to the tokenizer's eos. `parameters` maps Ollama parameter names to a value or a list.
    """
    if template is None:
        template, derived = go_template_for(tokenizer)
        stops = stops or derived
    stops = stops or [tokenizer.eos_token]
    if '"""' in template or (system and '"""' in system):
        raise ModelError('the TEMPLATE or SYSTEM text contains """, which a Modelfile cannot quote', hint="remove it from the text")
    lines = [f"FROM ./{gguf_filename}", "", f'TEMPLATE """{template}"""', ""]
    lines += [f"PARAMETER stop {json.dumps(s, ensure_ascii=False)}" for s in stops]
    for key, value in (parameters or {}).items():
        lines += [
            f"PARAMETER {key} {json.dumps(v, ensure_ascii=False) if isinstance(v, str) else v}"
            for v in (value if isinstance(value, (list, tuple)) else [value])
        ]
    if system:
        lines += ["", f'SYSTEM """{system}"""']
    return "\n".join(lines) + "\n"
