"""The embedded SmolLM2-135M by its built-in name, through both paths (minutes on a CPU: -m slow)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

BUILTIN = "smollm2-135m-instruct"


def test_builtin_with_two_adapters_on_both_paths(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    from tunesmith.merge import MergeRecipe, run_merge
    from tunesmith.models import load_model, load_tokenizer

    adapters = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        model = get_peft_model(load_model(BUILTIN), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        model.save_pretrained(tmp_path / f"lora-{seed}")
        adapters.append(str(tmp_path / f"lora-{seed}"))
    recipe = MergeRecipe(
        {
            "merge_method": "task_arithmetic",
            "base_model": BUILTIN,
            "dtype": "float32",
            "models": [{"model": a, "parameters": {"weight": 0.5}} for a in adapters],
        }
    )
    quiet = lambda *a: None  # noqa: E731
    adapter = run_merge(recipe, tmp_path / "adapter", log=quiet)
    full = run_merge(recipe, tmp_path / "full", path="full", log=quiet)
    assert (adapter.path, full.path) == ("adapter", "full")
    a, b = (load_file(str(r.model_dir / "model.safetensors")) for r in (adapter, full))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in b)
    tokenizer = load_tokenizer(str(full.model_dir))
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    assert torch.isfinite(load_model(str(full.model_dir))(ids).logits).all()
