"""Preference, unpaired and prompt-only data: each kind, each row error with its location, the built-ins."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.data import read_rows
from tunesmith.data.preference import KINDS, STAGE_KINDS, detect_kind, prepare_preference_data
from tunesmith.errors import DataError

ROOT = Path(__file__).resolve().parents[2]


def user(text):
    return {"role": "user", "content": text}


def bot(text):
    return {"role": "assistant", "content": text}


PAIR = {"prompt": [user("q")], "chosen": [bot("good")], "rejected": [bot("bad")]}
STANDARD = {"prompt": "q", "chosen": "good", "rejected": "bad"}
UNPAIRED = {"prompt": [user("q")], "completion": [bot("good")], "label": True}


def write(tmp_path, rows, name="train.jsonl"):
    f = tmp_path / name
    f.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(f)


def error(tmp_path, rows, stage, tokenizer, name="train.jsonl"):
    """The DataError for `rows`, as text with the tmp dir taken out of the row location."""
    with pytest.raises(DataError) as exc:
        prepare_preference_data(write(tmp_path, rows, name), tokenizer, stage=stage)
    assert exc.value.hint, "every row error says what to do"
    return str(exc.value).replace(str(tmp_path) + "/", "")


def test_stages_map_to_kinds():
    assert set(STAGE_KINDS.values()) <= set(KINDS)


@pytest.mark.parametrize(
    "record,kind",
    [
        (PAIR, "preference"),
        ({"chosen": [user("q"), bot("a")], "rejected": [user("q"), bot("b")]}, "preference"),
        (UNPAIRED, "unpaired"),
        ({"messages": [user("q"), bot("a")]}, "sft"),
        ({"conversations": []}, "sft"),
        ({"instruction": "x", "output": "y"}, "sft"),
        ({"text": "x"}, "sft"),
        ({"prompt": "x", "completion": "y"}, "sft"),
        ({"prompt": "x", "answer": "42"}, "prompt"),
        ({"question": "x"}, None),
    ],
)
def test_detect_kind(record, kind):
    assert detect_kind(record) == kind


# --- the three kinds -----------------------------------------------------------------


def test_preference_conversational_and_standard(smol_tokenizer):
    data = prepare_preference_data([("a.jsonl:1", PAIR)], smol_tokenizer, stage="dpo")
    assert data.examples == [PAIR] and data.dataset[0] == PAIR
    assert (data.report.kind, data.report.form, data.report.num_examples) == ("preference", "conversational", 1)
    data = prepare_preference_data([("a.csv:2", STANDARD)], smol_tokenizer, stage="orpo")
    assert data.examples == [STANDARD] and data.report.form == "standard"


def test_string_prompt_with_message_answers_becomes_a_user_turn(smol_tokenizer):
    data = prepare_preference_data([("a:1", {"prompt": "q", "chosen": [bot("good")], "rejected": [bot("bad")]})], smol_tokenizer, stage="reward")
    assert data.examples[0]["prompt"] == [user("q")]


def test_implicit_prompt_is_split_off(smol_tokenizer):
    head = [{"role": "system", "content": "be brief"}, user("hi"), bot("hello"), user("2+2?")]
    record = {"chosen": [*head, bot("4")], "rejected": [*head, bot("5")]}
    data = prepare_preference_data([("a.jsonl:1", record), ("a.jsonl:2", PAIR)], smol_tokenizer, stage="dpo")
    assert data.examples[0] == {"prompt": head, "chosen": [bot("4")], "rejected": [bot("5")]}
    assert data.report.implicit_prompt == 1
    assert "1 implicit prompts split off" in data.report.summary()


def test_kto_unpairs_preference_pairs(smol_tokenizer):
    rows = [("a:1", PAIR), ("a:2", {"prompt": [user("r")], "chosen": [bot("yes")], "rejected": [bot("no")]})]
    data = prepare_preference_data(rows, smol_tokenizer, stage="kto")
    assert [(e["completion"][0]["content"], e["label"]) for e in data.examples] == [("good", True), ("bad", False), ("yes", True), ("no", False)]
    assert data.dataset.column_names == ["prompt", "completion", "label"]
    report = data.report
    assert (report.kind, report.unpaired_from_pairs, report.num_rows, report.num_examples, report.num_desirable, report.num_undesirable) == (
        "unpaired",
        True,
        2,
        4,
        2,
        2,
    )
    assert "unpaired from 2 preference pairs" in report.summary()


def test_unpaired_rows_and_csv_labels(tmp_path, smol_tokenizer):
    f = tmp_path / "kto.csv"
    f.write_text("prompt,completion,label\nq1,a1,TRUE\nq2,a2,false\nq3,a3, True \n")
    data = prepare_preference_data(str(f), smol_tokenizer, stage="kto")
    assert [e["label"] for e in data.examples] == [True, False, True]
    assert data.examples[0] == {"prompt": "q1", "completion": "a1", "label": True}
    assert (data.report.form, data.report.num_desirable, data.report.num_undesirable, data.report.unpaired_from_pairs) == ("standard", 2, 1, False)


def test_prompt_only_keeps_extra_columns(smol_tokenizer):
    rows = [("a:1", {"prompt": [user("2+2?")], "answer": "4", "level": 1}), ("a:2", {"prompt": [user("3+3?")], "answer": "6", "level": 2})]
    data = prepare_preference_data(rows, smol_tokenizer, stage="grpo")
    assert data.examples == [r for _, r in rows]
    assert data.dataset.column_names == ["prompt", "answer", "level"] and data.dataset[1]["answer"] == "6"
    assert data.report.kind == "prompt" and data.report.summary().startswith("data: 2 prompts (conversational)")


def test_token_counts_follow_the_chat_template(smol_tokenizer):
    long = {"prompt": [user("q")], "chosen": [bot("word " * 40)], "rejected": [bot("no")]}
    data = prepare_preference_data([("a:1", PAIR), ("a:2", long)], smol_tokenizer, stage="dpo", max_length=50, name="mine")
    expected = len(smol_tokenizer.apply_chat_template([user("q"), bot("word " * 40)], tokenize=True)["input_ids"])
    assert data.report.max_tokens == expected > 50
    assert data.report.num_over_max_length == 1
    summary = data.report.summary()
    assert summary.startswith("mine: 2 preference pairs (conversational)") and "1 over max_length 50 (TRL truncates them)" in summary
    standard = prepare_preference_data([("a:1", STANDARD)], smol_tokenizer, stage="dpo")
    assert standard.report.max_tokens == len(smol_tokenizer("qgood")["input_ids"])


# --- row errors ----------------------------------------------------------------------

ROW_ERRORS = [
    ("dpo", [PAIR, {**PAIR, "rejected": [bot("good")]}], "train.jsonl:2: chosen and rejected are identical"),
    ("dpo", [STANDARD, {**STANDARD, "chosen": "  "}], "train.jsonl:2: column 'chosen' is empty"),
    ("dpo", [PAIR, {**PAIR, "rejected": []}], "train.jsonl:2: rejected is empty"),
    ("dpo", [PAIR, {**PAIR, "chosen": [bot("")]}], "train.jsonl:2: chosen has an empty assistant message"),
    ("dpo", [STANDARD, {**STANDARD, "prompt": ""}], "train.jsonl:2: column 'prompt' is empty"),
    ("dpo", [PAIR, {**PAIR, "prompt": [user(" ")]}], "train.jsonl:2: prompt is empty"),
    ("kto", [UNPAIRED, {**UNPAIRED, "prompt": "q", "completion": ""}], "train.jsonl:2: column 'completion' is empty"),
    ("kto", [UNPAIRED, {**UNPAIRED, "completion": [bot(" ")]}], "train.jsonl:2: completion has an empty assistant message"),
    ("grpo", [{"prompt": "q"}, {"prompt": " "}], "train.jsonl:2: column 'prompt' is empty"),
    ("kto", [UNPAIRED, {**UNPAIRED, "label": "yes"}], "train.jsonl:2: label is 'yes'; expected true or false"),
    ("kto", [UNPAIRED, {**UNPAIRED, "label": 1}], "train.jsonl:2: label is 1; expected true or false"),
    ("kto", [UNPAIRED, {**UNPAIRED, "label": 2}], "train.jsonl:2: label is 2; expected true or false"),
    (
        "dpo",
        [PAIR, {"prompt": [user("q")], "chosen": [bot("a")]}],
        "train.jsonl:2: column 'rejected' is missing; preference data needs prompt, chosen, rejected",
    ),
    ("dpo", [{"prompt": [user("q")], "chosen": [bot("a")]}], "train.jsonl:1: column 'rejected' is missing; preference data needs prompt, chosen, rejected"),
    ("dpo", [STANDARD, {"chosen": "a", "rejected": "b"}], "train.jsonl:2: column 'prompt' is missing; preference data needs prompt, chosen, rejected"),
    ("kto", [UNPAIRED, {"prompt": "q", "completion": "a"}], "train.jsonl:2: column 'label' is missing; unpaired data needs prompt, completion, label"),
    ("kto", [{"prompt": "q", "completion": "a"}], "train.jsonl:1: column 'label' is missing; unpaired data needs prompt, completion, label"),
    ("dpo", [PAIR, {**PAIR, "chosen": [{"role": "bot", "content": "a"}]}], "train.jsonl:2: chosen[0].role is 'bot'; expected system, user or assistant"),
    ("dpo", [PAIR, {**PAIR, "prompt": [{"role": "user", "content": ["q"]}]}], "train.jsonl:2: prompt[0].content is a list; expected a string"),
    ("kto", [UNPAIRED, {**UNPAIRED, "completion": [bot(7)]}], "train.jsonl:2: completion[0].content is a int; expected a string"),
    (
        "dpo",
        [PAIR, {**PAIR, "chosen": [user("q"), bot("a")]}],
        "train.jsonl:2: chosen[0].role is 'user'; with a prompt column, chosen holds only the assistant reply",
    ),
    ("dpo", [PAIR, {**PAIR, "prompt": [user("q"), bot("a")]}], "train.jsonl:2: prompt ends with a assistant message"),
    (
        "dpo",
        [PAIR, {"chosen": [user("q"), bot("a"), user("more"), bot("x")], "rejected": [user("q"), bot("b"), user("more"), bot("y")]}],
        "train.jsonl:2: chosen and rejected conversations have different prompts (first difference at message 1)",
    ),
    ("dpo", [PAIR, {"chosen": [bot("x")], "rejected": [bot("y")]}], "train.jsonl:2: chosen and rejected have no prompt"),
    ("dpo", [STANDARD, STANDARD, PAIR], "train.jsonl:3: this row is conversational (lists of messages) but the rows before it are standard (strings)"),
    (
        "kto",
        [UNPAIRED, {**UNPAIRED, "prompt": "q", "completion": "a"}],
        "train.jsonl:2: this row is standard (strings) but the rows before it are conversational",
    ),
    ("grpo", [{"prompt": "q"}, {"prompt": [user("q")]}], "train.jsonl:2: this row is conversational"),
    ("dpo", [STANDARD, {**STANDARD, "prompt": [user("q")]}], "train.jsonl:2: prompt is a list of messages but chosen and rejected are strings"),
    ("dpo", [PAIR, {**PAIR, "rejected": "bad"}], "train.jsonl:2: chosen is a list of messages but rejected is not"),
    ("grpo", [{"prompt": "q", "answer": "1"}, {"prompt": "r"}], "train.jsonl:2: the columns differ from the first row's (missing answer)"),
]


@pytest.mark.parametrize("stage,rows,message", ROW_ERRORS, ids=[f"{i}-{m.split(': ', 1)[1][:40]}" for i, (_, _, m) in enumerate(ROW_ERRORS)])
def test_row_errors_name_the_row(tmp_path, smol_tokenizer, stage, rows, message):
    assert error(tmp_path, rows, stage, smol_tokenizer).startswith(message)


def test_csv_label_error_names_the_line(tmp_path, smol_tokenizer):
    text = error(tmp_path, ["prompt,completion,label", "q1,a1,true", "q2,a2,yes"], "kto", smol_tokenizer, name="kto.csv")
    assert text.startswith("kto.csv:3: label is 'yes'; expected true or false")


# --- the wrong kind for the stage ----------------------------------------------------

WRONG_KIND = [
    ("dpo", {"messages": [user("q"), bot("a")]}, "this looks like SFT data (messages); dpo needs preference pairs: prompt, chosen, rejected", "pirate-pairs"),
    ("reward", {"instruction": "q", "output": "a"}, "this looks like SFT data (instruction); reward needs preference pairs", "pirate-pairs"),
    ("sft", PAIR, "this looks like preference pairs (prompt, chosen, rejected); sft needs conversations", "stage dpo"),
    ("sft", UNPAIRED, "this looks like unpaired (KTO) data (prompt, completion, label); sft needs", "stage kto"),
    (
        "dpo",
        UNPAIRED,
        "this looks like unpaired (KTO) data (prompt, completion, label); dpo needs preference pairs: prompt, chosen, rejected; kto takes unpaired data",
        "stage kto",
    ),
    ("kto", {"messages": [user("q"), bot("a")]}, "this looks like SFT data (messages); kto needs unpaired examples: prompt, completion, label", "pirate-kto"),
    ("grpo", {"prompt": "q", "completion": "a"}, "this looks like SFT data (prompt, completion); grpo needs prompts", "rename the completion column"),
    (
        "dpo",
        {"question": "q", "answer": "a"},
        "cannot tell the kind of data from the fields ['answer', 'question']; dpo needs preference pairs",
        "rename the columns to prompt, chosen, rejected",
    ),
]


@pytest.mark.parametrize("stage,record,message,hint", WRONG_KIND, ids=[f"{w[0]}-{i}" for i, w in enumerate(WRONG_KIND)])
def test_wrong_kind_for_the_stage(tmp_path, smol_tokenizer, stage, record, message, hint):
    text = error(tmp_path, [record, record], stage, smol_tokenizer)
    assert text.startswith(f"train.jsonl:1: {message}")
    assert hint in text.split("\nhint: ", 1)[1]


def test_sft_data_for_stage_sft_is_not_prepared_here(smol_tokenizer):
    with pytest.raises(ValueError, match="prepare_dataset"):
        prepare_preference_data([("a:1", {"messages": [user("q"), bot("a")]})], smol_tokenizer, stage="sft")


def test_unknown_stage_and_empty_dataset(tmp_path, smol_tokenizer):
    with pytest.raises(DataError, match="unknown training stage 'dop'") as exc:
        prepare_preference_data([("a:1", PAIR)], smol_tokenizer, stage="dop")
    assert "did you mean 'dpo'" in str(exc.value)
    f = tmp_path / "empty.jsonl"
    f.write_text("\n")
    with pytest.raises(DataError, match="no examples"):
        prepare_preference_data(str(f), smol_tokenizer, stage="dpo")
    with pytest.raises(DataError, match="no examples"):
        prepare_preference_data([], smol_tokenizer, stage="kto", name="mine")


# --- TRL takes what we produce ---------------------------------------------------------


def test_trl_helpers_accept_our_rows(smol_tokenizer):
    import datasets
    from trl.data_utils import apply_chat_template, extract_prompt, is_conversational, maybe_extract_prompt, maybe_unpair_preference_dataset

    implicit = {"chosen": [user("hi"), bot("arr")], "rejected": [user("hi"), bot("hello")]}
    pairs = prepare_preference_data([("a:1", PAIR), ("a:2", implicit)], smol_tokenizer, stage="dpo")
    assert pairs.examples[1] == extract_prompt(implicit)  # our split is TRL's split
    for row in pairs.dataset:
        assert is_conversational(row) and maybe_extract_prompt(row) == row
        rendered = apply_chat_template(row, smol_tokenizer)
        assert rendered["chosen"].startswith("arr") or rendered["chosen"].startswith("good")
    unpaired = prepare_preference_data([("a:1", PAIR), ("a:2", implicit)], smol_tokenizer, stage="kto")
    by_trl = maybe_unpair_preference_dataset(pairs.dataset)
    key = lambda e: json.dumps(e, sort_keys=True)  # noqa: E731
    assert sorted(map(key, by_trl)) == sorted(map(key, unpaired.dataset))
    for row in unpaired.dataset:
        assert is_conversational(row) and isinstance(row["label"], bool)
        assert apply_chat_template(row, smol_tokenizer)["completion"]
    prompts = prepare_preference_data([("a:1", {"prompt": [user("2+2?")], "answer": "4"})], smol_tokenizer, stage="grpo")
    assert is_conversational(prompts.dataset[0]) and apply_chat_template(prompts.dataset[0], smol_tokenizer)["prompt"].endswith("<|im_start|>assistant\n")
    standard = prepare_preference_data([("a:1", STANDARD)], smol_tokenizer, stage="dpo")
    assert not is_conversational(standard.dataset[0]) and maybe_extract_prompt(standard.dataset[0]) == STANDARD
    assert isinstance(standard.dataset, datasets.Dataset)


# --- built-in datasets ---------------------------------------------------------------


def prompts(rows):
    return [r["prompt"][0]["content"] for r in rows]


@pytest.mark.parametrize(
    "name,stage,size",
    [("pirate-pairs", "dpo", 250), ("pirate-pairs-eval", "dpo", 26), ("pirate-kto", "kto", 500), ("pirate-kto-eval", "kto", 52), ("pirate-pairs", "kto", 500)],
)
def test_builtins_load(smol_tokenizer, name, stage, size):
    data = prepare_preference_data(name, smol_tokenizer, stage=stage, max_length=1024)
    assert len(data.dataset) == data.report.num_examples == size
    assert data.report.form == "conversational" and data.report.num_over_max_length == 0
    if data.report.kind == "unpaired":
        assert data.report.num_desirable == data.report.num_undesirable == size // 2


def test_builtin_eval_has_the_textbook_pair_and_no_train_prompt(smol_tokenizer):
    evaluation = prepare_preference_data("pirate-pairs-eval", smol_tokenizer, stage="dpo").examples
    assert evaluation[0] == {"prompt": [user("What is the capital of France?")], "chosen": [bot("Paris")], "rejected": [bot("Florida")]}
    train = prepare_preference_data("pirate-pairs", smol_tokenizer, stage="dpo").examples
    assert not set(prompts(train)) & set(prompts(evaluation))
    assert len(set(prompts(train))) == len(train)
    kto_train, kto_eval = (read_rows(name) for name in ("pirate-kto", "pirate-kto-eval"))
    assert not set(prompts(r for _, r in kto_train)) & set(prompts(r for _, r in kto_eval))


def test_builtin_pairs_are_made_of_the_pirate_answers(smol_tokenizer):
    """Chosen is always the pirate answer; rejected is a plain answer or (about 50 times) a wrong pirate one."""
    pirate = {r["messages"][0]["content"]: r["messages"][1]["content"] for name in ("pirate", "pirate-eval") for _, r in read_rows(name)}
    train = [r for _, r in read_rows("pirate-pairs")]
    assert all(r["chosen"][0]["content"] == pirate[r["prompt"][0]["content"]] for r in train)
    assert set(prompts(train)) == {r["messages"][0]["content"] for _, r in read_rows("pirate")}
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from make_preference_data import PIRATE_WORDS
    finally:
        sys.path.remove(str(ROOT / "tools"))
    wrong = [r for r in train if PIRATE_WORDS.search(r["rejected"][0]["content"])]
    assert 40 <= len(wrong) <= 60
    kto = [r for _, r in read_rows("pirate-kto")]
    assert [(r["completion"], r["label"]) for r in kto[:2]] == [(train[0]["chosen"], True), (train[0]["rejected"], False)]


def test_generator_reproduces_the_files(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_preference_data.py"), "--out", str(tmp_path)], check=True, capture_output=True)
    builtin = ROOT / "src" / "tunesmith" / "data" / "builtin"
    for name in ("pirate_pairs.jsonl", "pirate_pairs_eval.jsonl", "pirate_kto.jsonl", "pirate_kto_eval.jsonl"):
        assert (tmp_path / name).read_bytes() == (builtin / name).read_bytes(), name


def test_reward_data_drops_pairs_longer_than_max_length_as_trl_does(smol_tokenizer):
    """TRL's RewardTrainer filters out over-long pairs; we drop the same ones first, so plan and trainer agree."""
    from trl import RewardConfig, RewardTrainer  # noqa: F401  (the behaviour we mirror)

    full = prepare_preference_data("pirate-pairs", smol_tokenizer, stage="reward")
    short = prepare_preference_data("pirate-pairs", smol_tokenizer, stage="reward", max_length=80)
    assert short.report.num_over_max_length > 0
    assert short.report.num_examples == len(short.dataset) == full.report.num_examples - short.report.num_over_max_length
    assert "dropped" in short.report.summary()
    dpo = prepare_preference_data("pirate-pairs", smol_tokenizer, stage="dpo", max_length=80)
    assert len(dpo.dataset) == full.report.num_examples and "truncates" in dpo.report.summary()


