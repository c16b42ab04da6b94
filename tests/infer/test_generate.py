"""Our decode loop on the tiny model: equal to transformers' greedy generate, stops, streams, reproducible."""

import threading

import pytest
import torch

from tunesmith.errors import TunesmithError
from tunesmith.infer import SamplingParams, complete, generate
from tunesmith.infer.generate import Row


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from tunesmith.models import load_model, load_tokenizer

    return load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)


PROMPTS = ["hello there", "a much longer prompt, so that the batch needs left padding for the first one"]


def hf_greedy(model, tok, texts, max_new_tokens):
    """transformers' own greedy decoding, left-padded; each row cut at its first eos."""
    side, tok.padding_side = tok.padding_side, "left"
    try:
        batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tok.padding_side = side
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    rows = []
    for row in out[:, batch["input_ids"].shape[1] :].tolist():
        rows.append(row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row)
    return rows


@pytest.mark.parametrize("chat", [True, False])
def test_greedy_equals_transformers_generate_token_for_token(tiny, chat):
    model, tok = tiny
    ours = complete(model, tok, PROMPTS, chat=chat, max_new_tokens=20)
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) if chat else p for p in PROMPTS]
    assert [c.token_ids for c in ours] == hf_greedy(model, tok, texts, 20)
    assert all(c.finish_reason == ("stop" if c.completion_tokens > len(c.token_ids) else "length") for c in ours)


def test_batching_does_not_change_greedy_output(tiny):
    model, tok = tiny
    together = complete(model, tok, PROMPTS, max_new_tokens=12, batch_size=2)
    alone = complete(model, tok, PROMPTS, max_new_tokens=12, batch_size=1)
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert [c.prompt_tokens for c in together] == [
        len(tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)["input_ids"]) for p in PROMPTS
    ]


