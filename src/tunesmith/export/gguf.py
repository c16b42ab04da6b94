"""Write a transformers model directory of a supported family as a GGUF file (llama.cpp, Ollama), and check it.

The weights stream from the safetensors files one tensor at a time (memory: one tensor, not the
model), through the `gguf` package's writer, into a temporary file that is renamed into place.
Each family is written under llama.cpp's architecture for it (`Family.gguf_arch`: Mistral runs as
"llama"), with that architecture's tensor names (gguf's own name map) and the hyperparameters its
loader reads; what llama.cpp does differently from transformers is handled here, per architecture:
only "llama" rotates adjacent pairs (q/k rows permuted), Gemma stores its norms as w + 1, Llama 3.1
rope scaling is a `rope_freqs` tensor. `verify_gguf` loads the result with transformers' own GGUF
loader and compares logits with the source model: a wrong permutation, name or tokenizer shows up
there, not in a user's chat.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as T
from safetensors import safe_open

from tunesmith.errors import ModelError, first_line

SUPPORTED_ARCHITECTURES = (
    "LlamaForCausalLM",
    "MistralForCausalLM",  # llama.cpp runs Mistral as arch "llama"
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",  # text-only Gemma 3 (model_type gemma3_text)
    "Phi3ForCausalLM",
)
QUANT_TYPES = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")  # what gguf.quants.quantize can write
LOW_BIT = ("q5_1", "q5_0", "q4_1", "q4_0")

# Quality: max |logit difference| over all positions and the vocabulary, as a fraction of the source
# model's logit range (max - min on that prompt), so one table fits a random tiny model (range ~2)
# and SmolLM2-135M (range ~45). Measured, worst of 3 prompts, tiny random (2 layers, hidden 64) / SmolLM2:
#   f32 0 / 0   f16 2.5e-4 / 7.3e-4   bf16 1.9e-3 / 3.0e-3   q8_0 5.7e-3 / 1.3e-2
#   q5_1 4.2e-2 / 0.22   q5_0 4.6e-2 / 0.13   q4_1 9.0e-2 / 0 (SmolLM2 ships as Q4_1: lossless)   q4_0 0.12 / 0.27
# Limits are ~2x the worst figure. At 4-5 bits a 30-layer 135M model moves its logits by a quarter
# of their range (argmax agreement 30-90%): that is the quantization, as large as a missing q/k
# permutation (0.16-0.27 in f16), so bugs are caught by the layout check instead: against the
# source with the same quantization applied, the GGUF must agree to float rounding (0 measured).
TOLERANCE = {"f32": 1e-5, "f16": 2e-3, "bf16": 1e-2, "q8_0": 3e-2, "q5_1": 0.45, "q5_0": 0.45, "q4_1": 0.55, "q4_0": 0.55}
LAYOUT_TOLERANCE = 1e-4

# What llama.cpp does differently per architecture. Only "llama" uses the GPT-J rotary layout (adjacent
# pairs), so only its q/k rows are permuted; qwen2, qwen3, gemma2, gemma3 and phi3 rotate halves as HF does.
PERMUTED_QK = frozenset({"llama"})
# Gemma's RMSNorm multiplies by (1 + w): llama.cpp's converter stores w + 1 for every "*norm.weight" (q/k norms
# too) and transformers' GGUF loader subtracts 1 when reading it back.
NORM_SHIFT = {"gemma2": 1.0, "gemma3": 1.0}
# llama.cpp hard-codes Gemma 3's layout instead of reading it: every 6th layer full attention, the others
# sliding with rope base 10000; and Gemma's attention scale is 1/sqrt(head_dim), or 1/sqrt(hidden/heads) for the
# 27B models (recognised by their layer count), whatever query_pre_attn_scalar says.
GEMMA3_PATTERN, GEMMA3_LOCAL_BASE = 6, 10000.0
GEMMA_27B_LAYERS = {"gemma2": 46, "gemma3": 62}

# llama.cpp's names for the pre-tokenizer (how text is split before BPE), fingerprinted from tokenizer.json:
# a Split by one of these regexes followed by a ByteLevel step without its own regex.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (  # Llama 3's with single digits; Qwen2, Qwen2.5 and Qwen3 all use it
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_TEKKEN_SPLIT = (  # Mistral Nemo's tekken
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O_SPLIT = (  # o200k (GPT-4o), as in Phi-4-mini
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_SPLITS = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2", _TEKKEN_SPLIT: "tekken", _GPT4O_SPLIT: "gpt-4o"}


def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder q_proj/k_proj rows from HF's rotary layout (halves) to llama.cpp's (interleaved pairs).

    w: (n_head * head_dim, in) or a bias (n_head * head_dim,). Within each head HF rotates row i with
    row i + head_dim/2; llama.cpp rotates rows 2i and 2i+1. Rows (head, half, i) become (head, i, half);
    transformers' GGUF loader applies the inverse (its `_reverse_permute_weights`).
    """
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensor_type(name: str, shape: tuple[int, ...], quant: str, tied: bool):
    """(GGMLQuantizationType, note or None) for one tensor, following llama.cpp's conventions.

    1-D tensors (norms, biases) stay f32: tiny, and precision there matters. In a 4/5-bit file the
    output projection (output.weight, or token_embd when the embeddings are tied) is kept at q8_0,
    as llama.cpp keeps it at a higher type (its Q6_K, which gguf cannot write). A row whose length
    is not a multiple of the block size (32) cannot be quantized and falls back to f16.
    """
    if len(shape) == 1:
        return T.F32, None
    kind = "q8_0" if quant in LOW_BIT and (name == "output.weight" or (tied and name == "token_embd.weight")) else quant
    qtype = T[kind.upper()]
    block = GGML_QUANT_SIZES[qtype][0]
    if shape[-1] % block:
        return T.F16, f"{name}: rows of {shape[-1]} are not a multiple of {block}, written as f16"
    return qtype, (f"{name}: kept at q8_0 (output projection)" if kind != quant else None)


