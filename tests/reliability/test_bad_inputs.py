"""A corpus of malformed inputs, tried as a new user would, across every entry point.

Each case builds its bad file(s) in tmp_path and runs one command line in-process (`cli.main.run`). Every one
must exit 2 with one `error:` sentence that names the file (and the line, row or field where that applies) and
a `hint:` saying what to do: never a traceback, never "unexpected" (a crash log), and never an output or run
directory left behind (the errors are all found before anything is written).

A case is a function registered with @case(id): it returns the command line and the substrings the message
must hold (compared with all whitespace removed, since the console wraps long lines anywhere).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from tunesmith.cli.main import run

CASES: dict = {}


def case(name: str):
    def add(fn):
        assert name not in CASES, name
        CASES[name] = fn
        return fn

    return add


class Ctx:
    """Where a case writes its inputs; `out` is the output directory every command is pointed at (never created)."""

    def __init__(self, tmp_path: Path, request):
        self.tmp = tmp_path
        self.request = request
        self.out = tmp_path / "out"

    @property
    def tiny(self) -> str:
        return self.request.getfixturevalue("tiny_model_dir")

    def file(self, name: str, content: str | bytes) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return str(path)

    def jsonl(self, name: str, rows: list) -> str:
        return self.file(name, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))

    def dir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def train(self, stage: str, dataset: str | None = None, *extra: str, steps: bool = True) -> list[str]:
        data = ["--dataset", dataset] if dataset else []
        return [stage, "--model", self.tiny, *data, "--output-dir", str(self.out), *(["--max-steps", "1"] if steps else []), "--precision", "fp32", *extra]

    def model_copy(self, name: str, skip: tuple[str, ...] = ()) -> Path:
        """A copy of the tiny model without the files in `skip`."""
        target = self.dir(name)
        for f in Path(self.tiny).iterdir():
            if f.name not in skip:
                shutil.copy(f, target / f.name)
        return target


def chat(question: str = "What is 2+2?", answer: str = "4") -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


PAIR = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}


# ------------------------------------------------------------------ encodings and binary content


@case("utf16-jsonl")
def _(c):
    return c.train("sft", c.file("data.jsonl", (json.dumps(chat("héllo")) + "\n").encode("utf-16"))), ["data.jsonl", "UTF-16", "iconv"]


@case("utf16-without-bom-jsonl")
def _(c):
    return c.train("sft", c.file("data.jsonl", (json.dumps(chat()) + "\n").encode("utf-16-le"))), ["data.jsonl", "UTF-16"]


@case("latin1-jsonl")
def _(c):
    text = json.dumps(chat()) + "\n" + json.dumps(chat("café?"), ensure_ascii=False) + "\n"
    return c.train("sft", c.file("data.jsonl", text.encode("latin-1"))), ["data.jsonl:2", "not UTF-8", "0xe9"]


@case("latin1-csv")
def _(c):
    return c.train("sft", c.file("data.csv", "prompt,completion\nq,a\ncafé,b\n".encode("cp1252"))), ["data.csv:3", "not UTF-8"]


@case("png-named-jsonl")
def _(c):
    return c.train("sft", c.file("data.jsonl", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)), ["data.jsonl", "PNG image"]


@case("random-bytes-jsonl")
def _(c):
    data = random.Random(0).randbytes(4096)
    return c.train("sft", c.file("data.jsonl", b"x" + data)), ["data.jsonl:", "binary content"]


@case("nul-byte-in-csv")
def _(c):
    return c.train("sft", c.file("data.csv", b"prompt,completion\nq,a\x00b\n")), ["data.csv:2", "NUL"]


@case("gzip-named-json")
def _(c):
    import gzip

    return c.train("sft", c.file("data.json", gzip.compress(json.dumps([chat()]).encode()))), ["data.json", "gzip"]


@case("utf16-recipe")
def _(c):
    return c.train("sft", None, "-c", c.file("recipe.yaml", "training:\n  max_steps: 1\n".encode("utf-16"))), ["recipe.yaml", "UTF-16"]


@case("png-recipe")
def _(c):
    return c.train("sft", None, "-c", c.file("recipe.yaml", b"\x89PNG\r\n\x1a\n\x00\x00")), ["recipe.yaml", "PNG"]


@case("utf16-prompts-file")
def _(c):
    return ["generate", "--model", c.tiny, "--prompts-file", c.file("p.jsonl", '{"prompt": "hi"}\n'.encode("utf-16"))], ["p.jsonl", "UTF-16"]


# ------------------------------------------------------------------ extensions that lie about the content


@case("parquet-that-is-csv")
def _(c):
    return c.train("sft", c.file("data.parquet", "prompt,completion\nq,a\n")), ["data.parquet", "looks like CSV", "data.csv"]


@case("parquet-that-is-png")
def _(c):
    return c.train("grpo", c.file("data.parquet", b"\x89PNG\r\n\x1a\n" + b"\x01" * 64)), ["data.parquet", "PNG"]


@case("parquet-cut-off")
def _(c):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = c.tmp / "whole.parquet"
    pq.write_table(pa.table({"prompt": ["q"] * 50, "completion": ["a"] * 50}), path)
    return c.train("sft", c.file("data.parquet", path.read_bytes()[:-40])), ["data.parquet", "cut off"]


@case("json-that-is-jsonl")
def _(c):
    return c.train("sft", c.jsonl("data.json", [chat(), chat()])), ["data.json:2", "data.jsonl"]


@case("jsonl-that-is-a-json-array")
def _(c):
    return c.train("sft", c.file("data.jsonl", json.dumps([chat(), chat()], indent=2))), ["data.jsonl:1", "data.json"]


@case("jsonl-that-is-csv")
def _(c):
    return c.train("sft", c.file("data.jsonl", "prompt,completion\nq,a\n")), ["data.jsonl:1", "data.csv"]


@case("csv-that-is-jsonl")
def _(c):
    return c.train("sft", c.jsonl("data.csv", [{"prompt": "q, and more", "completion": "a"}] * 2)), ["data.csv:1", "JSON, not a CSV header", "data.jsonl"]


@case("unsupported-suffix")
def _(c):
    return c.train("sft", c.file("data.txt", "hello\n")), ["data.txt", "unsupported file type"]


# ------------------------------------------------------------------ broken CSV


@case("csv-unterminated-quote")
def _(c):
    return c.train("sft", c.file("data.csv", 'prompt,completion\nq,a\n"unterminated,yes\nb,c\n')), ["data.csv:3", "never closed"]


@case("csv-row-missing-a-column")
def _(c):
    return c.train("sft", c.file("data.csv", "prompt,completion\nq,a\nonly-a-prompt\n")), ["data.csv:3", "no value for 'completion'"]


@case("csv-row-with-extra-fields")
def _(c):
    return c.train("sft", c.file("data.csv", "prompt,completion\nq,a, and more\n")), ["data.csv:2", "3 fields", "2 columns"]


@case("csv-text-after-closing-quote")
def _(c):
    return c.train("sft", c.file("data.csv", 'prompt,completion\n"q"x,a\n')), ["data.csv:2", "broken CSV"]


@case("csv-duplicate-header")
def _(c):
    return c.train("sft", c.file("data.csv", "prompt,prompt\nq,a\n")), ["data.csv:1", "'prompt' more than once"]


@case("csv-header-missing-a-column")
def _(c):
    return c.train("sft", c.file("data.csv", "prompt\nq\n")), ["data.csv:2", "cannot tell the data format"]


@case("csv-huge-field")
def _(c):
    return c.train("sft", c.file("data.csv", 'prompt,completion\nq,"' + "a" * 20_000_000 + '"\n')), ["data.csv:2", "longer than"]


# ------------------------------------------------------------------ pathological JSON


@case("jsonl-deep-nesting")
def _(c):
    return c.train("sft", c.file("data.jsonl", '{"text": ' + "[" * 10000 + "]" * 10000 + "}\n")), ["data.jsonl:1", "nested too deeply"]


@case("json-deep-nesting")
def _(c):
    return c.train("sft", c.file("data.json", "[" * 10000 + "]" * 10000)), ["data.json", "nested too deeply"]


@case("jsonl-huge-single-line")
def _(c):
    return c.train("sft", c.file("data.jsonl", '{"text": "' + "a" * 20_000_000)), ["data.jsonl:1", "Unterminated string"]


@case("jsonl-broken-line-3")
def _(c):
    return c.train("sft", c.jsonl("data.jsonl", [chat(), chat(), '{"messages": [oops]}'])), ["data.jsonl:3", "not valid JSON"]


@case("jsonl-line-is-a-list")
def _(c):
    return c.train("sft", c.jsonl("data.jsonl", [chat(), [1, 2]])), ["data.jsonl:2", "JSON list"]


@case("json-not-a-list")
def _(c):
    return c.train("sft", c.file("data.json", '{"rows": 3}')), ["data.json", "expected a list of objects"]


@case("json-item-not-an-object")
def _(c):
    return c.train("sft", c.file("data.json", json.dumps([chat(), "hello"]))), ["data.json[1]", "expected an object"]


# ------------------------------------------------------------------ empty inputs and directories


@case("empty-file")
def _(c):
    return c.train("sft", c.file("data.jsonl", "")), ["data.jsonl", "no examples"]


@case("only-blank-lines")
def _(c):
    return c.train("sft", c.file("data.jsonl", "\n\n   \n\t\n")), ["data.jsonl", "no examples"]


@case("csv-header-only")
def _(c):
    return c.train("dpo", c.file("data.csv", "prompt,chosen,rejected\n")), ["data.csv", "no examples"]


@case("empty-directory")
def _(c):
    return c.train("sft", str(c.dir("data"))), ["data", "has no .jsonl"]


@case("directory-without-data-files")
def _(c):
    folder = c.dir("data")
    (folder / "notes.txt").write_text("hi")
    return c.train("sft", str(folder)), ["data", "notes.txt"]


@case("directory-mixing-formats")
def _(c):
    c.jsonl("data/a.jsonl", [chat()])
    c.file("data/b.csv", "prompt,completion\nq,a\n")
    return c.train("sft", str(c.tmp / "data")), ["b.csv:2", "prompt_completion format", "a.jsonl:1"]


@case("directory-with-one-broken-file")
def _(c):
    c.jsonl("data/a.jsonl", [chat()])
    c.file("data/b.jsonl", "{oops\n")
    return c.train("sft", str(c.tmp / "data")), ["b.jsonl:1", "not valid JSON"]


@case("dataset-not-found")
def _(c):
    return c.train("sft", str(c.tmp / "nosuch.jsonl")), ["nosuch.jsonl", "not found"]


# ------------------------------------------------------------------ SFT rows


@case("sft-given-prompt-only-rows")
def _(c):
    return c.train("sft", c.jsonl("data.jsonl", [{"prompt": "q"}])), ["data.jsonl:1", "cannot tell the data format"]


@case("sft-bad-role")
def _(c):
    return c.train("sft", c.jsonl("data.jsonl", [{"messages": [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}]}])), [
        "data.jsonl:1",
        "messages[0].role",
    ]


@case("sft-empty-assistant-content")
def _(c):
    return c.train("sft", c.jsonl("data.jsonl", [chat(), chat(answer="")])), ["data.jsonl:2", "empty assistant"]


@case("sft-non-string-content")
def _(c):
    return c.train("sft", c.jsonl("data.jsonl", [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": {"x": 1}}]}])), [
        "data.jsonl:1",
        "messages[1].content is a dict",
    ]


@case("sft-messages-not-a-list")
def _(c):
    return c.train("sft", c.jsonl("data.jsonl", [{"messages": "hello"}])), ["data.jsonl:1", "messages is a str"]


@case("sft-no-assistant-turn")
def _(c):
    return c.train("sft", c.jsonl("data.jsonl", [{"messages": [{"role": "user", "content": "q"}]}])), ["data.jsonl:1", "no assistant message"]


@case("sft-csv-empty-completion")
def _(c):
    return c.train("sft", c.file("data.csv", "prompt,completion\nq,a\nq2,\n")), ["data.csv:3", "field 'completion' is empty"]


# ------------------------------------------------------------------ preference rows (dpo, orpo, reward)


@case("dpo-given-sft-rows")
def _(c):
    return c.train("dpo", c.jsonl("data.jsonl", [chat()])), ["data.jsonl:1", "looks like SFT data"]


@case("dpo-chosen-equals-rejected")
def _(c):
    return c.train("dpo", c.jsonl("data.jsonl", [PAIR, {**PAIR, "rejected": "4"}])), ["data.jsonl:2", "identical"]


@case("dpo-missing-rejected")
def _(c):
    return c.train("dpo", c.jsonl("data.jsonl", [{"prompt": "q", "chosen": "a"}])), ["data.jsonl:1", "column 'rejected' is missing"]


@case("dpo-mixed-forms")
def _(c):
    conv = {
        "prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}],
    }
    return c.train("dpo", c.jsonl("data.jsonl", [PAIR, conv])), ["data.jsonl:2", "conversational"]


@case("orpo-given-unpaired-rows")
def _(c):
    return c.train("orpo", c.jsonl("data.jsonl", [{"prompt": "q", "completion": "a", "label": True}])), ["data.jsonl:1", "kto takes unpaired data"]


@case("reward-given-prompt-only-rows")
def _(c):
    return c.train("reward", c.jsonl("data.jsonl", [{"prompt": "q"}])), ["data.jsonl:1", "reward needs preference pairs"]


@case("dpo-csv-empty-chosen")
def _(c):
    return c.train("dpo", c.file("data.csv", "prompt,chosen,rejected\nq,a,b\nq,,b\n")), ["data.csv:3", "column 'chosen' is empty"]


@case("dpo-parquet-non-string-chosen")
def _(c):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = c.tmp / "data.parquet"
    pq.write_table(pa.table({"prompt": ["q"], "chosen": [4], "rejected": [5]}), path)
    return c.train("dpo", str(path)), ["data.parquet row 0", "column 'chosen' is a int"]


# ------------------------------------------------------------------ unpaired rows (kto)


@case("kto-label-not-boolean")
def _(c):
    return c.train("kto", c.jsonl("data.jsonl", [{"prompt": "q", "completion": "a", "label": True}, {"prompt": "q", "completion": "b", "label": "maybe"}])), [
        "data.jsonl:2",
        "label is 'maybe'",
    ]


@case("kto-label-missing")
def _(c):
    return c.train("kto", c.jsonl("data.jsonl", [{"prompt": "q", "completion": "a"}])), ["data.jsonl:1", "column 'label' is missing"]


@case("kto-utf16-csv")
def _(c):
    return c.train("kto", c.file("data.csv", "prompt,completion,label\nq,a,true\n".encode("utf-16"))), ["data.csv", "UTF-16"]


# ------------------------------------------------------------------ prompt-only rows (grpo, ppo)


@case("grpo-prompt-not-a-string")
def _(c):
    return c.train("grpo", c.jsonl("data.jsonl", [{"prompt": 5}])), ["data.jsonl:1", "column 'prompt' is a int"]


@case("ppo-given-sft-rows")
def _(c):
    return c.train("ppo", c.jsonl("data.jsonl", [chat()])), ["data.jsonl:1", "ppo needs prompts"]


@case("grpo-rows-with-different-columns")
def _(c):
    return c.train("grpo", c.jsonl("data.jsonl", [{"prompt": "q", "answer": "4"}, {"prompt": "q2"}])), ["data.jsonl:2", "missing answer"]


@case("grpo-prompt-ends-with-assistant")
def _(c):
    return c.train("grpo", c.jsonl("data.jsonl", [{"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}])), [
        "data.jsonl:1",
        "prompt ends with a assistant message",
    ]


# ------------------------------------------------------------------ recipes


def recipe(c, text: str, stage: str = "sft") -> list[str]:
    return c.train(stage, None, "-c", c.file("recipe.yaml", text), steps=False)  # a --max-steps flag would hide the file's


@case("recipe-tab-indent")
def _(c):
    return recipe(c, "model:\n\tname: x\n"), ["recipe.yaml:2", "tabs"]


@case("recipe-unclosed-bracket")
def _(c):
    return recipe(c, "training:\n  max_steps: 1\n  report_to: [tensorboard\n"), ["recipe.yaml:4", "not valid YAML"]


@case("recipe-unknown-field")
def _(c):
    return recipe(c, "training:\n  learnin_rate: 1e-4\n"), ["recipe.yaml:2", "did you mean 'training.learning_rate'"]


@case("recipe-wrong-type")
def _(c):
    return recipe(c, "training:\n  max_steps: lots\n"), ["recipe.yaml:2", "training.max_steps", "'lots'"]


@case("recipe-section-wrong-type")
def _(c):
    return recipe(c, "method: lora\ntraining: 5\n"), ["recipe.yaml:2", "training"]


@case("recipe-lora-rank-0")
def _(c):
    return recipe(c, "method: lora\nlora:\n  r: 0\n"), ["recipe.yaml:3", "lora.r"]


@case("recipe-negative-learning-rate")
def _(c):
    return recipe(c, "training:\n  learning_rate: -0.0001\n"), ["recipe.yaml:2", "training.learning_rate"]


@case("recipe-max-steps-0")
def _(c):
    return recipe(c, "training:\n  max_steps: 0\n"), ["recipe.yaml:2", "training.max_steps is 0"]


@case("recipe-warmup-ratio-1.5")
def _(c):
    return recipe(c, "training:\n  warmup_ratio: 1.5\n"), ["recipe.yaml:2", "training.warmup_ratio"]


@case("recipe-max-length-too-small")
def _(c):
    return recipe(c, "data:\n  max_length: 4\n"), ["recipe.yaml:2", "data.max_length"]


@case("recipe-section-of-another-stage")
def _(c):
    return recipe(c, "stage: sft\ndpo:\n  beta: 0.1\n"), ["recipe.yaml:2", "'dpo:' section"]


@case("recipe-stage-contradicts-command")
def _(c):
    return recipe(c, "stage: dpo\n"), ["stage", "the recipe's stage is dpo"]


@case("recipe-duplicate-key")
def _(c):
    return recipe(c, "training:\n  max_steps: 1\n  max_steps: 2\n"), ["recipe.yaml:3", "'max_steps' is given twice"]


@case("recipe-is-a-list")
def _(c):
    return recipe(c, "- a\n- b\n"), ["recipe.yaml", "must be a mapping"]


@case("recipe-missing-file")
def _(c):
    return c.train("sft", None, "-c", str(c.tmp / "nope.yaml")), ["nope.yaml", "cannot read the recipe"]


@case("recipe-unknown-metric-sink")
def _(c):
    return recipe(c, "training:\n  report_to: [tensorbord]\n"), ["training.report_to", "tensorbord"]


@case("set-value-not-yaml")
def _(c):
    return c.train("sft", None, "--set", "training.max_steps=[1"), ["command line", "training.max_steps=[1"]


@case("set-unknown-field")
def _(c):
    return c.train("sft", None, "--set", "training.max_stepz=3"), ["command line", "did you mean 'training.max_steps'"]


@case("train-recipe-unknown-stage")
def _(c):
    return ["train", "-c", c.file("recipe.yaml", f"stage: sfx\noutput_dir: {c.out}\n")], ["recipe.yaml:1", "stage"]


@case("plan-recipe-tab-indent")
def _(c):
    return ["plan", "-c", c.file("recipe.yaml", "training:\n\tmax_steps: 1\n")], ["recipe.yaml:2", "tabs"]


@case("plan-binary-recipe")
def _(c):
    return ["plan", "-c", c.file("recipe.yaml", b"PK\x03\x04" + b"\x00" * 30)], ["recipe.yaml", "zip archive"]


# ------------------------------------------------------------------ --model


@case("model-missing-path")
def _(c):
    return ["sft", "--model", str(c.tmp / "no-such-model"), "--output-dir", str(c.out)], ["no-such-model", "neither a built-in name"]


@case("model-empty-directory")
def _(c):
    return ["sft", "--model", str(c.dir("empty-model")), "--output-dir", str(c.out)], ["empty-model", "holds no model"]


@case("model-config-without-weights")
def _(c):
    return ["sft", "--model", str(c.model_copy("no-weights", skip=("model.safetensors",))), "--output-dir", str(c.out)], ["no-weights", "no weights"]


@case("model-half-written-run")
def _(c):
    run_dir = c.dir("sft-run")
    (run_dir / "recipe.yaml").write_text("stage: sft\n")
    (run_dir / "checkpoint-4").mkdir()
    return ["dpo", "--model", str(run_dir), "--output-dir", str(c.out)], ["sft-run", "has no model/ yet", "--resume"]


@case("model-checkpoint-without-weights")
def _(c):
    checkpoint = c.dir("sft-run/checkpoint-5")
    (checkpoint / "trainer_state.json").write_text('{"global_step": 5}')
    (checkpoint / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": c.tiny, "peft_type": "LORA"}))
    return ["dpo", "--model", str(checkpoint), "--output-dir", str(c.out)], ["checkpoint-5", "no adapter weights"]


@case("model-pickle-only")
def _(c):
    folder = c.model_copy("pickled", skip=("model.safetensors",))
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    return ["sft", "--model", str(folder), "--output-dir", str(c.out)], ["pickled", "pytorch_model.bin", "--trust-pickle-weights"]


@case("model-config-not-json")
def _(c):
    folder = c.model_copy("bad-config")
    (folder / "config.json").write_text("{not json")
    return ["sft", "--model", str(folder), "--output-dir", str(c.out)], ["bad-config/config.json", "not valid JSON"]


@case("model-weights-cut-off")
def _(c):
    folder = c.model_copy("cut-off")
    (folder / "model.safetensors").write_bytes((Path(c.tiny) / "model.safetensors").read_bytes()[:5000])
    return ["sft", "--model", str(folder), "--output-dir", str(c.out)], ["cut-off/model.safetensors", "cut off"]


@case("model-adapter-base-missing")
def _(c):
    folder = c.dir("adapter")
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(c.tmp / "gone-base"), "peft_type": "LORA"}))
    return ["sft", "--model", str(folder), "--output-dir", str(c.out)], ["adapter/adapter_config.json", "gone-base", "base_model_name_or_path"]


@case("model-adapter-config-not-json")
def _(c):
    folder = c.dir("adapter")
    (folder / "adapter_config.json").write_text("{")
    return ["sft", "--model", str(folder), "--output-dir", str(c.out)], ["adapter/adapter_config.json", "not valid JSON"]


@case("model-text-file")
def _(c):
    return ["sft", "--model", c.file("model.txt", "hi"), "--output-dir", str(c.out)], ["model.txt", "not a .gguf model"]


@case("model-gguf-garbage")
def _(c):
    return ["sft", "--model", c.file("model.gguf", random.Random(1).randbytes(1000)), "--output-dir", str(c.out)], ["model.gguf", "not GGUF"]


def gguf_file(c, name: str, architecture: str) -> Path:
    import gguf
    import numpy as np

    path = c.tmp / name
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny")
    writer.add_tensor("token_embd.weight", np.zeros((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@case("model-gguf-unsupported-architecture")
def _(c):
    return ["sft", "--model", str(gguf_file(c, "bert.gguf", "bert")), "--output-dir", str(c.out)], ["bert.gguf", "'bert' model", "original model directory"]


@case("model-gguf-cut-off")
def _(c):
    whole = gguf_file(c, "whole.gguf", "llama").read_bytes()
    return ["generate", "--model", c.file("model.gguf", whole[: len(whole) // 2]), "--prompt", "hi"], ["model.gguf", "cut off or damaged"]


@case("generate-model-empty-directory")
def _(c):
    return ["generate", "--model", str(c.dir("empty-model")), "--prompt", "hi"], ["empty-model", "holds no model"]


@case("eval-model-without-weights")
def _(c):
    return ["eval", "--model", str(c.model_copy("no-weights", skip=("model.safetensors",)))], ["no-weights", "no weights"]


@case("export-half-written-run")
def _(c):
    run_dir = c.dir("sft-run")
    (run_dir / "recipe.yaml").write_text("stage: sft\n")
    return ["export", str(run_dir), "--output-dir", str(c.out)], ["sft-run", "has no model/ yet"]


@case("inspect-modules-config-not-json")
def _(c):
    folder = c.model_copy("bad-config")
    (folder / "config.json").write_text("[1, 2")
    return ["inspect", "modules", "--model", str(folder)], ["bad-config/config.json", "not valid JSON"]


@case("score-with-a-causal-model")
def _(c):
    return ["score", "--reward-model", c.tiny, "--prompt", "hi", "--response", "a"], [Path(c.tiny).name, "not a reward model"]


# ------------------------------------------------------------------ --resume


def run_dir(c, recipe_text: str = "stage: sft\n") -> Path:
    folder = c.dir("runs/sft-1")
    (folder / "recipe.yaml").write_text(recipe_text)
    return folder


@case("resume-not-a-run")
def _(c):
    folder = c.dir("something")
    (folder / "notes.txt").write_text("hi")
    return ["sft", "--resume", str(folder)], ["something", "no recipe.yaml"]


@case("resume-missing-path")
def _(c):
    return ["sft", "--resume", str(c.tmp / "runs/gone")], ["runs/gone", "does not exist"]


@case("resume-no-complete-checkpoint")
def _(c):
    folder = run_dir(c)
    (folder / "checkpoint-2").mkdir()
    return ["sft", "--resume", str(folder)], ["sft-1", "no complete checkpoint"]


@case("resume-incomplete-checkpoint")
def _(c):
    folder = run_dir(c)
    (folder / "checkpoint-2").mkdir()
    return ["sft", "--resume", str(folder / "checkpoint-2")], ["checkpoint-2", "incomplete checkpoint"]


@case("resume-corrupt-trainer-state")
def _(c):
    folder = run_dir(c)
    for step, state in ((2, '{"global_step": 2}'), (4, '{"global_step": 4, "log_hi')):
        (folder / f"checkpoint-{step}").mkdir()
        (folder / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
    return ["sft", "--resume", str(folder)], ["checkpoint-4/trainer_state.json", "damaged", "checkpoint-2"]


@case("resume-broken-recipe")
def _(c):
    folder = run_dir(c, "stage: sft\ntraining: [\n")
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    return ["sft", "--resume", str(folder)], ["sft-1/recipe.yaml:3", "not valid YAML"]


@case("resume-as-another-stage")
def _(c):
    folder = run_dir(c, "stage: dpo\n")
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "trainer_state.json").write_text('{"global_step": 2}')
    return ["sft", "--resume", str(folder)], ["sft-1", "is a dpo run"]


# ------------------------------------------------------------------ reward functions (grpo --rewards)


def grpo(c, rewards: str) -> list[str]:
    return c.train("grpo", c.jsonl("prompts.jsonl", [{"prompt": "2+2?", "answer": "4"}]), "--rewards", rewards)


@case("reward-file-missing")
def _(c):
    return grpo(c, f"{c.tmp}/missing.py:score"), ["grpo.rewards[0]", "missing.py", "does not exist"]


@case("reward-function-missing")
def _(c):
    return grpo(c, c.file("rewards.py", "def other(prompts, completions, **kw):\n    return [1.0] * len(completions)\n") + ":score"), [
        "grpo.rewards[0]",
        "rewards.py",
        "has no function 'score'",
    ]


@case("reward-wrong-signature")
def _(c):
    return grpo(c, c.file("rewards.py", "def score(a):\n    return [1.0]\n") + ":score"), ["grpo.rewards[0]", "score(a)", "**columns"]


@case("reward-syntax-error")
def _(c):
    return grpo(c, c.file("rewards.py", "import re\ndef score(prompts, completions, **kw:\n    return [1.0]\n") + ":score"), [
        "grpo.rewards[0]",
        "rewards.py",
        "line 2",
    ]


@case("reward-file-without-function-name")
def _(c):
    return grpo(c, c.file("rewards.py", "def score(prompts, completions, **kw):\n    return []\n")), [
        "grpo.rewards[0]",
        "rewards.py",
        "names a file but not the function",
    ]


@case("reward-unknown-builtin")
def _(c):
    return grpo(c, "numeric_answr"), ["grpo.rewards[0]", "did you mean 'numeric_answer'"]


@case("reward-module-missing")
def _(c):
    return grpo(c, "no_such_module_xyz:score"), ["grpo.rewards[0]", "no_such_module_xyz"]


@case("reward-bad-weight")
def _(c):
    return grpo(c, "abc*numeric_answer"), ["grpo.rewards", "abc"]


@case("reward-bad-option-type")
def _(c):
    text = f"stage: grpo\ndata:\n  dataset: {c.jsonl('prompts.jsonl', [{'prompt': 'q', 'answer': '4'}])}\ngrpo:\n  rewards:\n    - function: length_penalty\n      options: {{max_chars: lots}}\n"
    return recipe(c, text, "grpo"), ["grpo.rewards[0].options.max_chars", "lots"]


# ------------------------------------------------------------------ merge recipes


def merge(c, text: str) -> list[str]:
    return ["merge", "-c", c.file("merge.yaml", text), "--output-dir", str(c.out)]


@case("merge-unknown-method")
def _(c):
    return merge(c, f"merge_method: slurp\nmodels:\n  - model: {c.tiny}\n  - model: {c.tiny}\n"), ["merge.yaml:1", "slurp", "did you mean 'slerp'"]


@case("merge-missing-model")
def _(c):
    return merge(
        c, f"merge_method: linear\nmodels:\n  - model: {c.tiny}\n    parameters: {{weight: 0.5}}\n  - model: {c.tmp}/gone\n    parameters: {{weight: 0.5}}\n"
    ), ["merge.yaml:5", "models[1].model", "gone"]


@case("merge-unknown-parameter")
def _(c):
    return merge(c, f"merge_method: linear\nmodels:\n  - model: {c.tiny}\n    parameters: {{wieght: 0.5}}\n  - model: {c.tiny}\n"), [
        "merge.yaml:4",
        "wieght",
        "did you mean 'weight'",
    ]


@case("merge-tab-indent")
def _(c):
    return merge(c, "merge_method: linear\nmodels:\n\t- model: a\n"), ["merge.yaml:3", "tabs"]


@case("merge-not-a-mapping")
def _(c):
    return merge(c, "- a\n"), ["merge.yaml", "must be a mapping"]


@case("merge-recipe-missing")
def _(c):
    return ["merge", "-c", str(c.tmp / "nope.yaml"), "--output-dir", str(c.out)], ["nope.yaml", "cannot read the merge recipe"]


def small_model(folder: Path, **config) -> str:
    """A random Llama with a 512-token vocabulary (no tokenizer): cheap to write, enough for the shape checks."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    settings = dict(
        vocab_size=512,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(LlamaConfig(**{**settings, **config})).save_pretrained(folder)
    return str(folder)


