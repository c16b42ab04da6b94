"""Modelfile export: Go's text/template renders the TEMPLATE into exactly what the Jinja chat template renders."""

from __future__ import annotations

import copy

import pytest

from tunesmith.errors import ModelError
from tunesmith.export.ollama import go_template_for, modelfile

TRICKY = 'Line one\nline "two" with {{ braces }}, a tab\tand é ✓  '  # newlines, quotes, template delimiters, unicode, trailing spaces


def conversation(turns: int, system: str | None, content: str = "") -> list[dict]:
    """`turns` user messages with assistant replies between them, ending on a user message."""
    messages = [{"role": "system", "content": system}] if system else []
    for i in range(turns):
        if i:
            messages.append({"role": "assistant", "content": f"Answer {i}.{content}"})
        messages.append({"role": "user", "content": f"Question {i + 1}?{content}"})
    return messages


CONVERSATIONS = {
    "1 turn": conversation(1, None),
    "3 turns": conversation(3, None),
    "system, 1 turn": conversation(1, "You are a pirate."),
    "system, 3 turns": conversation(3, "You are a pirate.\nSpeak briefly."),
    "tricky text": conversation(3, "Sys " + TRICKY, " " + TRICKY),
}

# other families, written in the style of their models' chat templates
LLAMA3 = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + "
    "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)
ZEPHYR = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def with_template(tokenizer, template: str):
    other = copy.copy(tokenizer)
    other.chat_template = template
    return other


def jinja(tokenizer, messages: list[dict]) -> str | None:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:  # noqa: BLE001 - the template refuses this conversation (e.g. Mistral: no system role)
        return None


@pytest.mark.parametrize("name", CONVERSATIONS)
def test_smollm2_template_renders_byte_for_byte_in_go(go_render, smol_tokenizer, name):
    template, _ = go_template_for(smol_tokenizer)
    messages = CONVERSATIONS[name]
    assert go_render(template, messages) == smol_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def test_smollm2_default_system_prompt_is_reproduced(go_render, smol_tokenizer):
    template, _ = go_template_for(smol_tokenizer)
    text = go_render(template, conversation(1, None))
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n")
    assert "SmolLM" not in go_render(template, conversation(1, "You are a pirate."))  # a given system prompt replaces it


@pytest.mark.parametrize("family", ["chatml", "llama3", "mistral", "llama2"])
def test_other_families_render_byte_for_byte_in_go(go_render, smol_tokenizer, family):
    tokenizer = with_template(smol_tokenizer, {"chatml": CHATML, "llama3": LLAMA3, "mistral": MISTRAL, "llama2": LLAMA2}[family])
    template, _ = go_template_for(tokenizer)
    compared = 0
    for name, messages in CONVERSATIONS.items():
        expected = jinja(tokenizer, messages)
        if expected is None or (family in ("llama3", "llama2") and name == "tricky text"):  # they strip content; Go templates cannot
            continue
        assert go_render(template, messages) == expected, name
        compared += 1
    assert compared >= 2


def test_stop_tokens_end_the_turn(smol_tokenizer):
    assert go_template_for(smol_tokenizer)[1] == ["<|im_end|>"]  # SmolLM2: eos is the end-of-turn token
    assert go_template_for(with_template(smol_tokenizer, LLAMA3))[1] == ["<|eot_id|>", "<|im_end|>"]  # end of turn, then eos
    assert go_template_for(with_template(smol_tokenizer, MISTRAL))[1] == ["<|im_end|>"]


def test_modelfile_text(smol_tokenizer):
    text = modelfile(smol_tokenizer, "smol-q8_0.gguf", system="Be brief.", parameters={"temperature": 0.2, "num_ctx": 2048})
    lines = text.splitlines()
    assert lines[0] == "FROM ./smol-q8_0.gguf"
    assert text.count('TEMPLATE """') == 1 and f'TEMPLATE """{go_template_for(smol_tokenizer)[0]}"""' in text
    assert 'PARAMETER stop "<|im_end|>"' in lines and "PARAMETER temperature 0.2" in lines and "PARAMETER num_ctx 2048" in lines
    assert lines[-1] == 'SYSTEM """Be brief."""'


def test_a_leading_bos_the_tokenizer_adds_is_left_to_llama_cpp(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = with_template(AutoTokenizer.from_pretrained(tiny_model_dir, add_bos_token=True), LLAMA3)
    assert tokenizer("a")["input_ids"][0] == tokenizer.bos_token_id
    assert go_template_for(tokenizer)[0].startswith("{{ range")  # no BOS text: llama.cpp adds it (add_bos_token)


def test_an_unrecognised_template_says_how_to_pass_one(smol_tokenizer):
    tokenizer = with_template(smol_tokenizer, ZEPHYR)
    with pytest.raises(ModelError) as error:
        modelfile(tokenizer, "m.gguf")
    assert "not recognised" in error.value.message and "template=" in error.value.hint
    by_hand = "{{ range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|im_end|>\n{{ end }}<|assistant|>\n"
    text = modelfile(tokenizer, "m.gguf", template=by_hand)
    assert f'TEMPLATE """{by_hand}"""' in text and 'PARAMETER stop "<|im_end|>"' in text


def test_no_chat_template_is_a_sentence(smol_tokenizer):
    with pytest.raises(ModelError, match="no chat template"):
        go_template_for(with_template(smol_tokenizer, None))