def gguf_arch(config) -> str:
    """llama.cpp's architecture name for the model (general.architecture): its family's."""
    from tunesmith.models.family import family_of

    return family_of(config).gguf_arch


def _name_map(arch: str, n_layers: int):
    """gguf's HF -> GGUF tensor name map for llama.cpp's architecture `arch`."""
    return gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), n_layers)


def _config(model_dir: Path):
    """The model's config, refused unless it is a model of a family this writer handles, with rope it can write."""
    from tunesmith.models.family import family_of

    file = model_dir / "config.json"
    if not file.is_file():
        raise ModelError(f"'{model_dir}' holds no config.json", hint="point at a directory written by save_pretrained")
    raw = json.loads(file.read_text())
    arch = (raw.get("architectures") or ["(none)"])[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelError(
            f"the model's architecture is {arch}, and the GGUF export handles {', '.join(SUPPORTED_ARCHITECTURES)} only",
            where=str(file),
            hint="export the merged model and convert it with llama.cpp's convert_hf_to_gguf.py",
        )
    family_of(raw, where=str(file))  # the model_type must agree with the class (a Gemma 3 vision checkpoint does not)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    _rope(config, gguf_arch(config), where=str(file))
    if gguf_arch(config) == "gemma2" and not getattr(config, "tie_word_embeddings", True):
        raise ModelError(
            "the Gemma 2 model has an output projection of its own (untied), and llama.cpp's gemma2 always uses the embeddings",
            where=str(file),
            hint="tie the embeddings (tie_word_embeddings: true) before exporting",
        )
    return config


def _rope(config, arch: str, where: str | None = None) -> dict:
    """The rotary settings llama.cpp reads: base, scaling (default, linear, or llama3 as a tensor), rotated fraction.

    Gemma 3 keeps one entry per layer type: the full-attention one is the model's rope (rope.freq_base),
    the sliding one its local base. Other scaling kinds (yarn, longrope, dynamic) are refused.
    """
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    local = None
    if "full_attention" in params:
        local, params = params.get("sliding_attention") or {}, params["full_attention"]
    kind = params.get("rope_type", params.get("type", "default"))
    writable = {"default", "linear"} | ({"llama3"} if arch == "llama" else set())
    if kind not in writable or (local and local.get("rope_type", "default") != "default"):
        kind = kind if kind not in writable else local.get("rope_type")
        raise ModelError(
            f"the model uses '{kind}' rope scaling, which the GGUF export does not write for llama.cpp's {arch} architecture",
            where=where,
            hint="convert it with llama.cpp's convert_hf_to_gguf.py",
        )
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    partial = params.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", None))
    return {
        "kind": kind,
        "theta": float(theta if theta is not None else 10000.0),
        "factor": float(params.get("factor") or 1.0),
        "local_theta": float(local["rope_theta"]) if local and local.get("rope_theta") is not None else None,
        "partial": float(partial if partial is not None else 1.0),
    }


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _rope_freqs(config) -> np.ndarray:
    """Llama 3.1's rope rule as llama.cpp reads it: one divisor per rotary frequency (the rope_freqs tensor).

    llama.cpp rotates frequency i by theta_i / rope_freqs[i]; the divisors are the unscaled frequencies over
    transformers' own llama3-scaled ones, so the rule is transformers' and cannot drift from the source model.
    """
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
    dim, theta = _head_dim(config), _rope(config, "llama")["theta"]
    plain = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    return (plain / scaled.double().numpy()).astype(np.float32)


def _gemma_attention_scalar(arch: str, n_layers: int, hidden: int, heads: int, head_dim: int) -> int:
    """What llama.cpp divides Gemma's queries by (under a square root): head_dim, or hidden/heads for the 27B models."""
    return hidden // heads if n_layers == GEMMA_27B_LAYERS.get(arch) else head_dim


def _gemma3_sliding(n_layers: int, window) -> list[bool]:
    """Which layers llama.cpp runs with sliding attention in a Gemma 3 (it reads no pattern from the file)."""
    return [bool(window) and i % GEMMA3_PATTERN < GEMMA3_PATTERN - 1 for i in range(n_layers)]


# llama.cpp names a byte-level BPE tokenizer by what it does to this text: the sha256 of str(token ids) picks the
# pre-tokenizer in its converter (convert_hf_to_gguf.py, get_vocab_base_pre), so the same fingerprint here names a
# fine-tune's tokenizer as llama.cpp would name its base's. The text and the fingerprints are llama.cpp's.
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f (multiple emojis concatenated) "
    "\u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 "
    "\u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6\u1785\U0001f601 "
    "?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
    "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, "
    "'D you like some tea? We'Ve a'lL"
)
KNOWN_TOKENIZERS = {
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3.x
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5 .. Qwen3
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # GPT-2
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",  # Mistral Nemo
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",  # Phi-2
}