def test_finished_rows_leave_the_batch_and_the_rest_is_unchanged(tiny):
    model, tok = tiny
    first = complete(model, tok, PROMPTS, chat=False, max_new_tokens=12)
    assert first[0].token_ids[0] not in first[1].token_ids  # the tiny model repeats a different word per prompt
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [tok.eos_token_id, first[0].token_ids[0]]  # the first row ends at once
    widths = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: widths.append(kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        together = complete(model, tok, PROMPTS, chat=False, max_new_tokens=12, batch_size=2)
        hook.remove()
        alone = complete(model, tok, PROMPTS, chat=False, max_new_tokens=12, batch_size=1)
    finally:
        hook.remove()
        model.generation_config.eos_token_id = saved
    assert [(c.token_ids, c.finish_reason) for c in together] == [(c.token_ids, c.finish_reason) for c in alone]
    assert (together[0].finish_reason, together[0].completion_tokens, together[1].completion_tokens) == ("stop", 1, 12)
    assert widths == [2] + [1] * 11  # after the first reply ended, only the second row was computed


def test_a_repeated_prompt_is_prefilled_once(tiny):
    """RL groups sample several replies to one prompt: the prompt pass runs each distinct prompt once and every row
    continues from its copy of that cache; replies equal those of prompts run one by one."""
    from tunesmith.infer.generate import complete_tokens, encode_prompt

    model, tok = tiny
    a, b = (encode_prompt(tok, p) for p in PROMPTS)
    widths = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: widths.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    greedy = SamplingParams(temperature=0.0)
    try:
        grouped = complete_tokens(model, tok, [a, b, a, a], greedy, max_new_tokens=6, generator=torch.Generator())
    finally:
        hook.remove()
    alone = [complete_tokens(model, tok, [p], greedy, max_new_tokens=6, generator=torch.Generator())[0] for p in (a, b)]
    assert widths[0] == (2, len(b))  # two distinct prompts in the prompt pass, then the four rows decode
    assert widths[1][0] == 4
    assert [c.token_ids for c in grouped] == [alone[0].token_ids, alone[1].token_ids, alone[0].token_ids, alone[0].token_ids]
    params = SamplingParams(temperature=1.0)
    sampled = complete_tokens(model, tok, [a] * 6, params, max_new_tokens=8, generator=torch.Generator().manual_seed(0))
    assert len({tuple(c.token_ids) for c in sampled}) > 1  # each copy samples its own reply


def test_same_seed_same_output(tiny):
    model, tok = tiny
    params = SamplingParams(temperature=1.0, top_k=50)
    a, b, c = (complete(model, tok, PROMPTS, params, seed=s, max_new_tokens=15) for s in (5, 5, 6))
    assert [x.token_ids for x in a] == [x.token_ids for x in b] != [x.token_ids for x in c]
    assert generate(model, tok, PROMPTS, temperature=1.0, top_k=50, seed=5, max_new_tokens=15) == [x.text for x in a]


def test_stops_at_the_models_eos(tiny):
    model, tok = tiny
    first = complete(model, tok, ["hi"], max_new_tokens=3)[0].token_ids[0]
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [first]  # the token greedy picks first now ends the reply
    try:
        result = complete(model, tok, ["hi"], max_new_tokens=3)[0]
    finally:
        model.generation_config.eos_token_id = saved
    assert (result.text, result.token_ids, result.finish_reason, result.completion_tokens) == ("", [], "stop", 1)


def test_length_and_context_limits(tiny):
    model, tok = tiny
    result = complete(model, tok, ["hi"], chat=False, max_new_tokens=4, stop=[])[0]
    assert result.finish_reason == "length" and result.completion_tokens == len(result.token_ids) == 4
    context = model.config.max_position_embeddings  # 512
    near_full = " ".join(["word"] * (context - 3))
    n = len(tok(near_full)["input_ids"])
    capped = complete(model, tok, [near_full], chat=False, max_new_tokens=50)[0]
    assert capped.prompt_tokens == n and capped.completion_tokens <= context - n
    with pytest.raises(TunesmithError, match="prompt 2 has .* tokens; the model's context is 512"):
        complete(model, tok, ["ok", near_full * 2], chat=False)
    with pytest.raises(TunesmithError, match="prompt 1 is empty"):
        complete(model, tok, [""], chat=False)


def test_stop_strings_cut_the_text_and_streaming_adds_up(tiny):
    model, tok = tiny
    params = SamplingParams(temperature=1.0)
    full = complete(model, tok, ["x"], params, seed=3, max_new_tokens=20)[0]
    assert len(full.text) > 6
    stop = full.text[4:6]
    deltas = []
    cut = complete(model, tok, ["x"], params, seed=3, max_new_tokens=20, stop=[stop], on_token=lambda i, d: deltas.append((i, d)))[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.index(stop)].rstrip()
    assert "".join(d for _, d in deltas) == cut.text and {i for i, _ in deltas} <= {0}


def test_streamed_deltas_equal_the_text_per_prompt(tiny):
    model, tok = tiny
    deltas = {0: "", 1: ""}
    results = complete(
        model, tok, PROMPTS, SamplingParams(temperature=0.9), seed=1, max_new_tokens=16, on_token=lambda i, d: deltas.__setitem__(i, deltas[i] + d)
    )
    assert [deltas[0], deltas[1]] == [r.text for r in results]
    assert all(marker not in r.text for r in results for marker in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"))


def test_row_holds_back_half_characters_stop_prefixes_and_special_tokens(smol_tokenizer):
    tok = smol_tokenizer
    text = "你好 🙂 ok ## then ### gone"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    ids.insert(3, tok.convert_tokens_to_ids("<|im_start|>"))
    row, deltas = Row(["###"], strip=True, budget=100), []
    for t in ids:
        deltas.append(row.add(tok, t, eos={tok.eos_token_id}))
        if row.finish:
            break
    assert row.finish == "stop" and row.text == "你好 🙂 ok ## then"
    assert "".join(deltas) == row.text and not any("\ufffd" in d or "#" * 3 in d for d in deltas)


def test_message_lists_system_prompt_and_training_mode(tiny):
    model, tok = tiny
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    as_messages = complete(model, tok, [messages], max_new_tokens=6)[0]
    as_system = complete(model, tok, ["hi"], system="be brief", max_new_tokens=6)[0]
    assert as_messages.token_ids == as_system.token_ids and as_messages.prompt_tokens == as_system.prompt_tokens
    model.train()
    try:
        assert complete(model, tok, ["hi"], system="be brief", max_new_tokens=6)[0].token_ids == as_system.token_ids
        assert model.training  # put back as it was
    finally:
        model.eval()


def test_reentrant_across_threads(tiny):
    model, tok = tiny
    params = SamplingParams(temperature=0.8, top_p=0.9)
    expected = [complete(model, tok, [p], params, seed=i, max_new_tokens=10)[0].token_ids for i, p in enumerate(PROMPTS * 2)]
    got = [None] * len(expected)

    def work(i, p):
        got[i] = complete(model, tok, [p], params, seed=i, max_new_tokens=10)[0].token_ids

    threads = [threading.Thread(target=work, args=(i, p)) for i, p in enumerate(PROMPTS * 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected
    assert torch.is_grad_enabled()
