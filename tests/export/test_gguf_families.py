"""GGUF export of every supported family: llama.cpp's architecture, tensor names and keys, read back with the same logits.

The fast tests use each family's tiny model (tests/families.py) dressed over a ~400-token byte-level BPE: a
GGUF with the real 49k-token vocabulary takes ~4 s per parse and transformers parses it twice, ~12 s a
check, so the same models with the embedded SmolLM2 tokenizer (`family_model`) are checked under `-m slow`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
from families import FAMILIES, as_llama_cpp_runs_gemma3, build_family_model, small_bpe
from safetensors import safe_open

from tunesmith.errors import ModelError
from tunesmith.export import gguf as export_gguf
from tunesmith.export.gguf import LAYOUT_TOLERANCE, read_gguf_info, verify_gguf, write_gguf

PROMPTS = ["What is the capital of France?", "Write one sentence about the sea, 12 + 30."]
ARCH = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2", "gemma3": "gemma3", "phi3": "phi3"}


@pytest.fixture(scope="module")
def small_base_tokenizer(smol_tokenizer):
    """A ~400-token byte-level BPE split like SmolLM2's, with ChatML specials (Qwen's eos/pad are among them), SmolLM2's template."""
    from tokenizers import pre_tokenizers

    words = "the capital of France is Paris; write one sentence about the sea, the waves and the wind. What is 12 + 30? It is 42. " * 4
    # digits one by one, as SmolLM2's (and Qwen's) split them: transformers gives a Qwen model Qwen's regex whatever tokenizer.json says
    split = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer = small_bpe(words, split)
    tokenizer.chat_template = smol_tokenizer.chat_template
    return tokenizer


@pytest.fixture(scope="module")
def small_family(tmp_path_factory, small_base_tokenizer):
    """small_family("gemma2") -> that family's tiny model over the small vocabulary, built once per module."""
    built: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in built:
            built[family] = build_family_model(family, tmp_path_factory.mktemp(f"small-{family}"), small_base_tokenizer)
        return built[family]

    return get


def fields(path) -> dict:
    reader = gguf.GGUFReader(path)
    values = {key: field.contents() for key, field in reader.fields.items()}
    values["tensors"] = {t.name: (tuple(int(n) for n in reversed(t.shape)), t.tensor_type.name, t) for t in reader.tensors}
    return values


def stored(model_dir, name: str) -> np.ndarray:
    with safe_open(Path(model_dir) / "model.safetensors", framework="np") as f:
        return f.get_tensor(name).astype(np.float32)


