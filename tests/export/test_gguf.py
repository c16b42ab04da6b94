"""GGUF export: what llama.cpp and transformers' GGUF loader read back is the model we wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tunesmith.errors import ModelError
from tunesmith.export import gguf as export_gguf
from tunesmith.export.gguf import QUANT_TYPES, TOLERANCE, permute_qk, read_gguf_info, tensor_type, verify_gguf, write_gguf

PROMPTS = ["What is the capital of France?", "Give me a tip for staying healthy.", "Write one sentence about the sea, 12 + 30."]


def test_permute_interleaves_the_rotary_halves_of_each_head():
    # one head of 4 rows: HF rotates (0, 2) and (1, 3); llama.cpp wants the pairs adjacent
    assert permute_qk(np.arange(4), 1).tolist() == [0, 2, 1, 3]
    assert permute_qk(np.arange(8), 2).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]  # per head, heads kept in order


def test_permute_is_undone_by_the_transformers_loader():
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    w = np.random.default_rng(0).normal(size=(4 * 16, 64)).astype(np.float32)
    undo = LlamaTensorProcessor()._reverse_permute_weights
    assert np.array_equal(undo(permute_qk(w, 4), 4, 4), w)
    assert np.array_equal(undo(permute_qk(w[:32], 2), 4, 2), w[:32])  # k_proj: its own (kv) head count


def test_tensor_types_follow_llama_cpp_conventions():
    from gguf import GGMLQuantizationType as T

    assert tensor_type("blk.0.attn_norm.weight", (64,), "q4_0", True) == (T.F32, None)  # norms stay f32
    assert tensor_type("blk.0.attn_q.weight", (64, 64), "q4_0", True) == (T.Q4_0, None)
    kind, note = tensor_type("token_embd.weight", (400, 64), "q4_0", True)  # tied: it is also the output projection
    assert kind == T.Q8_0 and "output projection" in note
    assert tensor_type("token_embd.weight", (400, 64), "q4_0", False) == (T.Q4_0, None)
    kind, note = tensor_type("blk.0.ffn_down.weight", (64, 48), "q8_0", True)  # 48 is no multiple of the 32-block
    assert kind == T.F16 and "f16" in note
    assert tensor_type("blk.0.ffn_down.weight", (64, 48), "bf16", True) == (T.BF16, None)


@pytest.mark.parametrize("quant", QUANT_TYPES)
def test_each_quant_type_reads_back_and_keeps_the_logits(small_vocab_dir, tmp_path, quant):
    import gguf

    out = tmp_path / f"small-{quant}.gguf"
    info = write_gguf(small_vocab_dir, out, quant, name="small")
    assert out.is_file() and info["bytes"] == out.stat().st_size and not list(tmp_path.glob(".*.tmp"))
    reader = gguf.GGUFReader(out)
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    config = json.loads((Path(small_vocab_dir) / "config.json").read_text())
    assert field("general.architecture") == "llama" and field("general.name") == "small"
    assert field("general.file_type") == export_gguf._file_type(quant)
    assert field("llama.block_count") == 2 and field("llama.vocab_size") == config["vocab_size"]
    assert len(field("tokenizer.ggml.tokens")) == config["vocab_size"]  # padded to the embedding rows
    assert field("tokenizer.ggml.eos_token_id") == config["eos_token_id"]
    assert field("tokenizer.chat_template").startswith("{% for message in messages %}")
    names = {t.name: t.tensor_type.name for t in reader.tensors}
    assert names["output_norm.weight"] == "F32" and "output.weight" in names  # untied: its own output projection
    assert names["blk.1.ffn_up.weight"] == quant.upper()
    result = verify_gguf(out, small_vocab_dir, PROMPTS, quant)
    worst = max(p["relative_diff"] for p in result["prompts"])
    assert result["passed"], f"{quant}: relative logit difference {worst:.2e} over the tolerance {TOLERANCE[quant]}"
    assert max(p["layout_diff"] for p in result["prompts"]) <= export_gguf.LAYOUT_TOLERANCE
    assert all(p["tokens_match"] for p in result["prompts"])


@pytest.mark.parametrize("quant", ["f32", "q4_0"])
def test_without_the_qk_permutation_the_check_fails(small_vocab_dir, tmp_path, monkeypatch, quant):
    monkeypatch.setattr(export_gguf, "permute_qk", lambda w, n_head: w)
    write_gguf(small_vocab_dir, tmp_path / "unpermuted.gguf", quant)
    result = verify_gguf(tmp_path / "unpermuted.gguf", small_vocab_dir, PROMPTS, quant)
    assert not result["passed"]
    # a random model's attention is nearly uniform, so the damage is small (~5e-3) but far above rounding (0)
    assert min(p["layout_diff"] for p in result["prompts"]) > 10 * export_gguf.LAYOUT_TOLERANCE


@pytest.fixture(scope="module")
def tiny_q8(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-gguf") / "tiny-q8_0.gguf"
    lines = []
    info = write_gguf(tiny_model_dir, out, "q8_0", progress=lines.append)
    return out, info, lines


def test_real_tokenizer_metadata_reads_back(tiny_q8, smol_tokenizer):
    out, info, lines = tiny_q8
    meta = read_gguf_info(out)
    assert meta["architecture"] == "llama" and meta["file_type"] == "MOSTLY_Q8_0" and meta["block_count"] == 2
    assert meta["tensor_count"] == info["tensors"] == 2 + 2 * 9  # embeddings, final norm, 9 per block; tied: no output.weight
    assert meta["tokenizer_model"] == "gpt2" and meta["pre_tokenizer"] == "smollm"  # named by its fingerprint, as llama.cpp's converter names it
    assert meta["token_count"] == len(smol_tokenizer) == 49152
    assert meta["eos_token_id"] == smol_tokenizer.eos_token_id == meta["padding_token_id"]
    assert meta["bos_token_id"] == smol_tokenizer.bos_token_id and meta["add_bos_token"] is False
    assert meta["chat_template"] == smol_tokenizer.chat_template
    assert meta["control_tokens"][:3] == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] and len(meta["control_tokens"]) == 17
    assert 1 <= len(lines) <= 22 and lines[-1].startswith("gguf: tensor 20/20")  # a line every 2 s, and the last tensor


@pytest.mark.slow  # 20 s (transformers parses the 49k-token vocabulary three times); the small-vocabulary quant tests cover the logits check fast
def test_real_tokenizer_model_loads_in_transformers(tiny_q8, tiny_model_dir):
    result = verify_gguf(tiny_q8[0], tiny_model_dir, PROMPTS, "q8_0")
    assert result["passed"], result
    assert all(p["tokens_match"] and p["argmax_agreement"] > 0.8 for p in result["prompts"])


def test_mistral_is_written_as_llama(small_vocab_dir, tmp_path):
    import torch
    from families import TINY
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(small_vocab_dir)
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(tokenizer),
        **TINY,  # tests/families.py: 2 layers, hidden 64, 4 heads, 2 kv heads
        max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id,
    )
    source = tmp_path / "tiny-mistral"  # not "mistral": transformers' GGUF loader reads general.name == "mistral" as another arch
    MistralForCausalLM(config).save_pretrained(source)
    tokenizer.save_pretrained(source)
    info = write_gguf(source, tmp_path / "m.gguf", "q8_0")
    assert any("sliding_window" in note for note in info["notes"])
    assert verify_gguf(tmp_path / "m.gguf", source, PROMPTS, "q8_0")["passed"]


def test_an_unsupported_architecture_is_a_sentence(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(ModelError) as error:
        write_gguf(tmp_path, tmp_path / "x.gguf")
    assert "GPT2LMHeadModel" in error.value.message and "LlamaForCausalLM" in error.value.message
    assert not (tmp_path / "x.gguf").exists()


def test_bad_input_is_a_sentence(tiny_model_dir, tmp_path):
    with pytest.raises(ModelError, match="q3_k"):
        write_gguf(tiny_model_dir, tmp_path / "x.gguf", "q3_k")
    with pytest.raises(ModelError, match="no config.json"):
        write_gguf(tmp_path, tmp_path / "x.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(ModelError, match="not a readable GGUF"):
        read_gguf_info(tmp_path / "junk.gguf")


def test_a_failed_write_leaves_no_file(small_vocab_dir, tmp_path, monkeypatch):
    def boom(w, n_head):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_gguf, "permute_qk", boom)
    with pytest.raises(RuntimeError):
        write_gguf(small_vocab_dir, tmp_path / "x.gguf", "f16")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["q8_0", "f16"])
def test_the_embedded_model_round_trips(tmp_path, quant):
    """Built-in Q4_1 GGUF -> transformers (cached) -> our GGUF -> transformers: the same logits."""
    from tunesmith.models import resolve_model

    source = resolve_model("smollm2-135m-instruct").path
    info = write_gguf(source, tmp_path / f"smollm2-{quant}.gguf", quant)
    result = verify_gguf(tmp_path / f"smollm2-{quant}.gguf", source, PROMPTS, quant)
    figures = [(round(p["max_abs_diff"], 4), round(p["relative_diff"], 5), round(p["argmax_agreement"], 3)) for p in result["prompts"]]
    print(f"\n{quant}: {info['bytes'] / 2**20:.1f} MiB in {info['seconds']} s; (max |diff|, relative, argmax) per prompt: {figures}")
    assert result["passed"], result
    assert all(p["tokens_match"] for p in result["prompts"])
