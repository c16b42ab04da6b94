import json

from typer.testing import CliRunner

from tunesmith.cli.main import _register, app

_register()
runner = CliRunner()

ISSUE_PLAN = [
    "plan",
    "--num-examples",
    "1000",
    "--per-device-train-batch-size",
    "4",
    "--gradient-accumulation-steps",
    "4",
    "--num-train-epochs",
    "3",
    "--save-strategy",
    "epoch",
    "--save-total-limit",
    "2",
    "--logging-steps",
    "7",
]


def test_plan_json_has_the_issue_numbers():
    result = runner.invoke(app, [*ISSUE_PLAN, "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)  # progress and notes go to stderr
    assert plan["effective_batch_size"] == 16
    assert plan["steps_per_epoch"] == 63
    assert plan["total_steps"] == 189
    assert plan["checkpoint_steps"] == [63, 126, 189]
    assert plan["kept_checkpoints"] == [126, 189]
    assert plan["logging_steps"] == list(range(7, 190, 7))


def test_plan_text_and_plot(tmp_path):
    png = tmp_path / "lr.png"
    result = runner.invoke(app, [*ISSUE_PLAN, "--plot", str(png)])
    assert result.exit_code == 0, result.output
    assert "16 sequences per step" in result.output and "63, 126, 189" in result.output
    assert png.stat().st_size > 1000


def test_set_and_flags_precedence(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("training:\n  logging_steps: 3\n  max_steps: 10\n")
    result = runner.invoke(app, ["plan", "-c", str(f), "--num-examples", "50", "--set", "training.max_steps=20", "--logging-steps", "5", "--json"])
    plan = json.loads(result.stdout)
    assert plan["total_steps"] == 20 and plan["logging_steps"] == [5, 10, 15, 20]


def test_recipe_command_lists_every_field():
    result = runner.invoke(app, ["recipe"])
    assert result.exit_code == 0
    assert "per_device_train_batch_size: 8  #" in result.output and "lora_alpha: null" in result.output


def test_inspect_modules_marks_preset():
    result = runner.invoke(app, ["inspect", "modules", "--preset", "limited-hardware"])
    assert result.exit_code == 0, result.output
    assert "20 modules selected, r=16: 307,200 trainable parameters"  # 10 layers x 16*((576+576) + (576+192)) in result.output
