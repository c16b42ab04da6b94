"""Tiny models to merge, built once per session from `tiny_model_dir` (2-layer, hidden-64 random Llama):
weight variants written straight as safetensors (no model instantiated), and LoRA adapters with a
nonzero B so they change the weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def write_variant(base: str, target: Path, *, seed: int | None = None, scale: float = 0.02, edit=None) -> str:
    """Copy `base` (config, tokenizer) with its tensors perturbed by N(0, scale²) noise (fixed `seed`)
    and/or changed in place by `edit(tensors)`."""
    import torch
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    for file in Path(base).iterdir():
        if file.is_file() and file.suffix != ".safetensors":
            shutil.copy(file, target / file.name)
    tensors = load_file(str(Path(base) / "model.safetensors"))
    if seed is not None:
        gen = torch.Generator().manual_seed(seed)
        tensors = {k: v + scale * torch.randn(v.shape, generator=gen) for k, v in tensors.items()}
    if edit:
        edit(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(target / "model.safetensors"), metadata={"format": "pt"})
    return str(target)


def build_model(target: Path, tokenizer, *, seed: int = 0, cls: str = "llama", **config) -> str:
    """A fresh random model with the tiny fixture's shape, overridden by `config` (layers, sizes, vocab)."""
    import torch
    import transformers
    from families import TINY

    torch.manual_seed(seed)
    settings = dict(
        vocab_size=len(tokenizer),
        **TINY,  # tests/families.py: 2 layers, hidden 64, 4 heads, 2 kv heads
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    settings.update(config)
    config_cls, model_cls = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "mistral": ("MistralConfig", "MistralForCausalLM")}[cls]
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**settings))
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return str(target)


def build_lora(base: str, target: Path, *, seed: int, r: int, alpha: int, modules: list[str]) -> str:
    """A LoRA adapter on `base` with random A and B (init_lora_weights=False), saved with the tokenizer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=modules, init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # B's default init is small: scale it so the delta is about the size of the weights
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(0.05 / param.abs().mean())
    peft_model.save_pretrained(target)
    AutoTokenizer.from_pretrained(base).save_pretrained(target)
    return str(target)


@pytest.fixture(scope="session")
def merge_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("merge-models")


@pytest.fixture(scope="session")
def variants(tiny_model_dir, merge_dir):
    """Two fine-tune-like variants of the tiny model (the base plus small noise, seeds 1 and 2)."""
    return {name: write_variant(tiny_model_dir, merge_dir / name, seed=seed) for name, seed in (("b", 1), ("c", 2))}


@pytest.fixture(scope="session")
def small_variants(make_model, make_variant):
    """A base and two variants with the embedding cut to 512 rows (ids 0..511 of the tokenizer): the same
    layers as the tiny model without its 3.1M-entry embedding, so a table of every method runs in seconds."""
    base = make_model("small", vocab_size=512)
    return {"base": base, **{name: make_variant(f"small-{name}", base=base, seed=seed) for name, seed in (("b", 1), ("c", 2))}}


@pytest.fixture(scope="session")
def loras(tiny_model_dir, merge_dir):
    """Two LoRA adapters on the tiny model with different ranks, scalings and (overlapping) targets."""
    return {
        "a": build_lora(tiny_model_dir, merge_dir / "lora-a", seed=1, r=4, alpha=8, modules=["q_proj", "v_proj", "up_proj"]),
        "b": build_lora(tiny_model_dir, merge_dir / "lora-b", seed=2, r=8, alpha=8, modules=["q_proj", "k_proj", "down_proj"]),
    }


@pytest.fixture(scope="session")
def make_variant(tiny_model_dir, merge_dir):
    """make_variant(name, seed=None, edit=None, base=tiny): a variant directory (see write_variant)."""
    return lambda name, base=None, **kw: write_variant(base or tiny_model_dir, merge_dir / name, **kw)


@pytest.fixture(scope="session")
def make_model(smol_tokenizer, merge_dir):
    """make_model(name, seed=0, cls="llama", **config): a fresh random model (see build_model)."""
    return lambda name, **kw: build_model(merge_dir / name, smol_tokenizer, **kw)


@pytest.fixture
def merge():
    """run_merge without the per-phase log lines."""
    from tunesmith.merge import run_merge

    return lambda recipe, output_dir, **kw: run_merge(recipe, output_dir, log=lambda *a: None, **kw)


@pytest.fixture
def out(tmp_path):
    """A fresh output directory path (not created: run_merge makes it)."""
    return tmp_path / "merged"
