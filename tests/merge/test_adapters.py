"""The adapter path (PEFT add_weighted_adapter) against the full path (materialise, then mergekit)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tunesmith.errors import RecipeError
from tunesmith.merge import MergeRecipe
from tunesmith.merge.adapters import plan_adapter_merge
from tunesmith.merge.inputs import resolve_inputs

# fp32 throughout; the two paths differ only in summation order (W + Σ c_i s_i B_i A_i as one rank-12
# product vs. each W_i = W + s_i B_i A_i, then Σ c_i W_i): observed max |diff| ~1e-8 on weights ~0.1.
TOLERANCE = dict(rtol=0, atol=1e-6)


def weights(model_dir) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def assert_same_model(a, b):
    ta, tb = weights(a), weights(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        torch.testing.assert_close(ta[name], tb[name], **TOLERANCE, msg=lambda m, name=name: f"{name}: {m}")


def linear_recipe(loras, base=None, method="linear", **top):
    data = {
        "merge_method": method,
        "dtype": "float32",
        "models": [{"model": loras["a"], "parameters": {"weight": 0.3}}, {"model": loras["b"], "parameters": {"weight": 0.7}}],
    }
    if base:
        data["base_model"] = base
    if top:
        data["parameters"] = top
    return MergeRecipe(data)


def test_linear_of_adapters_equals_the_materialised_full_merge(loras, tiny_model_dir, merge, tmp_path):
    """User's linear -> PEFT 'cat' (ranks 4 + 8 -> 12): W + 0.3·ΔW_a + 0.7·ΔW_b exactly, which is what
    mergekit's linear of the two materialised models computes."""
    recipe = linear_recipe(loras)
    adapter = merge(recipe, tmp_path / "adapter")
    full = merge(recipe, tmp_path / "full", path="full")
    assert (adapter.path, full.path) == ("adapter", "full")
    assert_same_model(adapter.model_dir, full.model_dir)
    assert json.loads((adapter.output_dir / "adapter" / "adapter_config.json").read_text())["r"] == 12
    assert json.loads((adapter.output_dir / "merge.json").read_text())["path"] == "adapter"
    # and the adapters did change the weights (a merge of no-ops would pass the comparison too)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert (weights(full.model_dir)[q] - load_file(f"{tiny_model_dir}/model.safetensors")[q]).abs().max() > 1e-2


EXACT_CASES = {
    # W + λ Σ w_i ΔW_i, λ = 0.8
    "task_arithmetic": dict(method="task_arithmetic", base=True, top={"lambda": 0.8}),
    # ... divided by Σ w_i = 1.0
    "task_arithmetic-normalized": dict(method="task_arithmetic", base=True, top={"lambda": 0.5, "normalize": True}),
    # the base is one of linear's inputs, weight 2: W + (0.3 ΔW_a + 0.7 ΔW_b) / 3
    "linear-with-base": dict(method="linear", base=True, top={"weight": 2.0}),
    # weights summing to 1 need no normalizing
    "linear-unnormalized": dict(method="linear", top={"normalize": False}),
}


@pytest.mark.parametrize("case", list(EXACT_CASES))
def test_other_exact_adapter_merges_equal_the_full_merge(case, loras, tiny_model_dir, merge, tmp_path):
    spec = EXACT_CASES[case]
    recipe = linear_recipe(loras, base=tiny_model_dir if spec.get("base") else None, method=spec["method"], **spec["top"])
    adapter = merge(recipe, tmp_path / "adapter")
    assert adapter.path == "adapter"
    assert_same_model(adapter.model_dir, merge(recipe, tmp_path / "full", path="full").model_dir)


def test_the_merged_adapter_loads_on_its_base_like_the_merged_model(loras, merge, out):
    from tunesmith.models import load_model

    result = merge(linear_recipe(loras), out)
    on_base = load_model(str(result.adapter_dir), merge_adapter=True).state_dict()
    merged = load_model(str(result.model_dir)).state_dict()
    for name in merged:
        torch.testing.assert_close(on_base[name], merged[name], **TOLERANCE)


def test_ties_on_adapters_takes_the_full_path_unless_the_adapter_path_is_asked_for(loras, tiny_model_dir, merge, tmp_path):
    params = {"weight": 0.5, "density": 0.5}
    recipe = MergeRecipe(
        {
            "merge_method": "ties",
            "base_model": tiny_model_dir,
            "dtype": "float32",
            "models": [{"model": loras["a"], "parameters": params}, {"model": loras["b"], "parameters": params}],
        }
    )
    plan, why = plan_adapter_merge(recipe, resolve_inputs(recipe))
    assert plan is None and why == "ties has no exact adapter form"
    full = merge(recipe, tmp_path / "full")
    assert full.path == "full" and not (full.output_dir / ".inputs").exists()  # the materialised inputs are gone
    assert any("materialised onto its base" in note for note in full.notes)
    forced = merge(recipe, tmp_path / "adapter", path="adapter")
    assert forced.path == "adapter" and any("not mergekit's" in note for note in forced.notes)


