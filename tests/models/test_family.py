"""The model-family layer on tiny random models of every family (tests/families.py): the family read from the config,
`tunesmith models`, LoRA names on fused projections, a template without a system role, an unsupported architecture."""

from __future__ import annotations

import json

import pytest
from families import FAMILIES, TOKENS

from tunesmith.errors import ModelError, RecipeError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("family", FAMILIES)
def test_the_family_is_read_from_the_config_and_described(family, family_model):
    from tunesmith.models.describe import describe

    info = describe(family_model(family))
    expected = {"gemma3": "gemma3"}.get(family, family)
    assert info["family"] == expected and info["layers"] == 2 and info["heads"] == 4 and info["kv_heads"] == 2
    stop = TOKENS[family][4]
    assert stop in info["template"]["stop_tokens"]  # the end-of-turn token ends a reply, whatever eos is
    assert info["template"]["system_role"] == ("folded into the first user turn" if family == "gemma2" else "yes")
    if family == "phi3":
        assert info["lora_modules"] == ["o_proj", "qkv_proj", "gate_up_proj", "down_proj"] or set(info["lora_modules"]) == {
            "o_proj",
            "qkv_proj",
            "gate_up_proj",
            "down_proj",
        }
        assert info["lora_names"]["q_proj"] == "qkv_proj" and info["lora_names"]["up_proj"] == "gate_up_proj"
    features = " ".join(info["features"])
    assert ("q/k/v biases" in features) == (family == "qwen2")
    assert ("soft-capping" in features) == (family == "gemma2")
    assert ("q/k RMS norms" in features) == (family in ("qwen3", "gemma3"))


def test_models_lists_every_family_and_describes_one_as_json(family_model):
    from typer.testing import CliRunner

    from tunesmith.cli.main import _register, app

    _register()
    listed = CliRunner().invoke(app, ["models", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["family"] for r in json.loads(listed.output)] == list(FAMILIES)
    shown = CliRunner().invoke(app, ["models", family_model("phi3")])
    assert shown.exit_code == 0, shown.output
    assert "family: phi3 (Phi3ForCausalLM)" in shown.output and "q_proj -> qkv_proj" in shown.output
    one = CliRunner().invoke(app, ["models", family_model("qwen2"), "--json"])
    assert json.loads(one.output)["template"]["pad"] == "<|endoftext|>"


def test_phi3_presets_adapt_the_fused_projections_and_say_so(family_model, capsys):
    from tunesmith.models.load import meta_model
    from tunesmith.models.lora import fused_note, select_targets
    from tunesmith.recipes import load_recipe

    model = meta_model(family_model("phi3"))
    recipe = load_recipe(None, {"model.name": family_model("phi3"), "lora.preset": "limited-data"})  # q_proj, v_proj, up_proj in the top third
    assert sorted({t.kind for t in select_targets(model, recipe.lora)}) == ["gate_up_proj", "qkv_proj"]
    note = fused_note(model, recipe.lora)
    assert "q_proj and v_proj here mean the fused qkv_proj" in note and "up_proj here means the fused gate_up_proj" in note
    wrong = load_recipe(None, {"model.name": family_model("phi3"), "lora.target_modules": ["c_attn"]})
    with pytest.raises(RecipeError, match=r"names \['c_attn'\], which this model does not have") as error:
        select_targets(model, wrong.lora)
    assert "qkv_proj" in error.value.hint


def test_a_gemma2_system_prompt_is_folded_into_the_first_user_turn(family_model):
    from tunesmith.models import load_tokenizer

    tokenizer = load_tokenizer(family_model("gemma2"))
    text = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Talk like a pirate."}, {"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<bos><start_of_turn>user\nTalk like a pirate.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    plain = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert plain == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"  # without a system message: the template as it was


@pytest.mark.parametrize("arch", ["gpt2", "bloom"])
def test_an_unsupported_architecture_is_a_sentence_at_load(arch, tmp_path, smol_tokenizer):
    import transformers as tf

    from tunesmith.models import resolve_model

    config = {
        "gpt2": tf.GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64),
        "bloom": tf.BloomConfig(n_layer=1, hidden_size=32, n_head=2, vocab_size=64),
    }[arch]
    model = tf.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match=r"which tunesmith does not support") as error:
        resolve_model(str(tmp_path))
    assert {"gpt2": "GPT-2", "bloom": "BLOOM"}[arch] in error.value.message and "qwen2" in error.value.message
    assert error.value.where.endswith("config.json") and "tunesmith models" in error.value.hint