@case("merge-mismatched-shapes")
def _(c):
    a, b = small_model(c.tmp / "a"), small_model(c.tmp / "b", intermediate_size=96)
    return merge(c, f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 0.5}}\n  - model: {b}\n    parameters: {{weight: 0.5}}\n"), [
        "mlp.down_proj.weight",
        "32x64",
        "32x96",
        "same size",
    ]


@case("merge-flags-one-model")
def _(c):
    return ["merge", "-m", c.tiny, "--output-dir", str(c.out)], ["at least two --model"]


# ------------------------------------------------------------------ pipeline files


def pipeline(c, stages: str, command: str = "pipeline") -> list[str]:
    return [command, "-c", c.file("pipe.yaml", f"name: p\noutput_dir: {c.out}\nstages:\n{stages}")]


@case("pipeline-unknown-stage")
def _(c):
    return pipeline(c, "  - {name: a, stage: sfx}\n"), ["pipe.yaml", "stages[0] (a)", "stage kinds"]


@case("pipeline-forward-reference")
def _(c):
    return pipeline(c, "  - {name: a, stage: dpo, model: sft}\n  - {name: sft, stage: sft}\n"), ["pipe.yaml", "stages[0] (a)", "'sft' is a later stage"]


@case("pipeline-self-reference")
def _(c):
    return pipeline(c, "  - {name: a, stage: sft, model: a}\n"), ["pipe.yaml", "stages[0] (a)", "later stage (or this one)"]