def test_a_full_model_among_the_inputs_rules_out_the_adapter_path(loras, variants, merge, out):
    recipe = MergeRecipe(
        {"merge_method": "linear", "models": [{"model": loras["a"], "parameters": {"weight": 0.5}}, {"model": variants["b"], "parameters": {"weight": 0.5}}]}
    )
    with pytest.raises(RecipeError, match="is a full model, not an adapter"):
        merge(recipe, out, path="adapter")
    assert not out.exists()
    assert merge(recipe, out).path == "full"


def test_a_run_directory_is_an_input(loras, merge, tmp_path):
    """A tunesmith run dir (model/ + recipe.yaml) names its model/: here an adapter."""
    run = tmp_path / "runs" / "sft"
    shutil.copytree(loras["a"], run / "model")
    (run / "recipe.yaml").write_text("stage: sft\n")
    recipe = MergeRecipe(
        {"merge_method": "linear", "models": [{"model": str(run), "parameters": {"weight": 0.5}}, {"model": loras["b"], "parameters": {"weight": 0.5}}]}
    )
    result = merge(recipe, tmp_path / "out")
    assert result.path == "adapter" and result.inputs[0] == str(run.resolve())


def test_peft_linear_is_not_the_weighted_sum_of_deltas_but_cat_is(loras, tiny_model_dir):
    """Why a user's linear runs as PEFT 'cat': PEFT's 'linear' mixes the A's and the B's separately,
    (Σ √c_i A_i)(Σ √c_i B_i) != Σ c_i B_i A_i (shown on two rank-4 adapters on the same modules)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), loras["a"], adapter_name="a")
    model.load_adapter(loras["a"], adapter_name="a2")  # same rank and targets, as PEFT's linear requires
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".a2." in name:
                param.copy_(torch.randn_like(param) * param.std())
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    want = 0.3 * layer.get_delta_weight("a") + 0.7 * layer.get_delta_weight("a2")
    for combination, equal in (("cat", True), ("linear", False)):
        model.add_weighted_adapter(["a", "a2"], [0.3, 0.7], combination, combination_type=combination)
        assert torch.allclose(layer.get_delta_weight(combination), want, atol=1e-6) is equal


def stacked_on(adapter: str, under: str, target, *, negate: bool = False) -> str:
    """A copy of `adapter` declared as trained on top of the adapter `under` (a DPO run on an SFT run)."""
    from safetensors.torch import save_file

    shutil.copytree(adapter, target)
    config = json.loads((target / "adapter_config.json").read_text())
    (target / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": under}))
    if negate:  # a different second adapter: B -> -B
        t = load_file(str(target / "adapter_model.safetensors"))
        save_file({k: -v if "lora_B" in k else v for k, v in t.items()}, str(target / "adapter_model.safetensors"))
    return str(target)


def test_adapters_on_an_earlier_stage_merge_on_both_paths(loras, merge, tmp_path):
    from tunesmith.models.load import resolve_model

    dpo = stacked_on(loras["b"], loras["a"], tmp_path / "dpo")
    dpo2 = stacked_on(loras["b"], loras["a"], tmp_path / "dpo2", negate=True)
    recipe = MergeRecipe(
        {"merge_method": "linear", "models": [{"model": dpo, "parameters": {"weight": 0.75}}, {"model": dpo2, "parameters": {"weight": 0.25}}]}
    )
    adapter = merge(recipe, tmp_path / "adapter")
    assert adapter.path == "adapter"
    assert_same_model(adapter.model_dir, merge(recipe, tmp_path / "full", path="full").model_dir)
    assert resolve_model(str(adapter.adapter_dir)).below == (loras["a"],)  # the merged adapter still sits on the SFT one
    # an SFT run and the DPO run on top of it: different stacks, so the full path (mergekit SLERP)
    sft_dpo = merge(
        MergeRecipe({"merge_method": "slerp", "base_model": loras["a"], "parameters": {"t": 0.5}, "models": [{"model": loras["a"]}, {"model": dpo}]}),
        tmp_path / "slerp",
    )
    assert sft_dpo.path == "full"
