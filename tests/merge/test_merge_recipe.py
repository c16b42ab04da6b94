"""Merge recipes: mergekit's YAML shape, checked on load, with errors that name the file, line and field."""

from __future__ import annotations

import pytest

from tunesmith.errors import RecipeError
from tunesmith.merge import MergeRecipe, load_merge_recipe, recipe_from_flags, slerp_recipe

MERGEKIT_EXAMPLE = """\
merge_method: slerp
base_model: runs/sft
slices:
  - sources:
      - model: runs/sft
        layer_range: [0, 2]
      - model: runs/dpo
        layer_range: [0, 2]
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
tokenizer:
  source: base
chat_template: chatml
dtype: bfloat16
"""


def write(tmp_path, text, name="merge.yaml"):
    file = tmp_path / name
    file.write_text(text)
    return file


def error(tmp_path, text) -> RecipeError:
    file = write(tmp_path, text)
    with pytest.raises(RecipeError) as caught:
        load_merge_recipe(file)
    assert str(file) in caught.value.where
    return caught.value


def test_mergekit_example_loads(tmp_path):
    recipe = load_merge_recipe(write(tmp_path, MERGEKIT_EXAMPLE))
    assert recipe.method == "slerp" and recipe.base_model == "runs/sft" and recipe.tokenizer_source == "base"
    assert recipe.references() == ["runs/sft", "runs/dpo"]
    assert recipe.with_models({"runs/sft": "/abs/sft", "runs/dpo": "/abs/dpo"})["slices"][0]["sources"][1]["model"] == "/abs/dpo"


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    err = error(tmp_path, "merge_method: linear\nmodels:\n  - model: [a\n")
    assert "not valid YAML" in err.message and err.where.endswith(":4")


def test_unknown_method_suggests_the_closest(tmp_path):
    err = error(tmp_path, "base_model: a\nmerge_method: slrep\nmodels: [{model: a}, {model: b}]\n")
    assert err.message == "unknown merge_method 'slrep'" and err.where.endswith(":2") and "'slerp'" in err.hint


def test_missing_models(tmp_path):
    err = error(tmp_path, "merge_method: linear\n")
    assert err.message == "the recipe lists no models to merge" and "models:" in err.hint


def test_missing_method(tmp_path):
    assert error(tmp_path, "models: [{model: a}]\n").message == "merge_method is missing"


def test_a_bad_parameter_value_names_the_field_and_its_line(tmp_path):
    err = error(tmp_path, "merge_method: linear\nmodels:\n  - model: a\n    parameters:\n      weight: {high: 1}\n")
    assert err.message == "models[0].parameters.weight cannot be {'high': 1}" and err.where.endswith(":5")


def test_a_misspelt_parameter(tmp_path):
    err = error(tmp_path, "merge_method: ties\nbase_model: a\nmodels:\n  - model: b\n    parameters: {weight: 1, densty: 0.5}\n")
    assert err.message == "models[0].parameters.densty is not a parameter of ties" and "'density'" in err.hint


def test_a_method_that_needs_a_base(tmp_path):
    err = error(tmp_path, "merge_method: ties\nmodels:\n  - model: a\n    parameters: {weight: 1}\n")
    assert "requires a base input" in err.message and "base_model" in err.hint


def test_a_required_parameter_left_out(tmp_path):
    err = error(tmp_path, "merge_method: slerp\nbase_model: a\nmodels: [{model: a}, {model: b}]\n")
    assert err.message == "slerp needs the parameter 't'"
    err = error(tmp_path, "merge_method: task_arithmetic\nbase_model: a\nmodels:\n  - model: b\n  - model: c\n    parameters: {weight: 1}\n")
    assert err.message == "task_arithmetic needs 'weight' for models[0] ('b')" and err.where.endswith(":4")


def test_slerp_from_flags_is_mergekits_example():
    recipe = slerp_recipe("a", "b", 0.5, attn_t=[0, 0.5, 0.3, 0.7, 1], mlp_t=[1, 0.5, 0.7, 0.3, 0])
    assert recipe.data["base_model"] == "a" and [m["model"] for m in recipe.data["models"]] == ["a", "b"]
    assert recipe.data["parameters"]["t"] == [
        {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
        {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
        {"value": 0.5},
    ]
    assert "value: [0, 0.5, 0.3, 0.7, 1]" in recipe.to_yaml()  # gradients on one line, as mergekit writes them
    assert slerp_recipe("a", "b", 0.3).data["parameters"] == {"t": 0.3}


def test_recipe_from_flags():
    recipe = recipe_from_flags("ties", ["a", "b"], base="base", weights=[0.7, 0.3], density=0.5)
    assert recipe.data["models"] == [
        {"model": "a", "parameters": {"weight": 0.7, "density": 0.5}},
        {"model": "b", "parameters": {"weight": 0.3, "density": 0.5}},
    ]
    assert recipe_from_flags("slerp", ["a", "b"], t=0.5).base_model == "a"
    with pytest.raises(RecipeError, match="--weights has 1 values for 2 models"):
        recipe_from_flags("linear", ["a", "b"], weights=[1.0])
    with pytest.raises(RecipeError, match="requires a base input") as caught:
        recipe_from_flags("ties", ["a", "b"], weights=[1, 1])
    assert caught.value.where == "merge flags"


def test_recipe_round_trips_through_yaml(tmp_path):
    recipe = load_merge_recipe(write(tmp_path, MERGEKIT_EXAMPLE))
    again = load_merge_recipe(write(tmp_path, recipe.to_yaml(), "again.yaml"))
    assert again.data == recipe.data


def test_recipe_built_in_python_is_checked_too():
    with pytest.raises(RecipeError, match="unknown merge_method 'avg'"):
        MergeRecipe({"merge_method": "avg", "models": [{"model": "a"}]})
