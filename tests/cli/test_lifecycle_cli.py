"""The merge, export and pipeline commands as a user types them: plans, transcripts, and refusals with exit status 2."""

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from tunesmith.cli.main import _register, app

_register()
runner = CliRunner()


def tunesmith(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tunesmith", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.fixture
def tiny_pipeline(tmp_path, tiny_model_dir):
    chats = tmp_path / "chats.jsonl"
    chats.write_text(
        "".join(json.dumps({"messages": [{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": f"Arr {i}"}]}) + "\n" for i in range(20))
    )
    spec = {
        "name": "tiny",
        "output_dir": str(tmp_path / "out"),
        "stages": [
            {"name": "sft", "stage": "sft", "model": tiny_model_dir, "dataset": str(chats), "set": {"training.max_steps": 6, "model.precision": "fp32"}},
            {"name": "dpo", "stage": "dpo", "model": "sft", "set": {"training.max_steps": 3, "model.precision": "fp32"}},
            {"name": "m", "stage": "merge", "merge_method": "slerp", "base_model": "sft", "models": ["sft", "dpo"], "parameters": {"t": 0.5}},
            {"name": "e", "stage": "eval", "models": ["m", "sft"]},
            {"name": "x", "stage": "export", "model": "m", "formats": ["gguf"]},
        ],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_plan_of_a_pipeline_gives_each_stage_and_the_total(tiny_pipeline):
    result = runner.invoke(app, ["plan", "-c", str(tiny_pipeline), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    stages = plan["stages"]
    assert [s["name"] for s in stages] == ["sft", "dpo", "m", "e", "x"]
    assert stages[0]["plan"]["total_steps"] == 6 and stages[1]["plan"]["total_steps"] == 3
    assert stages[1]["plan"]["stage"] == "dpo" and stages[2]["plan"] is None
    assert all(s["seconds"] > 0 for s in stages)
    assert plan["total_seconds"] == pytest.approx(sum(s["seconds"] for s in stages), abs=0.3)
    assert not (tiny_pipeline.parent / "out").exists()  # planning writes nothing

    text = runner.invoke(app, ["plan", "-c", str(tiny_pipeline)])
    assert text.exit_code == 0, text.output
    assert "── sft (sft) ──" in text.output and "── dpo (dpo) ──" in text.output and "estimated time on this machine" in text.output and "total" in text.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["merge", "-m", "only-one"], "at least two --model values"),
        (["export", "no-such-dir/model", "--format", "merged"], "is not a local path"),
        (["export", "smollm2-135m-instruct", "--format", "onnx"], "unknown export format 'onnx'"),
        (["pipeline", "-c", "missing.yaml"], "cannot read the pipeline file"),
    ],
)
def test_refusals_are_one_sentence(tmp_path, args, message, monkeypatch):
    from tunesmith.errors import TunesmithError

    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert isinstance(result.exception, TunesmithError), result.output  # main() prints it as one sentence, exit 2
    assert message in result.exception.format()
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_bad_pipeline_names_the_stage(tmp_path, tiny_pipeline):
    data = yaml.safe_load(tiny_pipeline.read_text())
    data["stages"][1]["model"] = "x"  # the export, below it
    tiny_pipeline.write_text(yaml.safe_dump(data))
    done = tunesmith("pipeline", "-c", str(tiny_pipeline))
    assert done.returncode == 2 and "stages[1] (dpo): 'x' is a later stage" in " ".join(done.stderr.split())
