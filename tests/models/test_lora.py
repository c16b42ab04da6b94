import pytest

from tunesmith.errors import RecipeError
from tunesmith.models.load import meta_model
from tunesmith.models.lora import build_lora_config, layer_range, lora_parameter_count, select_targets
from tunesmith.recipes import load_recipe


@pytest.fixture(scope="module")
def smol_meta():
    return meta_model("smollm2-135m-instruct")  # 30 layers, hidden 576, kv 192, mlp 1536


def lora(**kw):
    return load_recipe(None, {f"lora.{k}": v for k, v in kw.items()}).lora


def test_layer_thirds_cover_the_stack_once():
    low, mid, high = (layer_range(x, 30) for x in ("low", "mid", "high"))
    assert low == set(range(0, 10)) and mid == set(range(10, 20)) and high == set(range(20, 30))
    assert layer_range("all", 2) == {0, 1}
    with pytest.raises(RecipeError, match="0..29"):
        layer_range([31], 30)


def test_default_selection_is_attention_everywhere(smol_meta):
    targets = select_targets(smol_meta, lora())
    assert {t.kind for t in targets} == {"q_proj", "k_proj", "v_proj", "o_proj"} and len(targets) == 120
    # q, o: 576->576; k, v: 576->192 (3 kv heads of 64); r=16: 16*(in+out) each
    assert lora_parameter_count(targets, 16) == 30 * 16 * (1152 + 768 + 768 + 1152)


def test_presets(smol_meta):
    data = select_targets(smol_meta, lora(preset="limited-data"))
    assert {t.layer for t in data} == set(range(20, 30)) and {t.kind for t in data} == {"q_proj", "v_proj", "up_proj"}
    hw = select_targets(smol_meta, lora(preset="limited-hardware"))
    assert {t.layer for t in hw} == set(range(10, 20)) and {t.kind for t in hw} == {"q_proj", "v_proj"}
    tone = select_targets(smol_meta, lora(preset="precise-tone"))
    assert {t.layer for t in tone if t.kind == "q_proj"} == set(range(10))
    assert {t.layer for t in tone if t.kind == "v_proj"} == set(range(10, 20))
    assert {t.layer for t in tone if t.kind == "down_proj"} == set(range(30))


def test_all_linear_excludes_lm_head(smol_meta):
    targets = select_targets(smol_meta, lora(target_modules="all-linear"))
    assert len(targets) == 30 * 7 and all("lm_head" not in t.name for t in targets)


def test_unknown_module_is_explained(smol_meta):
    with pytest.raises(RecipeError, match=r"(?s)does not have.*q_proj"):
        select_targets(smol_meta, lora(target_modules=["query"]))


@pytest.mark.parametrize("kw", [{}, {"preset": "precise-tone"}, {"use_dora": True, "layers": [1]}])
def test_count_equals_what_peft_creates(tiny_model_dir, kw):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = lora(**kw)
    expected = lora_parameter_count(select_targets(model, cfg), cfg.r, cfg.use_dora)
    peft_model = get_peft_model(model, build_lora_config(model, cfg))
    assert sum(p.numel() for p in peft_model.parameters() if p.requires_grad) == expected