def _pre_tokenizer(pre: dict | None, tokenizer=None) -> str:
    """llama.cpp's pre-tokenizer name: by the tokenizer's fingerprint on CHECK_TEXT where llama.cpp knows it, else by
    tokenizer.json's `pre_tokenizer` steps (a split regex llama.cpp implements); "default": not recognised."""
    if tokenizer is not None:
        from hashlib import sha256

        known = KNOWN_TOKENIZERS.get(sha256(str(tokenizer.encode(CHECK_TEXT, add_special_tokens=False)).encode()).hexdigest())
        if known:
            return known
    steps = (pre or {}).get("pretokenizers", [pre] if pre else [])
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"  # GPT-2's own split regex ("gpt2" is not a name llama.cpp knows)
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and steps[0].get("pattern", {}).get("Regex") in _SPLITS:
        return _SPLITS[steps[0]["pattern"]["Regex"]]
    return "default"


def adds_bos_eos(tokenizer) -> tuple[bool, bool]:
    """Whether encoding text adds BOS / EOS: what the tokenizer really does, whatever its config files claim."""
    ids = tokenizer("a")["input_ids"]
    return ids[0] == tokenizer.bos_token_id, ids[-1] == tokenizer.eos_token_id


def _add_tokenizer(writer, model_dir: Path, vocab_size: int, notes: list[str]) -> dict:
    """Byte-level BPE vocabulary, token types, merges, special ids and chat template into `writer`."""
    from transformers import AutoTokenizer

    file = model_dir / "tokenizer.json"
    spec = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    model = spec.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback") or (spec.get("decoder") or {}).get("type") != "ByteLevel":
        found = model.get("type", "no tokenizer.json") + (" with byte fallback (sentencepiece style)" if model.get("byte_fallback") else "")
        raise ModelError(
            f"the tokenizer is {found}, and the GGUF export writes byte-level BPE (GPT-2 style) vocabularies only",
            where=str(model_dir),
            hint="convert it with llama.cpp's convert_hf_to_gguf.py",
        )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if len(tokenizer) > vocab_size:
        raise ModelError(f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only {vocab_size}", where=str(model_dir))
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    types = [(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED) if i in added else gguf.TokenType.NORMAL for i in range(len(tokens))]
    padding = vocab_size - len(tokens)  # embedding rows past the tokenizer (padded vocabularies)
    tokens += [f"[PAD{i}]" for i in range(len(tokens), vocab_size)]
    types += [gguf.TokenType.UNUSED] * padding
    backend = getattr(tokenizer, "backend_tokenizer", None)  # what the loaded tokenizer does (a class may replace the file's split)
    pre = _pre_tokenizer(json.loads(backend.to_str()).get("pre_tokenizer") if backend else spec.get("pre_tokenizer"), tokenizer)
    if pre == "default":
        notes.append("pre-tokenizer not recognised: llama.cpp splits text with its default rules, tokens may differ")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    for kind in ("bos", "eos", "unk", "pad"):  # the loaded tokenizer knows ids SpecialVocab may miss
        if kind not in special.special_token_ids and getattr(tokenizer, f"{kind}_token_id", None) is not None:
            special.special_token_ids[kind] = getattr(tokenizer, f"{kind}_token_id")
    special.add_special_token.update(zip(("bos", "eos"), adds_bos_eos(tokenizer)))
    from tunesmith.models.template import adapt_chat_template

    adapt_chat_template(tokenizer, str(model_dir))  # the template tunesmith renders with (Gemma 2: a system message folded in)
    if isinstance(tokenizer.chat_template, str):
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)
    eot = _end_of_turn(model_dir, tokenizer)
    if eot is not None and eot != special.special_token_ids.get("eos"):
        writer.add_eot_token_id(eot)  # llama.cpp ends generation at eos and eot (Phi-3's <|end|>, Gemma's <end_of_turn>)
    return {
        "tokens": len(tokens),
        "pre_tokenizer": pre,
        "eos_token_id": special.special_token_ids.get("eos"),
        "chat_template": special.chat_template is not None,
    }


