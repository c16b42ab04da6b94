"""What a merge leaves behind: a model directory every consumer can load, and a record of how it was made."""

from __future__ import annotations

import json

import pytest

from tunesmith.merge import MergeRecipe, load_merge_recipe, slerp_recipe


@pytest.fixture(scope="module")
def slerped(tiny_model_dir, variants, tmp_path_factory):
    from tunesmith.merge import run_merge

    return run_merge(slerp_recipe(tiny_model_dir, variants["b"], 0.5), tmp_path_factory.mktemp("slerped") / "out", log=lambda *a: None)


def test_the_output_directory_holds_the_model_and_its_record(slerped):
    assert sorted(p.name for p in slerped.output_dir.iterdir()) == ["merge.json", "merge.yaml", "model"]
    assert not (slerped.output_dir.parent / ".out.tmp").exists()
    record = json.loads((slerped.output_dir / "merge.json").read_text())
    assert record["method"] == "slerp" and record["path"] == "full" and record["seconds"] > 0
    assert [i["role"] for i in record["inputs"]] == ["base", "model"]
    assert record["versions"]["mergekit"]


def test_merge_yaml_is_the_recipe_as_run_with_absolute_specs(slerped, tiny_model_dir, variants):
    again = load_merge_recipe(slerped.output_dir / "merge.yaml")
    assert again.method == "slerp" and again.references() == [tiny_model_dir, variants["b"]] == slerped.inputs


def test_the_merged_model_loads_and_chats_like_its_base(slerped, tiny_model_dir):
    import torch
    from transformers import GenerationConfig

    from tunesmith.models import load_model, load_tokenizer

    model = load_model(str(slerped.model_dir))
    tokenizer = load_tokenizer(str(slerped.model_dir))
    assert "<|im_start|>" in tokenizer.chat_template  # copied from the base with its tokenizer
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert torch.isfinite(model(ids).logits).all()
    generation = GenerationConfig.from_pretrained(slerped.model_dir)
    assert generation.eos_token_id == GenerationConfig.from_pretrained(tiny_model_dir).eos_token_id == tokenizer.eos_token_id


def test_the_adapter_path_writes_the_same_kind_of_model_directory_and_a_chat_template_on_request(loras, merge, out):
    from transformers import AutoTokenizer

    recipe = MergeRecipe(
        {
            "merge_method": "linear",
            "chat_template": "llama3",
            "models": [{"model": loras["a"], "parameters": {"weight": 1}}, {"model": loras["b"], "parameters": {"weight": 1}}],
        }
    )
    result = merge(recipe, out)
    assert result.path == "adapter"
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {p.name for p in result.model_dir.iterdir()}
    assert "start_header_id" in AutoTokenizer.from_pretrained(result.model_dir).chat_template  # mergekit's llama3 template
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "adapter" / "tokenizer.json").is_file()


def test_each_phase_is_one_log_line(tiny_model_dir, variants, tmp_path):
    from tunesmith.merge import run_merge

    lines = []
    run_merge(slerp_recipe(tiny_model_dir, variants["b"], 0.5), tmp_path / "out", log=lines.append)
    assert lines[0].startswith("merge: checking 2 models") and "on the full path" in lines[1] and lines[-1].startswith("merge: wrote")
    assert all(line.startswith("merge: ") for line in lines)


def test_a_merge_output_is_itself_a_model_spec(slerped):
    from tunesmith.models.load import resolve_model

    assert resolve_model(str(slerped.output_dir)).path == str(slerped.model_dir)
