"""Resolve what the user typed after `--model` to files on disk, and load them.

Accepted: a built-in name (`smollm2-135m-instruct`), a local model directory, a
PEFT adapter directory (its base is loaded too), a tunesmith run, merge or export
directory (its `model/`), a local `.gguf` file, or a Hub id (only where the Hub can be reached).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import ModelError
from tunesmith.models.builtin import BUILTIN_MODELS, builtin_gguf, converted_gguf_dir

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# what marks a tunesmith output directory whose model lies in <dir>/model: a training run, a merge, an export
RUN_MARKERS = ("recipe.yaml", "merge.json", "export.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
TRUST_PICKLE = "TUNESMITH_TRUST_PICKLE_WEIGHTS"


def refuse_pickle_weights(folder: Path, spec: str) -> None:
    """Weights are read from safetensors; a folder whose only weights are pickle files (.bin, .pt, ...) is refused:
    unpickling runs whatever code the file holds. `tunesmith --trust-pickle-weights` (or TUNESMITH_TRUST_PICKLE_WEIGHTS=1) allows it."""
    if os.environ.get(TRUST_PICKLE) == "1" or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and p.is_file())
    if pickles:
        raise ModelError(
            f"'{spec}' holds its weights only as pickle files ({', '.join(pickles[:3])}); loading a pickle runs any code it contains, so tunesmith reads safetensors only",
            hint="convert the weights to safetensors (model.save_pretrained(dir) does), or, for a file you trust, run: tunesmith --trust-pickle-weights ...",
        )


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are: `path` is a transformers directory; `adapter` a PEFT adapter on top of it.

    `below` holds the adapters of earlier stages, oldest first, that `adapter` was trained on top of
    (e.g. a DPO adapter on an SFT adapter): they are merged into the base before `adapter` is applied.
    """

    spec: str
    path: str
    adapter: str | None = None
    below: tuple[str, ...] = ()

    def adapter_task(self) -> str | None:
        """The adapter's peft task type (CAUSAL_LM, SEQ_CLS, ...), None without an adapter."""
        if not self.adapter:
            return None
        return json.loads((Path(self.adapter) / "adapter_config.json").read_text()).get("task_type")

    def is_reward_model(self) -> bool:
        """A one-score classifier (tunesmith reward): a SEQ_CLS adapter, or a full *ForSequenceClassification model."""
        if self.adapter:
            return self.adapter_task() == "SEQ_CLS"
        file = Path(self.path) / "config.json"
        config = json.loads(file.read_text()) if file.is_file() else {}
        one_score = config.get("num_labels", len(config.get("id2label") or {0: 0, 1: 1})) == 1  # transformers saves id2label
        return one_score and any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])


def resolve_model(spec: str) -> ModelSource:
    """Turn a `--model` value into a `ModelSource`, converting GGUF files once and caching them."""
    if spec in BUILTIN_MODELS:
        return ModelSource(spec, str(converted_gguf_dir(builtin_gguf(spec), spec)))
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(spec, str(converted_gguf_dir(path.resolve())))
    if path.is_dir():
        if (path / "model").is_dir() and any((path / f).is_file() for f in RUN_MARKERS):  # a tunesmith run, merge or export
            return resolve_model(str(path / "model"))
        if (path / "adapter_config.json").is_file():
            base = json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
            if not base:
                raise ModelError(f"{path}/adapter_config.json names no base_model_name_or_path", hint="set it to the base model")
            # A built-in base is recorded by its cache path; on another machine that cache may be elsewhere.
            builtin = next((name for name in BUILTIN_MODELS if Path(base).name.startswith(f"{name}-")), None)
            if builtin and not Path(base).exists():
                base = builtin
            refuse_pickle_weights(path, spec)
            under = resolve_model(base)
            below = (*under.below, under.adapter) if under.adapter else under.below
            return ModelSource(spec, under.path, adapter=str(path), below=below)
        if (path / "config.json").is_file():
            refuse_pickle_weights(path, spec)
            return ModelSource(spec, str(path))
        raise ModelError(
            f"the directory '{spec}' holds no model (no config.json, adapter_config.json or run directory)",
            hint="point --model at a directory written by save_pretrained, a tunesmith run, or a .gguf file",
        )
    if path.exists():
        raise ModelError(f"'{spec}' is a file but not a .gguf model", hint="use a .gguf file or a model directory")
    if HUB_ID.match(spec) and not spec.startswith((".", "/", "~")):
        from tunesmith.hub import require_hub

        require_hub("model", spec, local_hint=f"use a local directory, a .gguf file, or the built-in '{next(iter(BUILTIN_MODELS))}'")
        return ModelSource(spec, spec)
    close = difflib.get_close_matches(spec, list(BUILTIN_MODELS), n=1)
    raise ModelError(
        f"model '{spec}' is neither a built-in name, a local path nor a Hub id (org/name)",
        hint=f"did you mean '{close[0]}'?" if close else f"built-in models: {', '.join(BUILTIN_MODELS)}",
    )


def load_tokenizer(spec: str | ModelSource):
    """The tokenizer (with chat template) of a model; a pad token is set (eos) when the model has none."""
    from transformers import AutoTokenizer

    source = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    # An adapter directory carries the tokenizer it was trained with (chat template included).
    tokenizer = AutoTokenizer.from_pretrained(source.adapter or source.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: str | ModelSource, *, dtype=None, merge_adapter: bool = False, trainable: bool = False):
    """Load the model (and its adapter, if any) on CPU in `dtype` (torch dtype; default float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    source = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    if source.is_reward_model():
        raise ModelError(f"'{source.spec}' is a reward model (it scores answers, it does not write them)", hint=f"score with it: tunesmith score --reward-model {source.spec} --prompt ... --response ...")
    dtype = dtype or torch.float32
    try:
        # earlier stages' adapters are merged at full precision, then the weights take `dtype`
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32 if source.below else dtype)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model '{source.spec}': {exc}".splitlines()[0]) from exc
    if source.below:
        model = merge_adapters(model, source.below).to(dtype)
    if source.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, source.adapter, is_trainable=trainable)
        if merge_adapter:
            model = model.merge_and_unload()
    return model


def merge_adapters(model, adapters) -> object:
    """Apply each adapter in turn and merge it into the weights."""
    from peft import PeftModel

    for adapter in adapters:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise ModelError(f"the adapter '{adapter}' that this model was trained on top of is missing", hint="keep the earlier run directories in place, or pass a merged model (merge: true)")
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return model


@dataclass(frozen=True)
class Loaded:
    """A model ready to use: where it came from, the model (on CPU) and its tokenizer."""

    source: ModelSource
    model: object
    tokenizer: object


def load_pretrained(spec: str | ModelSource, *, precision: str = "fp32") -> Loaded:
    """Resolve `spec` once and load its model and tokenizer; `precision` is auto|bf16|fp16|fp32 (see precision.py)."""
    from tunesmith.models.precision import resolve_precision

    source = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    return Loaded(source, load_model(source, dtype=resolve_precision(precision).dtype), load_tokenizer(source))


def meta_model(model_name: str, head: str = "causal"):
    """The model's architecture with no weights (meta device): shapes and counts in milliseconds.
    head "reward": the one-score sequence-classification model on the same body."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(resolve_model(model_name).path)
    if head == "reward":
        config.num_labels = 1
    with torch.device("meta"):
        return (AutoModelForSequenceClassification if head == "reward" else AutoModelForCausalLM).from_config(config)