def _end_of_turn(model_dir: Path, tokenizer) -> int | None:
    """The token the chat template closes an assistant turn with, where it is not eos (what tunesmith stops at)."""
    from tunesmith.infer.generate import stop_token_ids_of

    stops = [i for i in stop_token_ids_of(model_dir, tokenizer) if i != tokenizer.eos_token_id]
    return stops[0] if stops else None


def _file_type(quant: str) -> int:
    """general.file_type: llama.cpp's name for the file's main tensor type."""
    return gguf.LlamaFileType[{"f32": "ALL_F32", "f16": "MOSTLY_F16"}.get(quant, f"MOSTLY_{quant.upper()}")]


def _add_model_metadata(writer, config, arch: str, name: str, quant: str) -> list[str]:
    """The hyperparameters llama.cpp reads for `arch`; returns notes on what llama.cpp will run differently.

    key_length/value_length are always written: llama.cpp otherwise assumes hidden/heads, wrong for Qwen3,
    Gemma and Mistral Nemo, whose head_dim is set apart.
    """
    head_dim, rope = _head_dim(config), _rope(config, arch)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(rope["theta"])
    writer.add_rope_dimension_count(int(head_dim * rope["partial"]))
    if rope["kind"] == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(_file_type(quant))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    extra = {"gemma2": _gemma2_metadata, "gemma3": _gemma3_metadata, "phi3": _phi3_metadata}.get(arch)
    notes = extra(writer, config, head_dim, rope) if extra else []
    if arch == "llama" and getattr(config, "sliding_window", None):
        notes.append(f"sliding_window={config.sliding_window} is not written (llama.cpp runs Mistral with full attention)")
    return notes


def _gemma_scale_note(config, arch: str, head_dim: int) -> list[str]:
    scalar = getattr(config, "query_pre_attn_scalar", None)
    expected = _gemma_attention_scalar(arch, config.num_hidden_layers, config.hidden_size, config.num_attention_heads, head_dim)
    if scalar is None or scalar == expected:
        return []
    return [f"query_pre_attn_scalar={scalar}, but llama.cpp scales {arch} attention by 1/sqrt({expected}): its logits will differ"]


def _gemma2_metadata(writer, config, head_dim: int, rope: dict) -> list[str]:
    """Soft-capping of attention scores and final logits, and the sliding window of its even layers."""
    notes = _gemma_scale_note(config, "gemma2", head_dim)
    for key, add in (("attn_logit_softcapping", writer.add_attn_logit_softcapping), ("final_logit_softcapping", writer.add_final_logit_softcapping)):
        if getattr(config, key, None) is not None:
            add(float(getattr(config, key)))
        else:
            notes.append(f"{key} is off, but llama.cpp's gemma2 caps at its default when the key is missing")
    if getattr(config, "sliding_window", None):
        writer.add_sliding_window(config.sliding_window)
    return notes


