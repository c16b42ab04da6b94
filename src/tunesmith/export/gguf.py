"""Write a transformers Llama-family model directory as a GGUF file (llama.cpp, Ollama), and check it.

The weights stream from the safetensors files one tensor at a time (memory: one tensor, not the
model), through the `gguf` package's writer, into a temporary file that is renamed into place.
`verify_gguf` loads the result with transformers' own GGUF loader and compares logits with the
source model: a wrong permutation, name or tokenizer shows up there, not in a user's chat.
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

from tunesmith.errors import ModelError

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM")  # llama.cpp writes Mistral as arch "llama"
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

# llama.cpp's names for the pre-tokenizer (how text is split before BPE), fingerprinted from tokenizer.json.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


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


def _config(model_dir: Path):
    """The model's config, refused unless it is a Llama-family model this writer handles."""
    file = model_dir / "config.json"
    if not file.is_file():
        raise ModelError(f"'{model_dir}' holds no config.json", hint="point at a directory written by save_pretrained")
    arch = (json.loads(file.read_text()).get("architectures") or ["(none)"])[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ModelError(
            f"the model's architecture is {arch}, and the GGUF export handles {' and '.join(SUPPORTED_ARCHITECTURES)} only",
            where=str(file),
            hint="export the merged model and convert it with llama.cpp's convert_hf_to_gguf.py",
        )
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        kind = rope.get("rope_type", rope.get("type"))
        raise ModelError(
            f"the model uses '{kind}' rope scaling, which the GGUF export does not write yet",
            where=str(file),
            hint="convert it with llama.cpp's convert_hf_to_gguf.py",
        )
    return config


def _pre_tokenizer(pre: dict | None) -> str:
    """llama.cpp's pre-tokenizer name for tokenizer.json's `pre_tokenizer` ("default": not recognised)."""
    steps = (pre or {}).get("pretokenizers", [pre] if pre else [])
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and steps[0].get("pattern", {}).get("Regex") == _LLAMA3_SPLIT:
        return "llama-bpe"
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
    pre = _pre_tokenizer(spec.get("pre_tokenizer"))
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
    if special.chat_template is None and tokenizer.chat_template:
        special.chat_template = tokenizer.chat_template
    special.add_to_gguf(writer, quiet=True)
    return {
        "tokens": len(tokens),
        "pre_tokenizer": pre,
        "eos_token_id": special.special_token_ids.get("eos"),
        "chat_template": special.chat_template is not None,
    }


def _file_type(quant: str) -> int:
    """general.file_type: llama.cpp's name for the file's main tensor type."""
    return gguf.LlamaFileType[{"f32": "ALL_F32", "f16": "MOSTLY_F16"}.get(quant, f"MOSTLY_{quant.upper()}")]


def _add_model_metadata(writer, config, name: str, quant: str) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads or config.num_attention_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(_file_type(quant))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _plan(model_dir: Path, config) -> list[tuple[str, str, Path]]:
    """(hf name, gguf name, file) per tensor written, in llama.cpp's order (embeddings, blocks, output)."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelError(f"'{model_dir}' has no .safetensors weights", hint="save it with save_pretrained (safetensors is the default)")
    tied = bool(getattr(config, "tie_word_embeddings", False))
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
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
                f"the tensor '{hf}' has no GGUF name in the llama architecture",
                where=str(file),
                hint="the model is not a plain Llama; convert it with llama.cpp's convert_hf_to_gguf.py",
            )
        plan.append((hf, target, file))

    def block(t) -> int:  # token_embd first, then the layers in order, then the rest
        return int(m.group(1)) if (m := re.match(r"blk\.(\d+)\.", t[1])) else (-1 if t[1].startswith("token_embd") else 1 << 30)

    return sorted(plan, key=lambda t: (block(t), t[1]))


def _declare_tensors(writer, plan, config, quant: str) -> tuple[list, list[str]]:
    """Each tensor's name, shape, type and byte size into the header: (types chosen, fallback notes)."""
    tied, kinds, notes = bool(getattr(config, "tie_word_embeddings", False)), [], []
    for hf, target, file in plan:
        with safe_open(file, framework="pt") as f:
            shape = tuple(f.get_slice(hf).get_shape())  # (out, in), read without loading the tensor
        qtype, note = tensor_type(target, shape, quant, tied)
        elements, block_bytes = GGML_QUANT_SIZES[qtype]
        writer.add_tensor_info(target, shape, np.dtype(np.float32), int(np.prod(shape)) // elements * block_bytes, raw_dtype=qtype)
        kinds.append(qtype)
        notes += [note] if note else []
    return kinds, notes


def _stream_tensors(writer, plan, kinds, config, progress) -> None:
    """One tensor at a time: read from safetensors, permute q/k for llama.cpp's rotary layout, quantize, append."""
    import torch

    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads or config.num_attention_heads}
    plain = {T.F32: np.float32, T.F16: np.float16}
    started = last = time.perf_counter()
    for i, ((hf, target, file), qtype) in enumerate(zip(plan, kinds)):
        with safe_open(file, framework="pt") as f:
            w = f.get_tensor(hf).to(torch.float32).numpy()
        if m := re.match(r"blk\.\d+\.(attn_q|attn_k)\.", target):
            w = permute_qk(w, heads[m.group(1)])
        writer.write_tensor_data(w.astype(plain[qtype]) if qtype in plain else gguf.quants.quantize(w, qtype))
        now = time.perf_counter()
        if progress and (now - last >= 2.0 or i == len(plan) - 1):  # a line every 2 s: never silent on a big model
            last = now
            progress(f"gguf: tensor {i + 1}/{len(plan)} {target} {qtype.name} ({now - started:.0f} s)")


def write_gguf(model_dir, out_file, quant: str = "f16", *, name: str | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Write `model_dir` (a transformers Llama directory) to `out_file` as GGUF in `quant`; returns what was written.

    The file appears only when complete (tmp file + os.replace). `progress` gets a line every 2 s of
    the tensors. Returned: path, quant, bytes, seconds, tensors, tensor types, notes (fallbacks), tokenizer.
    """
    if quant not in QUANT_TYPES:
        raise ModelError(f"the GGUF quantization '{quant}' is not one this export writes", hint=f"one of: {', '.join(QUANT_TYPES)}")
    started, model_dir, out_file = time.perf_counter(), Path(model_dir), Path(out_file)
    config = _config(model_dir)
    plan = _plan(model_dir, config)
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])  # opens nothing until the header is written
    _add_model_metadata(writer, config, name or model_dir.name, quant)
    notes = (
        [f"sliding_window={config.sliding_window} is not written (llama.cpp runs Mistral with full attention)"]
        if getattr(config, "sliding_window", None)
        else []
    )
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

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, model.config.num_hidden_layers)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    with torch.no_grad():
        for hf, p in model.named_parameters():  # a tied lm_head is the embedding, listed once
            qtype, _ = tensor_type(names.get_name(hf, try_suffixes=(".weight", ".bias")), tuple(p.shape), quant, tied)
            w = p.detach().float().numpy()
            p.copy_(torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(w, qtype), qtype).reshape(w.shape)))


def verify_gguf(gguf_file, model_dir, prompts: list[str], quant: str) -> dict:
    """Load `gguf_file` with transformers' GGUF loader, compare its logits on `prompts` with `model_dir`'s.

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
    exported_tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    source = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    exported = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32).eval()
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
