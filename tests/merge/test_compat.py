"""Models that cannot be merged are refused before any work, with a sentence naming the tensor and both models."""

from __future__ import annotations

import json
import shutil

import pytest

from tunesmith.errors import ModelError, TunesmithError
from tunesmith.merge import MergeRecipe, check_compatible
from tunesmith.models.load import resolve_model


def linear(*models):
    return MergeRecipe({"merge_method": "linear", "models": [{"model": m, "parameters": {"weight": 1.0}} for m in models]})


def refused(merge, recipe, out, match):
    with pytest.raises(ModelError, match=match) as caught:
        merge(recipe, out)
    assert not out.exists() and not out.parent.joinpath(f".{out.name}.tmp").exists()
    return str(caught.value)


def test_a_tensor_of_another_shape_is_named_with_both_models(tiny_model_dir, make_model, merge, out):
    wide = make_model("wide", intermediate_size=256)
    message = refused(merge, linear(tiny_model_dir, wide), out, "down_proj")
    assert f"model.layers.0.mlp.down_proj.weight is 64x128 in '{tiny_model_dir}' but 64x256 in '{wide}'" in message


def test_another_vocabulary_size(tiny_model_dir, make_model, merge, out):
    bigger = make_model("bigger-vocab", vocab_size=49152 + 64)
    refused(merge, linear(tiny_model_dir, bigger), out, "has a vocabulary of 49152 tokens but .* has 49216")


def test_another_architecture(tiny_model_dir, make_model, merge, out):
    mistral = make_model("mistral", cls="mistral")  # same tensor names and shapes: only the architecture differs
    refused(merge, linear(tiny_model_dir, mistral), out, "is a LlamaForCausalLM but .* is a MistralForCausalLM")


def test_another_depth(tiny_model_dir, make_model, merge, out):
    deeper = make_model("three-layers", num_hidden_layers=3)
    refused(merge, linear(tiny_model_dir, deeper), out, r"model\.layers\.2\..* is in .*three-layers' but not in")


def test_another_tokenizer_unless_the_recipe_names_a_tokenizer_source(tiny_model_dir, merge_dir):
    other = merge_dir / "other-tokenizer"
    shutil.copytree(tiny_model_dir, other)
    data = json.loads((other / "tokenizer.json").read_text())
    vocab = data["model"]["vocab"]
    token = next(t for t, i in vocab.items() if i == 1000)  # "()"
    vocab["<a token of our own>"] = vocab.pop(token)
    (other / "tokenizer.json").write_text(json.dumps(data))
    sources = [resolve_model(tiny_model_dir), resolve_model(str(other))]
    with pytest.raises(ModelError, match="different tokenizers: token id 1000 is '\\(\\)' in the first but '<a token of our own>' in the second"):
        check_compatible(sources)
    check_compatible(sources, tokenizer_source="base")


def test_an_adapter_is_checked_as_its_base(tiny_model_dir, loras, variants):
    check_compatible([resolve_model(loras["a"]), resolve_model(variants["b"]), resolve_model(tiny_model_dir)])


def test_a_model_that_is_not_there_names_the_field_and_line(tiny_model_dir, tmp_path, merge, out):
    from tunesmith.merge import load_merge_recipe

    file = tmp_path / "merge.yaml"
    file.write_text(
        f"merge_method: linear\nmodels:\n  - model: {tiny_model_dir}\n    parameters: {{weight: 1}}\n"
        "  - model: ./no-such-model\n    parameters: {weight: 1}\n"
    )
    with pytest.raises(ModelError) as caught:
        merge(load_merge_recipe(file), out)
    assert caught.value.where == f"{file}:5 (models[1].model)" and "no-such-model" in caught.value.message
    assert not out.exists()


def test_a_non_empty_output_directory_is_refused(tiny_model_dir, variants, merge, out):
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(TunesmithError, match="already exists and is not empty"):
        merge(linear(tiny_model_dir, variants["b"]), out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
