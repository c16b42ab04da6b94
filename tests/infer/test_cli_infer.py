"""`tunesmith generate`: prompts from flags and files, JSONL results, errors that name the file and line."""

import json

import pytest
from typer.testing import CliRunner

from tunesmith.cli.main import _register, app
from tunesmith.errors import TunesmithError

_register()
runner = CliRunner()


def test_generate_batch_file_to_jsonl(tiny_model_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n\n" + json.dumps({"messages": [{"role": "user", "content": "yo"}]}) + "\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(
        app,
        [
            "generate",
            "-m",
            tiny_model_dir,
            "--prompts-file",
            str(prompts),
            "-o",
            str(out),
            "--max-new-tokens",
            "4",
            "--batch-size",
            "2",
            "--temperature",
            "0.8",
            "--top-k",
            "20",
            "--min-p",
            "0.01",
            "--seed",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["hi", [{"role": "user", "content": "yo"}]]
    assert all(set(r) == {"prompt", "text", "finish_reason", "prompt_tokens", "completion_tokens"} and r["completion_tokens"] <= 4 for r in rows)
    again = tmp_path / "again.jsonl"
    runner.invoke(
        app,
        [
            "generate",
            "-m",
            tiny_model_dir,
            "--prompts-file",
            str(prompts),
            "-o",
            str(again),
            "--max-new-tokens",
            "4",
            "--batch-size",
            "2",
            "--temperature",
            "0.8",
            "--top-k",
            "20",
            "--min-p",
            "0.01",
            "--seed",
            "3",
        ],
    )
    assert again.read_text() == out.read_text()  # same seed, same output


def test_generate_text_file_and_prompt_flags(tiny_model_dir, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("one\n\ntwo\n")
    result = runner.invoke(app, ["generate", "-m", tiny_model_dir, "-p", "zero", "--prompts-file", str(prompts), "--no-chat", "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output
    assert result.output.index("> zero\n") < result.output.index("> one\n") < result.output.index("> two\n")


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prompt": "hi"}\n{oops\n', ":2: not valid JSON"),
        ('{"prompt": "hi"}\n{"text": "x"}\n', ":2: expected an object with a 'prompt' string or a 'messages' list"),
        ('{"messages": [{"role": "robot", "content": "x"}]}\n', ":1: messages[0].role is 'robot'"),
        ('{"prompt": ""}\n', ":1: 'prompt' is empty"),
        ("\n\n", "has no prompts"),
    ],
)
def test_bad_prompts_file_names_the_line(tiny_model_dir, tmp_path, content, message):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(content)
    result = runner.invoke(app, ["generate", "-m", tiny_model_dir, "--prompts-file", str(prompts)])
    assert isinstance(result.exception, TunesmithError) and message in str(result.exception)


def test_bad_flags_are_errors_not_tracebacks(tiny_model_dir, tmp_path):
    cases = [["--top-p", "1.5", "-p", "x"], [], ["--prompts-file", str(tmp_path / "missing.txt")], ["-p", "x", "-o", str(tmp_path / "no" / "o.jsonl")]]
    for extra in cases:
        result = runner.invoke(app, ["generate", "-m", tiny_model_dir, *extra])
        assert isinstance(result.exception, TunesmithError), (extra, result.exception)


def test_sampling_flags_are_declared_once_with_per_command_defaults():
    from dataclasses import fields

    import typer

    from tunesmith.cli.sampling_options import SAMPLING_FLAGS, sampling_options
    from tunesmith.infer import SamplingParams

    assert {name: flag[1] for name, flag in SAMPLING_FLAGS.items()} == {f.name: f.default for f in fields(SamplingParams)}
    seen = []
    demo = typer.Typer()

    @demo.command()
    @sampling_options(temperature=0.7, top_p=0.95)
    def cmd(name: str = typer.Option("x"), params: SamplingParams = None, seed: int = typer.Option(0)):
        seen.append((name, params, seed))

    assert runner.invoke(demo, []).exit_code == 0
    assert runner.invoke(demo, ["--top-k", "5", "--seed", "2"]).exit_code == 0
    assert seen == [("x", SamplingParams(temperature=0.7, top_p=0.95), 0), ("x", SamplingParams(temperature=0.7, top_k=5, top_p=0.95), 2)]
    bad = runner.invoke(demo, ["--top-p", "1.5"])
    assert isinstance(bad.exception, TunesmithError) and "top_p" in str(bad.exception)