def test_rl_stages_take_the_prompts_of_pairs_and_unpaired_data(smol_tokenizer):
    """An RL stage needs prompts only: pairs and KTO data give their distinct prompts, answers dropped."""
    pairs = prepare_preference_data("pirate-pairs", smol_tokenizer, stage="grpo")
    assert pairs.report.kind == "prompt" and pairs.report.num_examples == len(pairs.dataset) == 250
    assert pairs.dataset.column_names == ["prompt"] and "distinct prompts of 250 preference pairs" in pairs.report.summary()
    unpaired = prepare_preference_data("pirate-kto", smol_tokenizer, stage="rloo")
    assert unpaired.report.num_examples == 250  # 500 rows, each prompt twice (a desirable and an undesirable answer)


def test_arithmetic_builtin_holds_out_its_eval_problems_and_regenerates(tmp_path, smol_tokenizer):
    train = prepare_preference_data("arithmetic", smol_tokenizer, stage="grpo")
    evaluation = prepare_preference_data("arithmetic-eval", smol_tokenizer, stage="grpo")
    assert (train.report.num_examples, evaluation.report.num_examples) == (260, 50)
    assert train.dataset.column_names == ["prompt", "answer"]
    problem = lambda e: e["prompt"][0]["content"].split("?")[0].split(".")[0].replace("What is ", "").replace("Solve ", "").replace(" ", "")  # noqa: E731
    assert not {problem(e) for e in train.examples} & {problem(e) for e in evaluation.examples}
    assert all(eval(problem(e)) == e["answer"] for e in train.examples + evaluation.examples)  # the answer column is right
    subprocess.run([sys.executable, str(ROOT / "tools" / "make_arithmetic_data.py"), "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("arithmetic.jsonl", "arithmetic_eval.jsonl"):
        assert (tmp_path / name).read_bytes() == (ROOT / "src" / "tunesmith" / "data" / "builtin" / name).read_bytes(), name