@case("pipeline-duplicate-name")
def _(c):
    return pipeline(c, "  - {name: a, stage: sft}\n  - {name: a, stage: dpo}\n"), ["pipe.yaml", "stages[1] (a)", "two stages are named 'a'"]


@case("pipeline-undefined-reference")
def _(c):
    return pipeline(c, "  - {name: a, stage: sft}\n  - {name: e, stage: eval, models: [a, nothere]}\n"), [
        "pipe.yaml",
        "stages[1] (e)",
        "'nothere'",
        "stages above: a",
    ]


@case("pipeline-bad-merge-after-training")
def _(c):
    return pipeline(
        c, f"  - {{name: a, stage: sft, model: {c.tiny}, set: {{training.max_steps: 1}}}}\n  - {{name: m, stage: merge, merge_method: slurp, models: [a, a]}}\n"
    ), ["pipe.yaml", "stage m", "slurp"]


@case("pipeline-bad-training-recipe")
def _(c):
    return pipeline(c, "  - {name: a, stage: sft, set: {training.max_stepz: 1}}\n"), ["pipe.yaml", "stage a", "did you mean 'training.max_steps'"]


@case("pipeline-no-stages")
def _(c):
    return ["pipeline", "-c", c.file("pipe.yaml", f"output_dir: {c.out}\nstages: []\n")], ["pipe.yaml", "stages"]


