"""The CLI's error boundary: bad input exits 2 with its sentence; anything unexpected exits 1 with one line and a log file."""

import subprocess
import sys

import pytest

from tunesmith.cli import main as cli_main
from tunesmith.cli import recipe as recipe_cli


@pytest.fixture
def logs(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNESMITH_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("TUNESMITH_DEBUG", raising=False)
    return tmp_path / "logs"


def _explode(*args, **kwargs):
    raise KeyError("deep inside a library")


def test_an_unexpected_exception_gives_one_line_and_a_log_file(logs, monkeypatch, capsys):
    monkeypatch.setattr(recipe_cli, "commented_yaml", _explode)
    assert cli_main.run(["recipe"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unexpected KeyError: 'deep inside a library'" in err
    assert "rerun with --debug" in err
    (log,) = logs.glob("tunesmith-*.log")
    text = log.read_text()
    assert str(log) in err.replace("\n", "")
    assert "command: tunesmith recipe" in text and "Traceback" in text and "_explode" in text


def test_debug_shows_the_traceback_inline(logs, monkeypatch, capsys):
    monkeypatch.setattr(recipe_cli, "commented_yaml", _explode)
    assert cli_main.run(["--debug", "recipe"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "_explode" in err and "rerun with --debug" not in err
    assert len(list(logs.glob("tunesmith-*.log"))) == 1


def test_bad_input_is_a_sentence_and_exit_2_without_a_log(logs, capsys):
    assert cli_main.run(["recipe", "--stage", "sfx"]) == 2
    err = capsys.readouterr().err
    assert "--stage sfx is not a stage" in err and "Traceback" not in err
    assert not logs.exists() or not list(logs.glob("*.log"))


def test_usage_errors_keep_clicks_exit_2(logs, capsys):
    assert cli_main.run(["sft", "--no-such-flag"]) == 2
    assert "No such option" in capsys.readouterr().err


def test_messages_with_brackets_are_printed_verbatim(capsys):
    from tunesmith.errors import DataError

    def bad(*args, **kwargs):
        raise DataError("the reply contains [INST] and [bold]", where="data.jsonl:3")

    recipe_cli.commented_yaml, saved = bad, recipe_cli.commented_yaml
    try:
        assert cli_main.run(["recipe"]) == 2
    finally:
        recipe_cli.commented_yaml = saved
    assert "data.jsonl:3: the reply contains [INST] and [bold]" in capsys.readouterr().err


def test_old_logs_are_pruned(logs, monkeypatch):
    logs.mkdir(parents=True)
    for i in range(cli_main.KEEP_LOGS + 5):
        (logs / f"tunesmith-20000101-0000{i:02d}-1.log").write_text("old")
    path = cli_main.write_crash_log(ValueError("x"), ["recipe"])
    assert path.exists() and len(list(logs.glob("tunesmith-*.log"))) == cli_main.KEEP_LOGS


def test_the_installed_command_goes_through_the_boundary(tmp_path):
    """A real process: `python -m tunesmith` exits 2 on bad input, with no traceback."""
    out = subprocess.run([sys.executable, "-m", "tunesmith", "recipe", "--stage", "nope"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "is not a stage" in out.stderr


def test_a_model_that_fails_to_load_leaves_no_run_directory(tmp_path, tiny_model_dir, one_thread, monkeypatch, capsys):
    """The run directory is made only once data and model have loaded: a late failure leaves nothing that looks like a run."""
    import json as _json

    from tunesmith.errors import ModelError
    from tunesmith.train import scaffold

    def broken(*args, **kwargs):
        raise ModelError("the weights in model.safetensors are damaged", where="model.safetensors")

    monkeypatch.setattr(scaffold, "load_for_training", broken)
    data = tmp_path / "chats.jsonl"
    data.write_text(
        "".join(_json.dumps({"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "arr"}]}) + "\n" for i in range(4))
    )
    out = tmp_path / "run"
    assert cli_main.run(["sft", "--model", tiny_model_dir, "--dataset", str(data), "--output-dir", str(out)]) == 2
    assert "damaged" in capsys.readouterr().err and not out.exists()
