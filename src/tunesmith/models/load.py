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

from tunesmith.errors import ModelError, first_line
from tunesmith.models.builtin import BUILTIN_MODELS, builtin_gguf, converted_gguf_dir
from tunesmith.runs.rundir import CHECKPOINT

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


RESAVE = "the save or download was cut off or damaged: save the model again (model.save_pretrained(dir)) or point --model at a complete copy"


def _read_json(file: Path, spec: str) -> dict:
    """A model directory's JSON file (config.json, adapter_config.json) as a dict, or a ModelError naming the file and line."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelError(f"the file is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", where=str(file), hint=RESAVE) from None
    except (UnicodeDecodeError, RecursionError):
        raise ModelError("the file is not JSON text", where=str(file), hint=RESAVE) from None
    except OSError as exc:
        raise ModelError(f"cannot read {file.name}: {exc.strerror}", where=str(file), hint="check the file's permissions") from None
    if not isinstance(data, dict):
        raise ModelError(f"the file holds a JSON {type(data).__name__}; expected an object", where=str(file), hint=RESAVE)
    return data


def check_safetensors(file: Path) -> None:
    """A safetensors file must be whole: its header parses, and the tensors it lists fit in the file (a copy or
    download that stopped early fails here, in microseconds, instead of deep inside the loader)."""
    import struct

    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            head = fh.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            header = json.loads(fh.read(length)) if length is not None and 0 < length <= size - 8 and length < 100_000_000 else None
    except (OSError, ValueError, UnicodeDecodeError):
        header = None
    if not isinstance(header, dict):
        raise ModelError(f"{file.name} is not a readable safetensors file (its header is cut off or damaged)", where=str(file), hint=RESAVE)
    end = max(
        (t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict) and len(t.get("data_offsets") or ()) == 2), default=0
    )
    if 8 + length + end > size:
        raise ModelError(
            f"{file.name} is cut off: its header lists {8 + length + end:,} bytes of tensors but the file has {size:,}", where=str(file), hint=RESAVE
        )


def check_weights(folder: Path, spec: str, *, adapter: bool = False) -> None:
    """The directory holds whole weights: its safetensors files (every shard an index names) are complete;
    pickle-only weights are refused unless trusted (refuse_pickle_weights)."""
    refuse_pickle_weights(folder, spec)
    index = folder / ("adapter_model.safetensors.index.json" if adapter else "model.safetensors.index.json")
    if index.is_file():
        shards = sorted(set((_read_json(index, spec).get("weight_map") or {}).values()))
        missing = [name for name in shards if not (folder / name).is_file()]
        if missing:
            raise ModelError(
                f"the weights are split into {len(shards)} files but {missing[0]} is missing ({len(missing)} of {len(shards)})", where=str(index), hint=RESAVE
            )
    files = sorted(folder.glob("*.safetensors"))
    if not files and not any(p.suffix in PICKLE_SUFFIXES for p in folder.iterdir()):
        what = (
            "an adapter_config.json but no adapter weights (adapter_model.safetensors)" if adapter else "a config.json but no weights (no *.safetensors file)"
        )
        raise ModelError(f"'{spec}' has {what}", hint=RESAVE)
    for file in files:
        check_safetensors(file)


def _unfinished_run(path: Path, spec: str) -> None:
    """A tunesmith run directory whose model/ is not there yet: still training, stopped, or killed."""
    if not (path / "recipe.yaml").is_file():
        return
    checkpoints = sorted((int(m.group(1)), p) for p in path.iterdir() if (m := CHECKPOINT.match(p.name)) and p.is_dir())
    if checkpoints:
        newest = checkpoints[-1][1]
        hint = f"continue it: tunesmith train --resume {spec}, or use the checkpoint {newest} as the model"
    else:
        hint = f"it stopped before its first checkpoint: run it again (tunesmith train -c {path / 'recipe.yaml'} --set output_dir=...)"
    raise ModelError(f"'{spec}' is a tunesmith run that has no model/ yet (unfinished: still running, stopped or killed)", hint=hint)


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
            base = _read_json(path / "adapter_config.json", spec).get("base_model_name_or_path")
            if not base:
                raise ModelError(f"{path}/adapter_config.json names no base_model_name_or_path", hint="set it to the base model")
            # A built-in base is recorded by its cache path; on another machine that cache may be elsewhere.
            builtin = next((name for name in BUILTIN_MODELS if Path(base).name.startswith(f"{name}-")), None)
            if builtin and not Path(base).exists():
                base = builtin
            if (path / "trainer_state.json").is_file() or CHECKPOINT.match(path.name):  # a Trainer checkpoint
                check_weights(path, spec, adapter=True)
            else:
                refuse_pickle_weights(path, spec)
            try:
                under = resolve_model(base)
            except ModelError as exc:
                raise ModelError(
                    f"the base model of this adapter cannot be used: {exc.message}",
                    where=str(path / "adapter_config.json"),
                    hint=f"set base_model_name_or_path to the model the adapter was trained on ({exc.hint})"
                    if exc.hint
                    else "set base_model_name_or_path to the model the adapter was trained on",
                ) from None
            below = (*under.below, under.adapter) if under.adapter else under.below
            return ModelSource(spec, under.path, adapter=str(path), below=below)
        if (path / "config.json").is_file():
            from tunesmith.models.family import family_of

            family_of(_read_json(path / "config.json", spec), where=str(path / "config.json"))  # another architecture: a sentence now
            check_weights(path, spec)
            return ModelSource(spec, str(path))
        _unfinished_run(path, spec)
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


_TOKENIZERS: dict[tuple, object] = {}  # (folder, its files' sizes and mtimes) -> a loaded tokenizer, copied out on each load
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")


def _cached_tokenizer(folder: Path):
    """The tokenizer in `folder`, or a copy of the one loaded from the same unchanged files before (a copy: ~0.1 s, a
    load of SmolLM2's 49k-token vocabulary: ~0.3 s). Callers change what they get (pad token, template), so each gets its own."""
    import copy

    from transformers import AutoTokenizer

    try:
        stats = ((p.name, p.stat()) for p in folder.iterdir() if p.is_file() and not p.name.endswith(WEIGHT_SUFFIXES))
        files = tuple(sorted((name, stat.st_size, stat.st_mtime_ns) for name, stat in stats))
    except OSError:
        return AutoTokenizer.from_pretrained(folder)
    key = (str(folder.resolve()), files)
    if key not in _TOKENIZERS:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        if len(_TOKENIZERS) >= 4:
            _TOKENIZERS.pop(next(iter(_TOKENIZERS)))
        _TOKENIZERS[key] = tokenizer
    try:
        return copy.deepcopy(_TOKENIZERS[key])
    except Exception:  # a tokenizer that cannot be copied is loaded each time
        return AutoTokenizer.from_pretrained(folder)


def load_tokenizer(spec: str | ModelSource):
    """The tokenizer (with chat template) of a model; a pad token is set (eos) when the model has none."""
    source = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    # An adapter directory carries the tokenizer it was trained with (chat template included); a checkpoint may not.
    own = source.adapter and any((Path(source.adapter) / f).is_file() for f in ("tokenizer_config.json", "tokenizer.json"))
    folder = source.adapter if own else source.path
    try:
        tokenizer = _cached_tokenizer(Path(folder))
    except (OSError, ValueError, json.JSONDecodeError) as exc:  # a missing or damaged tokenizer.json / tokenizer_config.json
        raise ModelError(
            f"cannot load the tokenizer of '{source.spec}': {first_line(exc)}",
            where=str(folder),
            hint="the directory needs its tokenizer files (tokenizer.json, tokenizer_config.json): tokenizer.save_pretrained(dir) writes them",
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    from tunesmith.models.template import adapt_chat_template

    adapt_chat_template(tokenizer, source.spec)  # Gemma 2: a system message is folded into the first user turn
    return tokenizer


def load_model(spec: str | ModelSource, *, dtype=None, merge_adapter: bool = False, trainable: bool = False):
    """Load the model (and its adapter, if any) on CPU in `dtype` (torch dtype; default float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    source = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    if source.is_reward_model():
        raise ModelError(
            f"'{source.spec}' is a reward model (it scores answers, it does not write them)",
            hint=f"score with it: tunesmith score --reward-model {source.spec} --prompt ... --response ...",
        )
    dtype = dtype or torch.float32
    try:
        # earlier stages' adapters are merged at full precision, then the weights take `dtype`
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch.float32 if source.below else dtype)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model '{source.spec}': {exc}".splitlines()[0], hint=RESAVE) from exc
    if source.below:
        model = merge_adapters(model, source.below).to(dtype)
    if source.adapter:
        from peft import PeftModel

        check_weights(Path(source.adapter), source.spec if not source.below else source.adapter, adapter=True)
        try:
            model = PeftModel.from_pretrained(model, source.adapter, is_trainable=trainable)
        except (OSError, ValueError) as exc:  # no adapter weights, or weights of another shape than the base's
            raise ModelError(
                f"cannot load the adapter '{source.adapter}': {exc}".splitlines()[0],
                hint="check that the adapter directory is complete and was trained on this base model",
            ) from None
        if merge_adapter:
            model = model.merge_and_unload()
    return model


def merge_adapters(model, adapters) -> object:
    """Apply each adapter in turn and merge it into the weights."""
    from peft import PeftModel

    for adapter in adapters:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise ModelError(
                f"the adapter '{adapter}' that this model was trained on top of is missing",
                hint="keep the earlier run directories in place, or pass a merged model (merge: true)",
            )
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
