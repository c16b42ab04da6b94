"""`export_model`: an adapter merged into its full-precision base, saved as a standard model; nothing half-written."""

import json

import pytest
import torch

from tunesmith.errors import TunesmithError
from tunesmith.export.run import export_model


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    """A LoRA adapter on the tiny model whose B matrices are not zero (so merging changes the weights)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunesmith.models import load_tokenizer

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    path = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(path)
    load_tokenizer(tiny_model_dir).save_pretrained(path)
    return str(path)


def logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def test_merged_export_equals_the_adapter_applied(adapter_dir, tmp_path, smol_tokenizer):
    from transformers import AutoModelForCausalLM, GenerationConfig

    from tunesmith.models import load_model

    lines = []
    result = export_model(adapter_dir, tmp_path / "out", ["merged"], log=lines.append)
    out = tmp_path / "out"
    assert result.formats == ["merged"] and (out / "model" / "model.safetensors").is_file()
    assert not (out / "model" / "adapter_config.json").exists()
    ids = torch.tensor([smol_tokenizer("Arr, what be the capital o' France?")["input_ids"]])
    exported = AutoModelForCausalLM.from_pretrained(out / "model")
    with_adapter = load_model(adapter_dir)  # base + PeftModel, not merged
    assert torch.allclose(logits(exported, ids), logits(with_adapter, ids), atol=1e-4)
    base = AutoModelForCausalLM.from_pretrained(load_model.__globals__["resolve_model"](adapter_dir).path)
    assert not torch.allclose(logits(exported, ids), logits(base, ids), atol=1e-3)  # the adapter did something
    eos = GenerationConfig.from_pretrained(out / "model").eos_token_id
    assert smol_tokenizer.convert_tokens_to_ids("<|im_end|>") in (eos if isinstance(eos, list) else [eos])
    info = json.loads((out / "export.json").read_text())
    assert info["merged"]["adapters_merged"] == 1 and info["formats"] == ["merged"]
    card = (out / "README.md").read_text()
    assert "## Lineage" in card and "1 adapter(s) merged in fp32" in card
    assert not list(tmp_path.glob(".*tmp"))


def test_bf16_export_stores_bf16(adapter_dir, tmp_path):
    from safetensors import safe_open

    export_model(adapter_dir, tmp_path / "bf16", ["merged"], dtype="bf16", log=lambda _: None)
    with safe_open(tmp_path / "bf16" / "model" / "model.safetensors", "pt") as f:
        assert f.get_tensor("model.layers.0.self_attn.q_proj.weight").dtype == torch.bfloat16


def test_refusals_leave_nothing_behind(adapter_dir, tmp_path, monkeypatch):
    with pytest.raises(TunesmithError, match="unknown export format 'onnx'"):
        export_model(adapter_dir, tmp_path / "a", ["onnx"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("mine")
    with pytest.raises(TunesmithError, match="already exists and is not empty"):
        export_model(adapter_dir, tmp_path / "full", ["merged"])
    with pytest.raises(TunesmithError, match="neither a built-in name"):
        export_model("no-such-model", tmp_path / "b", ["merged"])

    import tunesmith.export.card as card

    def broken(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(card, "write_card", broken)  # fails after the model was written
    with pytest.raises(RuntimeError):
        export_model(adapter_dir, tmp_path / "c", ["merged"], log=lambda _: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]  # no c, no .c.tmp
