"""Loss masks token by token: assistant text and the end-of-turn token are trained, nothing else."""

import copy

import pytest

from tunesmith.data import prepare_dataset, tokenize_example

CHAT = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Ahoy, matey!"},
    {"role": "user", "content": "Capital of Spain?"},
    {"role": "assistant", "content": "Madrid, arr."},
]

LLAMA2_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)


def trained_pieces(tokenizer, tokens):
    """Decode each maximal run of trained tokens."""
    runs, current = [], []
    for tok, lab in zip(tokens["input_ids"], tokens["labels"]):
        if lab != -100:
            assert lab == tok
            current.append(tok)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_chatml_trains_assistant_and_im_end(smol_tokenizer):
    tokens = tokenize_example({"messages": CHAT}, smol_tokenizer)
    assert trained_pieces(smol_tokenizer, tokens) == ["Ahoy, matey!<|im_end|>\n", "Madrid, arr.<|im_end|>\n"]
    # <|im_end|> is also the pad token: it is trained at the end of each assistant turn, masked elsewhere
    im_end = smol_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end == smol_tokenizer.pad_token_id
    trained_ends = [lab for tok, lab in zip(tokens["input_ids"], tokens["labels"]) if tok == im_end and lab != -100]
    all_ends = [tok for tok in tokens["input_ids"] if tok == im_end]
    assert len(trained_ends) == 2 and len(all_ends) == 5  # system, 2 user (masked) + 2 assistant (trained)
    text = smol_tokenizer.decode(tokens["input_ids"])
    assert text == smol_tokenizer.apply_chat_template(CHAT, tokenize=False)


def test_llama2_inst_template(smol_tokenizer):
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = LLAMA2_TEMPLATE
    tokens = tokenize_example({"messages": CHAT}, tok)
    pieces = trained_pieces(tok, tokens)
    # Llama-2 style: bos [INST] user [/INST] answer eos; the eos closing each answer is trained
    assert [p.strip() for p in pieces] == ["Ahoy, matey! <|im_end|>", "Madrid, arr. <|im_end|>"]
    assert "[/INST]" not in "".join(pieces) and "[INST]" not in "".join(pieces)


def test_template_without_eos_gets_a_trained_eos(smol_tokenizer):
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    tokens = tokenize_example({"messages": CHAT[:2]}, tok)
    assert tokens["input_ids"][-1] == tok.eos_token_id or tok.eos_token_id in tokens["input_ids"]
    eos_pos = tokens["input_ids"].index(tok.eos_token_id)
    assert tokens["labels"][eos_pos] == tok.eos_token_id


def test_train_on_prompt_trains_everything(smol_tokenizer):
    tokens = tokenize_example({"messages": CHAT}, smol_tokenizer, train_on_prompt=True)
    assert tokens["labels"] == tokens["input_ids"]


def test_prompt_completion_and_text(smol_tokenizer):
    tokens = tokenize_example({"prompt": "2 + 2 =", "completion": " 4"}, smol_tokenizer)
    assert trained_pieces(smol_tokenizer, tokens) == [" 4<|im_end|>"]
    text = tokenize_example({"text": "Once upon a time"}, smol_tokenizer)
    assert text["labels"] == text["input_ids"] and text["input_ids"][-1] == smol_tokenizer.eos_token_id


def test_truncate_vs_drop_counts(smol_tokenizer, tmp_path):
    import json

    f = tmp_path / "d.jsonl"
    rows = [{"prompt": "q", "completion": "word " * n} for n in (3, 200, 5, 300)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cut = prepare_dataset(str(f), smol_tokenizer, max_length=64)
    assert cut.report.num_truncated == 2 and cut.report.num_examples == 4
    assert max(len(x) for x in cut.dataset["input_ids"]) == 64
    dropped = prepare_dataset(str(f), smol_tokenizer, max_length=64, truncation="drop")
    assert dropped.report.num_dropped_too_long == 2 and dropped.report.num_examples == 2
    assert "2 dropped (2 too long" in dropped.report.summary()


def test_prompt_longer_than_max_length_is_dropped_not_trained_on_nothing(smol_tokenizer, tmp_path):
    import json

    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"prompt": "long " * 100, "completion": "yes"}) + "\n" + json.dumps({"prompt": "q", "completion": "a"}) + "\n")
    data = prepare_dataset(str(f), smol_tokenizer, max_length=16)
    assert data.report.num_dropped_no_target == 1 and data.report.num_examples == 1


def test_builtin_pirate_loads(smol_tokenizer):
    import os

    from tunesmith.data import BUILTIN_DATASETS

    if not os.path.exists(BUILTIN_DATASETS["pirate"]):
        pytest.skip("pirate data not written yet")
    data = prepare_dataset("pirate", smol_tokenizer, max_length=256)
    assert data.report.num_examples == 250 and data.report.num_truncated == 0
    assert data.report.format == "messages"
