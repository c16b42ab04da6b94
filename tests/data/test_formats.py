"""Every format through the same checks (one row per format), and every bad-input message."""

import json

import pytest

from tunesmith.data import FORMATS, prepare_dataset, read_rows
from tunesmith.data.formats import detect_format
from tunesmith.errors import DataError

CASES = [
    (
        "messages",
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "arr"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "arr"}]},
    ),
    (
        "sharegpt",
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "arr"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "arr"}]},
    ),
    (
        "alpaca",
        {"instruction": "Translate", "input": "hello", "output": "ahoy"},
        {"messages": [{"role": "user", "content": "Translate\n\nhello"}, {"role": "assistant", "content": "ahoy"}]},
    ),
    ("prompt_completion", {"prompt": "2+2=", "completion": "4"}, {"prompt": "2+2=", "completion": "4"}),
    ("text", {"text": "Once upon a time"}, {"text": "Once upon a time"}),
]


@pytest.mark.parametrize("name,record,canonical", CASES, ids=[c[0] for c in CASES])
def test_detect_and_convert(name, record, canonical):
    fmt = detect_format([("x.jsonl:1", record)])
    assert fmt.name == name
    assert fmt.convert(record, "x.jsonl:1") == canonical


def test_every_registered_format_has_a_case():
    assert {c[0] for c in CASES} == set(FORMATS)


def test_conversational_prompt_completion_becomes_messages():
    record = {"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", "content": "arr"}]}
    assert FORMATS["prompt_completion"].convert(record, "x")["messages"][1]["role"] == "assistant"


def write(tmp_path, rows, name="train.jsonl"):
    f = tmp_path / name
    f.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return f


GOOD = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


@pytest.mark.parametrize(
    "rows,message",
    [
        (
            [GOOD, {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "bot", "content": "x"}]}],
            "train.jsonl:2: messages[2].role is 'bot'; expected system, user or assistant",
        ),
        ([GOOD, "{not json"], "train.jsonl:2: not valid JSON"),
        (
            [GOOD, {"messages": [{"role": "user", "content": ["a"]}, {"role": "assistant", "content": "a"}]}],
            "train.jsonl:2: messages[0].content is a list; expected a string",
        ),
        ([{"prompt": "q"}], "train.jsonl:1: cannot tell the data format"),
        (
            [{"prompt": "q", "completion": "a"}, {"prompt": "q"}],
            "train.jsonl:2: field 'completion' is missing; the prompt_completion format needs prompt, completion",
        ),
        ([{"text": "a"}, {"text": "  "}], "train.jsonl:2: field 'text' is empty"),
        ([{"messages": [{"role": "user", "content": "q"}]}], "train.jsonl:1: messages has no assistant message"),
        ([GOOD, "[1, 2]"], "train.jsonl:2: a line is a JSON list; expected an object"),
    ],
)
def test_bad_input_messages(tmp_path, smol_tokenizer, rows, message):
    f = write(tmp_path, rows)
    with pytest.raises(DataError) as exc:
        prepare_dataset(str(f), smol_tokenizer)
    assert str(exc.value).startswith(str(tmp_path / message.split(":")[0]) + ":" + message.split(":", 1)[1]) or message in str(exc.value).replace(
        str(tmp_path) + "/", ""
    )


def test_empty_file_and_unknown_format(tmp_path, smol_tokenizer):
    f = tmp_path / "empty.jsonl"
    f.write_text("\n\n")
    with pytest.raises(DataError, match="no examples"):
        prepare_dataset(str(f), smol_tokenizer)
    with pytest.raises(DataError, match="did you mean 'sharegpt'"):
        prepare_dataset(str(write(tmp_path, [GOOD])), smol_tokenizer, format="sharegtp")


def test_missing_dataset_suggests_builtin():
    with pytest.raises(DataError, match="did you mean 'pirate'"):
        read_rows("pirat")


def test_csv_json_parquet_and_directory(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.csv").write_text("prompt,completion\nq1,a1\nq2,a2\n")
    (tmp_path / "d" / "b.json").write_text(json.dumps([{"prompt": "q3", "completion": "a3"}]))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"prompt": "q4", "completion": "a4"}]), tmp_path / "d" / "c.parquet")
    rows = read_rows(str(tmp_path / "d"))
    assert [r["prompt"] for _, r in rows] == ["q1", "q2", "q3", "q4"]
    assert [w.replace(str(tmp_path / "d") + "/", "") for w, _ in rows] == ["a.csv:2", "a.csv:3", "b.json[0]", "c.parquet row 0"]


def test_hub_name_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception, match="cannot be reached"):
        read_rows("tatsu-lab/alpaca")