def _gemma3_metadata(writer, config, head_dim: int, rope: dict) -> list[str]:
    """Sliding window, final soft-capping, local rope base and layer pattern (both written, though llama.cpp fixes them)."""
    notes = _gemma_scale_note(config, "gemma3", head_dim)
    window = getattr(config, "sliding_window", None)
    if window:
        writer.add_sliding_window(window)
    if getattr(config, "final_logit_softcapping", None) is not None:
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))
    if getattr(config, "attn_logit_softcapping", None) is not None:
        notes.append("attn_logit_softcapping is set, but llama.cpp's gemma3 has no attention soft-capping: its logits will differ")
    local = rope["local_theta"] if rope["local_theta"] is not None else GEMMA3_LOCAL_BASE
    writer.add_rope_freq_base_swa(local)
    types = getattr(config, "layer_types", None) or []
    sliding = [t == "sliding_attention" for t in types]
    if sliding:
        writer.add_sliding_window_pattern(sliding)
    expected = _gemma3_sliding(config.num_hidden_layers, window)
    if sliding and sliding != expected:
        notes.append(
            f"layer types {''.join('S' if s else 'F' for s in sliding)} (S sliding, F full), but llama.cpp runs Gemma 3 as "
            f"{''.join('S' if s else 'F' for s in expected)} (every {GEMMA3_PATTERN}th layer full): its logits will differ"
        )
    if local != GEMMA3_LOCAL_BASE and any(expected):
        notes.append(f"local rope base {local:g}, but llama.cpp runs Gemma 3's sliding layers with {GEMMA3_LOCAL_BASE:g}: its logits will differ")
    return notes


def _phi3_metadata(writer, config, head_dim: int, rope: dict) -> list[str]:
    """The sliding window (0: none), and the original context length llama.cpp's converter writes for Phi-3."""
    writer.add_sliding_window(getattr(config, "sliding_window", None) or 0)
    if getattr(config, "original_max_position_embeddings", None):
        writer.add_rope_scaling_orig_ctx_len(config.original_max_position_embeddings)
    return []