def check_family_keys(family: str, meta: dict, model_dir) -> None:
    """What llama.cpp needs of each architecture, beyond the keys every one gets."""
    arch, tensors = ARCH[family], meta["tensors"]
    config = json.loads((Path(model_dir) / "config.json").read_text())
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    assert meta["general.architecture"] == arch
    assert meta[f"{arch}.block_count"] == 2 and meta[f"{arch}.embedding_length"] == 64 and meta[f"{arch}.context_length"] == 512
    assert meta[f"{arch}.attention.head_count"] == 4 and meta[f"{arch}.attention.head_count_kv"] == 2
    assert meta[f"{arch}.attention.key_length"] == meta[f"{arch}.attention.value_length"] == head_dim
    assert meta[f"{arch}.attention.layer_norm_rms_epsilon"] == pytest.approx(config["rms_norm_eps"])
    assert ("output.weight" in tensors) == (not config.get("tie_word_embeddings", True))
    assert all(kind == "F32" for shape, kind, _ in tensors.values() if len(shape) == 1)  # norms, biases, rope_freqs
    if family == "llama":  # Llama 3.1 rope: per-frequency divisors, 1 for the fast ones, `factor` for the slow ones
        freqs = tensors["rope_freqs.weight"][2].data
        assert tensors["rope_freqs.weight"][0] == (head_dim // 2,) and meta["llama.rope.freq_base"] == 500000.0
        assert freqs[0] == pytest.approx(1.0) and freqs[-1] == pytest.approx(32.0)
    if family == "qwen2":
        assert {"blk.0.attn_q.bias", "blk.0.attn_k.bias", "blk.0.attn_v.bias"} <= set(tensors)
    if family in ("qwen3", "gemma3"):
        assert tensors["blk.1.attn_q_norm.weight"][0] == tensors["blk.1.attn_k_norm.weight"][0] == (head_dim,)
    if family == "gemma2":
        assert meta["gemma2.attn_logit_softcapping"] == 50.0 and meta["gemma2.final_logit_softcapping"] == 30.0
        assert meta["gemma2.attention.sliding_window"] == 32
    if family in ("gemma2", "gemma3"):  # pre/post norms around attention and MLP, stored as w + 1 (the model uses 1 + w)
        assert {"blk.0.post_attention_norm.weight", "blk.0.ffn_norm.weight", "blk.0.post_ffw_norm.weight"} <= set(tensors)
        written = tensors["blk.0.post_ffw_norm.weight"][2].data
        assert np.allclose(written, stored(model_dir, "model.layers.0.post_feedforward_layernorm.weight") + 1)
    if family == "gemma3":
        assert meta["gemma3.attention.sliding_window"] == 32 and meta["gemma3.rope.freq_base"] == 1e6
        assert meta["gemma3.rope.freq_base_swa"] == 10000.0
    if family == "phi3":  # fused q/k/v, and gate+up in one ffn_up of twice the feed-forward length
        assert tensors["blk.0.attn_qkv.weight"][0] == (4 * head_dim + 2 * 2 * head_dim, 64)
        assert tensors["blk.0.ffn_up.weight"][0] == (2 * 128, 64) and meta["phi3.feed_forward_length"] == 128
        assert meta["phi3.attention.sliding_window"] == 0 and "blk.0.ffn_gate.weight" not in tensors
    if family == "mistral":
        assert "blk.0.attn_q.weight" in tensors and meta["llama.rope.freq_base"] == 10000.0
    # the end-of-turn token, where it is not eos, is llama.cpp's eot: generation stops there (Phi-3's <|end|>, Gemma's <end_of_turn>)
    from transformers import AutoTokenizer

    turn_end = {"phi3": "<|end|>", "gemma2": "<end_of_turn>", "gemma3": "<end_of_turn>"}.get(family)
    eot = meta.get("tokenizer.ggml.eot_token_id")
    assert eot == (AutoTokenizer.from_pretrained(model_dir).convert_tokens_to_ids(turn_end) if turn_end else None)


@pytest.mark.parametrize(
    "family, quant",
    [(f, "f32") for f in FAMILIES] + [pytest.param(f, "q8_0", marks=() if f in ("llama", "phi3") else pytest.mark.slow) for f in FAMILIES],
)  # q8_0 on two families in the fast suite, the others in test-slow
def test_each_family_reads_back_with_the_same_logits(small_family, tmp_path, family, quant):
    source = small_family(family)
    out = tmp_path / f"{family}-{quant}.gguf"
    info = write_gguf(source, out, quant)
    assert info["architecture"] == ARCH[family] and info["tokenizer"]["pre_tokenizer"] == ("qwen2" if family == "qwen2" else "smollm")
    meta = fields(out)
    check_family_keys(family, meta, source)
    assert meta["tensors"]["blk.1.ffn_down.weight"][1] == quant.upper()
    if family == "gemma3":  # llama.cpp would run the fixture's SF layers as SS: said at write time, and caught by the check
        assert any("layer types SF" in note for note in info["notes"])
        assert verify_gguf(out, source, PROMPTS, quant)["prompts"][0]["layout_diff"] > 100 * LAYOUT_TOLERANCE
        source = as_llama_cpp_runs_gemma3(source, tmp_path / "gemma3-ss")
        out = tmp_path / f"{family}-ss-{quant}.gguf"
        assert not write_gguf(source, out, quant)["notes"]
    result = verify_gguf(out, source, PROMPTS, quant)
    assert result["passed"], result["summary"]
    assert max(p["layout_diff"] for p in result["prompts"]) <= LAYOUT_TOLERANCE and all(p["tokens_match"] for p in result["prompts"])


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_permuting_q_and_k_of_a_neox_architecture_is_caught(small_family, tmp_path, monkeypatch, family):
    monkeypatch.setattr(export_gguf, "PERMUTED_QK", frozenset({"llama", family}))  # as if it rotated pairs like llama
    write_gguf(small_family(family), tmp_path / "x.gguf", "f32")
    result = verify_gguf(tmp_path / "x.gguf", small_family(family), PROMPTS, "f32")
    assert not result["passed"] and min(p["layout_diff"] for p in result["prompts"]) > 10 * LAYOUT_TOLERANCE


def test_gemma_norms_without_the_offset_are_caught(small_family, tmp_path, monkeypatch):
    monkeypatch.setattr(export_gguf, "NORM_SHIFT", {})
    write_gguf(small_family("gemma2"), tmp_path / "x.gguf", "f32")
    assert not verify_gguf(tmp_path / "x.gguf", small_family("gemma2"), PROMPTS, "f32")["passed"]


def test_llama3_rope_without_its_tensor_is_caught(small_family, tmp_path, monkeypatch):
    monkeypatch.setattr(export_gguf, "_rope_freqs", lambda config: np.ones(8, dtype=np.float32))
    write_gguf(small_family("llama"), tmp_path / "x.gguf", "f32")
    assert not verify_gguf(tmp_path / "x.gguf", small_family("llama"), PROMPTS, "f32")["passed"]


@pytest.mark.slow  # ~6 s: the 49k-token vocabulary; the small-vocabulary tests above check every family's keys
def test_the_real_vocabulary_metadata_of_a_family(family_model, tmp_path, smol_tokenizer):
    out = tmp_path / "qwen3.gguf"
    write_gguf(family_model("qwen3"), out, "q8_0")
    meta = read_gguf_info(out)
    assert meta["architecture"] == "qwen3" and meta["block_count"] == 2 and meta["context_length"] == 512
    assert meta["tokenizer_model"] == "gpt2" and meta["pre_tokenizer"] == "smollm" and meta["token_count"] == len(smol_tokenizer)
    assert meta["eos_token_id"] == smol_tokenizer.convert_tokens_to_ids("<|im_end|>") and meta["bos_token_id"] is None
    assert meta["padding_token_id"] == smol_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert meta["chat_template"].startswith("{%- for message in messages %}")


@pytest.mark.slow  # ~12 s each: the 49k-token vocabulary is parsed twice by transformers' GGUF loader
@pytest.mark.parametrize("quant", ["f32", "q8_0"])
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_with_the_real_tokenizer(family_model, tmp_path, family, quant):
    source = family_model(family)
    if family == "gemma3":
        source = as_llama_cpp_runs_gemma3(source, tmp_path / "gemma3-ss")
    out = tmp_path / f"{family}-{quant}.gguf"
    info = write_gguf(source, out, quant)
    assert info["tokenizer"]["pre_tokenizer"] == ("qwen2" if family == "qwen2" else "smollm")  # transformers splits qwen2 text with Qwen's regex
    result = verify_gguf(out, source, PROMPTS, quant)
    assert result["passed"], result["summary"]


def test_pre_tokenizers_are_named_as_llama_cpp_names_them():
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    def split(regex):
        return {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": regex}}, {"type": "ByteLevel", "use_regex": False}]}

    assert export_gguf._pre_tokenizer(split(PRETOKENIZE_REGEX)) == "qwen2"
    assert export_gguf._pre_tokenizer(split(export_gguf._LLAMA3_SPLIT)) == "llama-bpe"
    assert export_gguf._pre_tokenizer(split(r"\s+")) == "default"


def test_an_unsupported_architecture_is_a_sentence(tmp_path):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32)).save_pretrained(tmp_path)
    with pytest.raises(ModelError) as error:
        write_gguf(tmp_path, tmp_path / "x.gguf", "f32")
    assert "GPT2LMHeadModel" in error.value.message and "Qwen2ForCausalLM" in error.value.message and error.value.hint
    assert not (tmp_path / "x.gguf").exists()


def test_rope_scaling_llama_cpp_cannot_take_from_us_is_a_sentence(small_family, tmp_path):
    source = shutil.copytree(small_family("qwen2"), tmp_path / "qwen2-yarn")
    config = json.loads((source / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 128}
    (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="'yarn' rope scaling"):
        write_gguf(source, tmp_path / "x.gguf", "f32")
