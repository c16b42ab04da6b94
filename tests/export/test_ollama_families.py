"""The Modelfile of every supported family: Go's text/template renders its TEMPLATE into what the family's Jinja renders.

Each family's tiny model (tests/families.py) carries its model card's chat template and special tokens. A system
message goes to Gemma 2, whose template refuses one, folded into the first user turn, so that is what its
TEMPLATE must render for a conversation with a system message (Ollama makes one of a Modelfile SYSTEM).
"""

from __future__ import annotations

import json
import time

import pytest
from families import FAMILIES
from test_ollama import conversation  # tests/export/test_ollama.py

from tunesmith.export.ollama import modelfile

TEXT = 'Line one\nline "two" with {{ braces }}, a tab\tand é ✓'  # no edge whitespace: Llama 3 and Gemma trim contents


CONVERSATIONS = {
    "1 turn": conversation(1, None),
    "3 turns": conversation(3, None),
    "system, 1 turn": conversation(1, "You are a pirate."),
    "system, 3 turns": conversation(3, "You are a pirate.\nSpeak briefly."),
    "odd text": conversation(2, "Sys " + TEXT, " " + TEXT),
}
STOPS = {
    "llama": ["<|eot_id|>"],  # its eos is <|eot_id|> too
    "mistral": ["</s>"],
    "qwen2": ["<|im_end|>"],
    "qwen3": ["<|im_end|>"],
    "gemma2": ["<end_of_turn>", "<eos>"],
    "gemma3": ["<end_of_turn>", "<eos>"],
    "phi3": ["<|end|>", "<|endoftext|>"],
}


def jinja(tokenizer, messages: list[dict]) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - the template refuses this conversation (Gemma 2: no system role)
        return None


def folded(messages: list[dict]) -> list[dict]:
    """A leading system message put in front of the first user turn, as tunesmith hands it to Gemma 2."""
    system, first, *rest = messages
    return [{"role": "user", "content": system["content"] + "\n\n" + first["content"]}, *rest]


def template_and_stops(text: str) -> tuple[str, list[str]]:
    """The TEMPLATE and PARAMETER stop values of a Modelfile's text."""
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    return template, [json.loads(line.removeprefix("PARAMETER stop ")) for line in text.splitlines() if line.startswith("PARAMETER stop ")]


@pytest.fixture(scope="module")
def family_tokenizer(family_model):
    from transformers import AutoTokenizer

    loaded: dict = {}

    def get(family: str):
        if family not in loaded:
            loaded[family] = AutoTokenizer.from_pretrained(family_model(family))
        return loaded[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_renders_byte_for_byte_in_go(go_render, family_tokenizer, family):
    tokenizer = family_tokenizer(family)
    template, stops = template_and_stops(modelfile(tokenizer, f"{family}.gguf"))
    assert stops == STOPS[family]
    for name, messages in CONVERSATIONS.items():
        expected = jinja(tokenizer, messages)
        if expected is None:  # only Gemma 2 refuses a system message; its TEMPLATE folds it like tunesmith does
            assert family == "gemma2" and messages[0]["role"] == "system", name
            expected = jinja(tokenizer, folded(messages))
        assert go_render(template, messages) == expected, name


def test_what_the_families_render(go_render, family_tokenizer):
    """The shapes by eye, for a system prompt and one question."""
    messages = conversation(1, "Sys.")
    rendered = {f: go_render(template_and_stops(modelfile(family_tokenizer(f), "m.gguf"))[0], messages) for f in FAMILIES}
    today = time.strftime("%d %b %Y")  # Llama 3.2's template dates its system turn; the Modelfile keeps the export day's
    assert rendered["llama"] == (
        f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: {today}\n\nSys.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nQuestion 1?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert rendered["mistral"] == "<s> [INST] Sys.\n\nQuestion 1? [/INST]"
    assert rendered["qwen2"] == rendered["qwen3"] == "<|im_start|>system\nSys.<|im_end|>\n<|im_start|>user\nQuestion 1?<|im_end|>\n<|im_start|>assistant\n"
    assert rendered["gemma2"] == rendered["gemma3"] == "<bos><start_of_turn>user\nSys.\n\nQuestion 1?<end_of_turn>\n<start_of_turn>model\n"
    assert rendered["phi3"] == "<|system|>\nSys.<|end|>\n<|user|>\nQuestion 1?<|end|>\n<|assistant|>\n"
    qwen2_default = go_render(template_and_stops(modelfile(family_tokenizer("qwen2"), "m.gguf"))[0], conversation(1, None))
    assert qwen2_default.startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n")


def test_qwen3_history_replies_go_without_their_thinking(go_render, family_tokenizer):
    """Qwen3's template strips `<think>...</think>` from earlier replies; text/template cannot search a string, so the
    TEMPLATE renders .Content as given: a reply sent back without its thinking renders as the Jinja one with it."""
    tokenizer = family_tokenizer("qwen3")
    template, _ = template_and_stops(modelfile(tokenizer, "m.gguf"))
    thought = conversation(2, "Sys.")
    thought[2] = {"role": "assistant", "content": "<think>\nLet me see.\n</think>\n\nAnswer 1."}
    assert go_render(template, conversation(2, "Sys.")) == jinja(tokenizer, thought)
    assert jinja(tokenizer, conversation(1, None)).endswith("<|im_start|>assistant\n")  # thinking on: no empty think block primed
