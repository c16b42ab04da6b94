import json

import pytest

from tunesmith.errors import ModelError
from tunesmith.models import load_model, resolve_model


def test_builtin_is_cached_transformers_dir():
    src = resolve_model("smollm2-135m-instruct")
    assert src.adapter is None
    cfg = json.loads(open(f"{src.path}/config.json").read())
    assert cfg["vocab_size"] == 49152 and "quantization_config" not in cfg


def test_typo_gets_did_you_mean():
    with pytest.raises(ModelError, match="did you mean 'smollm2-135m-instruct'"):
        resolve_model("smollm2-135m-instrct")


def test_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(Exception, match="Hub .* cannot be reached"):
        resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_directory_without_model_is_explained(tmp_path):
    with pytest.raises(ModelError, match="holds no model"):
        resolve_model(str(tmp_path))


def test_adapter_dir_loads_its_base(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    cfg_file = tmp_path / "adapter" / "adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["base_model_name_or_path"] = tiny_model_dir
    cfg_file.write_text(json.dumps(cfg))
    src = resolve_model(str(tmp_path / "adapter"))
    assert src.path == tiny_model_dir and src.adapter == str(tmp_path / "adapter")
    model = load_model(src)
    from peft import PeftModel

    assert isinstance(model, PeftModel)


def test_adapter_on_a_builtin_base_moved_cache(tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/elsewhere/cache/models/smollm2-135m-instruct-0123456789"}))
    src = resolve_model(str(adapter))
    assert src.path == resolve_model("smollm2-135m-instruct").path and src.adapter == str(adapter)


def test_a_loaded_tokenizer_is_reused_as_a_copy_until_its_files_change(tiny_model_dir, tmp_path):
    """load_tokenizer keeps what it loaded: each caller gets its own copy (a change to one is not seen by the next), and a
    change to the files on disk is read again."""
    import shutil

    from tunesmith.models.load import load_tokenizer

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    first = load_tokenizer(str(folder))
    first.pad_token = "<|im_start|>"
    first.chat_template = "changed"
    second = load_tokenizer(str(folder))
    assert second is not first and second.pad_token == second.eos_token and second.chat_template != "changed"
    assert second("Ahoy, matey!").input_ids == first("Ahoy, matey!").input_ids
    first.save_pretrained(folder)  # new files: the next load reads them
    third = load_tokenizer(str(folder))
    assert third.pad_token == "<|im_start|>" and third.chat_template == "changed"
