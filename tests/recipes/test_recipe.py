import pytest

from tunesmith.errors import RecipeError
from tunesmith.recipes import Recipe, dump_recipe, load_recipe


def test_defaults_live_in_schema():
    r = load_recipe()
    assert r == Recipe()
    assert r.lora.r == 16 and r.lora.alpha == 32  # alpha defaults to 2*r
    assert load_recipe(None, ["lora.r=8"]).lora.alpha == 16
    assert load_recipe(None, ["lora.r=8", "lora.lora_alpha=8"]).lora.alpha == 8


def test_unknown_key_names_file_line_and_suggests(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("model:\n  name: x\ntraining:\n  learning_rat: 0.001\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(f)
    msg = str(exc.value)
    assert f"{f}:4: unknown field 'training.learning_rat'; did you mean 'training.learning_rate'?" in msg


def test_bad_value_names_line_and_value(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("training:\n  per_device_train_batch_size: -2\n")
    with pytest.raises(RecipeError, match=r"r.yaml:2: training.per_device_train_batch_size: .*greater than or equal to 1 \(got -2\)"):
        load_recipe(f)


def test_override_errors_point_at_command_line():
    with pytest.raises(RecipeError, match=r"command line: unknown field 'lora.rr'; did you mean 'lora.r'\?"):
        load_recipe(None, ["lora.rr=3"])
    with pytest.raises(RecipeError, match="has no '='"):
        load_recipe(None, ["training.learning_rate"])


def test_overrides_parse_yaml_values_and_scientific_notation(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("training:\n  learning_rate: 0.1\n  report_to: tensorboard\n")
    r = load_recipe(f, ["training.learning_rate=1e-4", "data.packing=true", "lora.layers=[0, 1]"])
    assert r.training.learning_rate == 1e-4
    assert r.data.packing is True
    assert r.lora.layers == [0, 1]
    assert r.training.report_to == ["tensorboard"]


def test_invalid_yaml_has_line(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("training:\n  a: [1, 2\n")
    with pytest.raises(RecipeError, match=r"r.yaml:\d+: not valid YAML"):
        load_recipe(f)


def test_dump_round_trips(tmp_path):
    r = load_recipe(None, ["training.max_steps=7", "method=full"])
    f = tmp_path / "again.yaml"
    f.write_text(dump_recipe(r))
    assert load_recipe(f) == r


def test_max_steps_zero_is_explained():
    with pytest.raises(RecipeError, match="max_steps is 0"):
        load_recipe(None, ["training.max_steps=0"])