@case("pipeline-unknown-stage-field")
def _(c):
    return pipeline(c, "  - {name: a, stage: sft, modle: x}\n"), ["pipe.yaml", "stages[0] (a)", "unknown field 'modle'"]


@case("pipeline-yaml-syntax")
def _(c):
    return pipeline(c, "  - {name: a, stage: sft\n"), ["pipe.yaml:5", "not valid YAML"]


@case("plan-pipeline-forward-reference")
def _(c):
    return pipeline(c, "  - {name: a, stage: dpo, model: sft}\n  - {name: sft, stage: sft}\n", "plan"), ["pipe.yaml", "'sft' is a later stage"]


# ------------------------------------------------------------------ other commands' files


@case("generate-prompts-deep-nesting")
def _(c):
    return ["generate", "--model", c.tiny, "--prompts-file", c.file("p.jsonl", '{"prompt": ' + "[" * 10000 + "]" * 10000 + "}\n")], [
        "p.jsonl:1",
        "nested too deeply",
    ]


@case("generate-prompts-bad-row")
def _(c):
    return ["generate", "--model", c.tiny, "--prompts-file", c.jsonl("p.jsonl", [{"prompt": "hi"}, {"prompt": 5}])], ["p.jsonl:2", "'prompt' is a int"]


@case("eval-data-latin1")
def _(c):
    return ["eval", "--model", c.tiny, "--data", c.file("data.jsonl", (json.dumps(chat("café?"), ensure_ascii=False) + "\n").encode("latin-1"))], [
        "data.jsonl:1",
        "not UTF-8",
    ]