def _plan(model_dir: Path, config) -> list[tuple]:
    """(hf name, gguf name, source) per tensor written, in llama.cpp's order (embeddings, blocks, the rest).

    The source is the safetensors file holding the tensor, or the array itself for a tensor llama.cpp
    needs that the checkpoint does not hold (Llama 3.1's rope_freqs).
    """
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelError(f"'{model_dir}' has no .safetensors weights", hint="save it with save_pretrained (safetensors is the default)")
    arch = gguf_arch(config)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    names = _name_map(arch, config.num_hidden_layers)
    plan, stored = [], []
    for file in files:
        with safe_open(file, framework="pt") as f:
            stored += [(hf, file) for hf in f.keys()]
    for hf, file in stored:
        if hf.endswith(".rotary_emb.inv_freq") or (tied and hf == "lm_head.weight"):
            continue  # recomputed by llama.cpp / the same matrix as token_embd
        target = names.get_name(hf, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ModelError(
                f"the tensor '{hf}' has no GGUF name in llama.cpp's {arch} architecture",
                where=str(file),
                hint="the checkpoint is not a plain model of its family; convert it with llama.cpp's convert_hf_to_gguf.py",
            )
        plan.append((hf, target, file))
    if _rope(config, arch)["kind"] == "llama3":
        plan.append((None, gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", _rope_freqs(config)))

    def block(t) -> int:  # token_embd first, then the layers in order, then the rest
        return int(m.group(1)) if (m := re.match(r"blk\.(\d+)\.", t[1])) else (-1 if t[1].startswith("token_embd") else 1 << 30)

    return sorted(plan, key=lambda t: (block(t), t[1]))


def _shape(hf, source) -> tuple[int, ...]:
    if isinstance(source, np.ndarray):
        return source.shape
    with safe_open(source, framework="pt") as f:
        return tuple(f.get_slice(hf).get_shape())  # (out, in), read without loading the tensor


def _declare_tensors(writer, plan, config, quant: str) -> tuple[list, list[str]]:
    """Each tensor's name, shape, type and byte size into the header: (types chosen, fallback notes)."""
    tied, kinds, notes = bool(getattr(config, "tie_word_embeddings", False)), [], []
    for hf, target, source in plan:
        shape = _shape(hf, source)
        qtype, note = tensor_type(target, shape, quant, tied)
        elements, block_bytes = GGML_QUANT_SIZES[qtype]
        writer.add_tensor_info(target, shape, np.dtype(np.float32), int(np.prod(shape)) // elements * block_bytes, raw_dtype=qtype)
        kinds.append(qtype)
        notes += [note] if note else []
    return kinds, notes


def _stream_tensors(writer, plan, kinds, config, progress) -> None:
    """One tensor at a time: read, put in llama.cpp's layout for the architecture, quantize, append.

    "llama" gets its q/k rows permuted for its rotary layout; Gemma's norms are stored as w + 1.
    """
    import torch

    arch = gguf_arch(config)
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads or config.num_attention_heads}
    shift = NORM_SHIFT.get(arch, 0.0)
    plain = {T.F32: np.float32, T.F16: np.float16}
    started = last = time.perf_counter()
    for i, ((hf, target, source), qtype) in enumerate(zip(plan, kinds)):
        if isinstance(source, np.ndarray):
            w = source
        else:
            with safe_open(source, framework="pt") as f:
                w = f.get_tensor(hf).to(torch.float32).numpy()
        if arch in PERMUTED_QK and (m := re.match(r"blk\.\d+\.(attn_q|attn_k)\.", target)):
            w = permute_qk(w, heads[m.group(1)])
        if shift and target.endswith("norm.weight"):
            w = w + np.float32(shift)
        writer.write_tensor_data(w.astype(plain[qtype]) if qtype in plain else gguf.quants.quantize(w, qtype))
        now = time.perf_counter()
        if progress and (now - last >= 2.0 or i == len(plan) - 1):  # a line every 2 s: never silent on a big model
            last = now
            progress(f"gguf: tensor {i + 1}/{len(plan)} {target} {qtype.name} ({now - started:.0f} s)")


def write_gguf(model_dir, out_file, quant: str = "f16", *, name: str | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Write `model_dir` (a transformers model directory of a supported family) to `out_file` as GGUF in `quant`.

    The file appears only when complete (tmp file + os.replace). `progress` gets a line every 2 s of
    the tensors. Returned: path, architecture, quant, bytes, seconds, tensors, tensor types, notes
    (fallbacks, and what llama.cpp will run differently from transformers), tokenizer.
    """
    if quant not in QUANT_TYPES:
        raise ModelError(f"the GGUF quantization '{quant}' is not one this export writes", hint=f"one of: {', '.join(QUANT_TYPES)}")
    started, model_dir, out_file = time.perf_counter(), Path(model_dir), Path(out_file)
    config = _config(model_dir)
    arch = gguf_arch(config)
    plan = _plan(model_dir, config)
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    writer = gguf.GGUFWriter(tmp, arch)  # opens nothing until the header is written
    notes = _add_model_metadata(writer, config, arch, name or model_dir.name, quant)
    tokenizer_info = _add_tokenizer(writer, model_dir, config.vocab_size, notes)
    kinds, fallbacks = _declare_tensors(writer, plan, config, quant)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        _stream_tensors(writer, plan, kinds, config, progress)
        writer.close()
        os.replace(tmp, out_file)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return {
        "path": str(out_file),
        "architecture": arch,
        "quant": quant,
        "bytes": out_file.stat().st_size,
        "seconds": round(time.perf_counter() - started, 2),
        "tensors": len(plan),
        "tensor_types": dict(Counter(k.name for k in kinds)),
        "notes": notes + fallbacks,
        "tokenizer": tokenizer_info,
    }


def read_gguf_info(path) -> dict:
    """The facts a user checks in a GGUF file: architecture, file type, tensors, tokenizer metadata."""
    try:
        reader = gguf.GGUFReader(path)
    except (OSError, ValueError) as error:
        raise ModelError(f"'{path}' is not a readable GGUF file ({error})") from None
    field = lambda key: reader.fields[key].contents() if key in reader.fields else None  # noqa: E731
    arch, file_type = field("general.architecture"), field("general.file_type")
    tokens, types = field("tokenizer.ggml.tokens") or [], field("tokenizer.ggml.token_type") or []
    return {
        "architecture": arch,
        "name": field("general.name"),
        "file_type": gguf.LlamaFileType(file_type).name if file_type is not None else None,
        "tensor_count": len(reader.tensors),
        "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors)),
        "block_count": field(f"{arch}.block_count"),
        "context_length": field(f"{arch}.context_length"),
        "tokenizer_model": field("tokenizer.ggml.model"),
        "pre_tokenizer": field("tokenizer.ggml.pre"),
        "token_count": len(tokens),
        "control_tokens": [t for t, k in zip(tokens, types) if k == gguf.TokenType.CONTROL],
        "bos_token_id": field("tokenizer.ggml.bos_token_id"),
        "eos_token_id": field("tokenizer.ggml.eos_token_id"),
        "padding_token_id": field("tokenizer.ggml.padding_token_id"),
        "add_bos_token": field("tokenizer.ggml.add_bos_token"),
        "chat_template": field("tokenizer.chat_template"),
    }


def _quantize_like_the_file(model, quant: str) -> None:
    """Pass every weight of `model` through the quantization the writer gives it (same types), in place."""
    import torch

    names = _name_map(gguf_arch(model.config), model.config.num_hidden_layers)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    with torch.no_grad():
        for hf, p in model.named_parameters():  # a tied lm_head is the embedding, listed once
            qtype, _ = tensor_type(names.get_name(hf, try_suffixes=(".weight", ".bias")), tuple(p.shape), quant, tied)
            w = p.detach().float().numpy()
            p.copy_(torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype).reshape(w.shape)))


def _read_facts(path: Path) -> tuple[dict, np.ndarray | None]:
    """The file's scalar metadata and its rope_freqs tensor (or None), without parsing the vocabulary arrays.

    gguf's GGUFReader takes seconds on a 49k-token vocabulary; transformers' own reader skips the arrays.
    """
    rope_freqs = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
    try:
        from transformers.integrations.gguf.reader import GgufHeader, load_gguf_state_dict, read_gguf_metadata
    except ImportError:  # an older transformers: the slow reader
        reader = gguf.GGUFReader(path)
        meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("tokenizer.")}
        freqs = next((np.array(t.data, dtype=np.float32) for t in reader.tensors if t.name == rope_freqs), None)
        return meta, freqs
    meta, names = read_gguf_metadata(str(path))
    freqs = load_gguf_state_dict(GgufHeader.from_file(str(path)))[rope_freqs][0].numpy() if rope_freqs in names else None
    return meta, freqs


def _as_llama_cpp_reads(gguf_file: Path) -> tuple[dict, np.ndarray | None]:
    """Config overrides that make transformers' GGUF loader run the model the way llama.cpp runs this file.

    The loader leaves out keys llama.cpp reads (Qwen 3's key_length, Gemma's soft-capping, linear rope
    scaling, Phi-3's rotated fraction) and llama.cpp follows fixed rules where the loader takes config
    defaults (Gemma's attention scale, Gemma 3's layer pattern and local rope base). Returned with the
    rope_freqs divisors (Llama 3.1), which the caller applies to the loaded model's rotary frequencies.
    """
    meta, freqs = _read_facts(gguf_file)
    arch = meta["general.architecture"]
    key = lambda name, default=None: meta.get(f"{arch}.{name}", default)  # noqa: E731
    head_dim = key("attention.key_length") or key("embedding_length") // key("attention.head_count")
    rope = {"rope_type": "default", "rope_theta": float(key("rope.freq_base", 10000.0))}
    if key("rope.scaling.type") == "linear":
        rope.update(rope_type="linear", factor=float(key("rope.scaling.factor")))
    overrides = {"head_dim": head_dim}
    if arch == "phi3":
        overrides["rope_parameters"] = rope | {"partial_rotary_factor": key("rope.dimension_count", head_dim) / head_dim}
    elif arch in ("gemma2", "gemma3"):
        overrides["query_pre_attn_scalar"] = _gemma_attention_scalar(arch, key("block_count"), key("embedding_length"), key("attention.head_count"), head_dim)
        overrides["final_logit_softcapping"] = key("final_logit_softcapping")
        if arch == "gemma2":
            overrides["attn_logit_softcapping"] = key("attn_logit_softcapping")
        else:
            sliding = _gemma3_sliding(key("block_count"), key("attention.sliding_window"))
            overrides["layer_types"] = ["sliding_attention" if s else "full_attention" for s in sliding]
            overrides["rope_parameters"] = {"full_attention": rope, "sliding_attention": {"rope_type": "default", "rope_theta": GEMMA3_LOCAL_BASE}}
    elif rope["rope_type"] == "linear":
        overrides["rope_parameters"] = rope
    if freqs is not None:
        n_rot = key("rope.dimension_count", head_dim)
        freqs = (1.0 / rope["rope_theta"] ** (np.arange(0, n_rot, 2, dtype=np.float64) / n_rot) / freqs).astype(np.float32)
    return overrides, freqs


def _load_as_llama_cpp_reads(gguf_file: Path, dtype):
    """(tokenizer, model) from the GGUF with transformers' loader, the model corrected to what llama.cpp computes.

    The config is parsed once and handed to both: each parse of a 49k-token vocabulary costs seconds.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    overrides, inv_freq = _as_llama_cpp_reads(gguf_file)
    try:
        config = AutoConfig.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, config=config)
        for key, value in overrides.items():
            setattr(config, key, value)
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, config=config, dtype=dtype).eval()
    except (ValueError, KeyError, TypeError, NotImplementedError, OSError) as error:  # the loader's, on a file it cannot take
        raise ModelError(
            f"transformers' GGUF loader cannot load '{gguf_file.name}' ({first_line(error)}), so the file was not checked",
            hint="a general.name of exactly 'mistral' makes it expect another architecture; otherwise try the file in llama.cpp",
        ) from None
    if inv_freq is not None:
        rotary = model.model.rotary_emb
        rotary.inv_freq = torch.from_numpy(inv_freq).to(rotary.inv_freq.device)
        rotary.original_inv_freq = rotary.inv_freq
    return tokenizer, model


def verify_gguf(gguf_file, model_dir, prompts: list[str], quant: str) -> dict:
    """Load `gguf_file` with transformers' GGUF loader, compare its logits on `prompts` with `model_dir`'s.

    The loaded model is corrected to what llama.cpp computes from the file where transformers' loader
    reads less than llama.cpp does (`_as_llama_cpp_reads`), so a key the writer forgot shows here too.
    Two comparisons per prompt. *Layout* (`layout_diff`): against the source with each weight put
    through the same quantization the file holds; it must be ~0 for every quant type, so a wrong
    permutation, name or shape shows however coarse the quantization. *Quality* (`max_abs_diff`,
    `relative_diff`, `argmax_agreement`): against the source in float32, checked with TOLERANCE[quant].
    Also whether the GGUF's own tokenizer gives the same ids. Nothing is asserted: figures are returned.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file, limit = Path(gguf_file), TOLERANCE[quant]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    source = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    exported_tokenizer, exported = _load_as_llama_cpp_reads(gguf_file, torch.float32)
    ids = [tokenizer(prompt, return_tensors="pt")["input_ids"] for prompt in prompts]
    with torch.no_grad():
        floats = [source(x).logits[0] for x in ids]  # (T, vocab) each
        loaded = [exported(x).logits[0] for x in ids]
        _quantize_like_the_file(source, quant)
        expected = [source(x).logits[0] for x in ids]
    rows = []
    for prompt, x, a, b, c in zip(prompts, ids, floats, loaded, expected):
        diff, span = (a - b).abs().max().item(), (a.max() - a.min()).item()
        layout = (c - b).abs().max().item() / span
        same_tokens = exported_tokenizer(prompt)["input_ids"] == x[0].tolist()
        rows.append(
            {
                "prompt": prompt,
                "tokens": x.shape[1],
                "max_abs_diff": diff,
                "logit_range": span,
                "relative_diff": diff / span,
                "argmax_agreement": (a.argmax(-1) == b.argmax(-1)).float().mean().item(),
                "layout_diff": layout,
                "tokens_match": same_tokens,
                "passed": layout <= LAYOUT_TOLERANCE and diff / span <= limit and same_tokens,
            }
        )
    passed = all(r["passed"] for r in rows)
    worst = max(rows, key=lambda r: r["relative_diff"])
    summary = (
        f"{'passed' if passed else 'FAILED'} ({quant}, {len(rows)} prompts): max |logit difference| {worst['max_abs_diff']:.3g} = "
        f"{worst['relative_diff']:.2%} of the logit range (tolerance {limit:.2%}), same top token at "
        f"{min(r['argmax_agreement'] for r in rows):.0%}+ of positions, layout within {max(r['layout_diff'] for r in rows):.1g}, "
        f"tokenizer ids {'match' if all(r['tokens_match'] for r in rows) else 'DIFFER'}"
    )
    return {"quant": quant, "tolerance": limit, "passed": passed, "summary": summary, "prompts": rows}