@case("plan-data-png")
def _(c):
    return ["plan", "--model", c.tiny, "--dataset", c.file("data.jsonl", b"\x89PNG\r\n\x1a\n")], ["data.jsonl", "PNG"]


@case("export-unknown-format")
def _(c):
    return ["export", c.tiny, "--format", "zip", "--output-dir", str(c.out)], ["--format", "zip"]


# ------------------------------------------------------------------ the test


def squash(text: str) -> str:
    return "".join(text.split())


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("TUNESMITH_DEBUG", raising=False)
    monkeypatch.delenv("TUNESMITH_TRUST_PICKLE_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)  # a default runs/ or exports/ would appear here


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, tmp_path, request, capsys, env, one_thread):
    c = Ctx(tmp_path, request)
    argv, expected = CASES[name](c)
    before = {p for p in tmp_path.rglob("*")}
    code = run(argv)
    captured = capsys.readouterr()
    text = captured.err + captured.out
    assert code == 2, text
    assert "Traceback" not in text and "unexpected" not in text, text
    assert text.count("error:") == 1 and "hint:" in text, text
    for part in expected:
        assert squash(part) in squash(text), (part, text)
    assert not (tmp_path / "logs").exists(), "no crash log"
    assert not c.out.exists(), f"{c.out} was created"
    created = {p for p in tmp_path.rglob("*")} - before
    assert not [p for p in created if p.name in ("summary.json", "model", "recipe.yaml", "metrics.jsonl") or p.parent == tmp_path], created
