"""The models a merge reads: resolve each recipe spec, check they can be merged (cheaply, from file
headers), and materialise adapters onto their base so mergekit sees plain model directories."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.errors import ModelError
from tunesmith.merge.recipe import dotted
from tunesmith.models.builtin import BUILTIN_MODELS
from tunesmith.models.load import ModelSource, resolve_model

# What a model directory's tokenizer is made of (copied as files: loading and re-saving would rewrite them).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass
class MergeInput:
    """One model of the recipe: the user's spec, what it resolved to, and the directory mergekit reads."""

    spec: str
    source: ModelSource
    name: str
    notes: list[str] = field(default_factory=list)
    merge_path: str | None = None  # a plain model directory (the source's own, or materialised)

    @property
    def is_adapter(self) -> bool:
        return self.source.adapter is not None

    @property
    def stack(self) -> tuple[str, ...]:
        """Base directory, then each adapter applied on it: two inputs with one stack are one model."""
        return _stack(self.source)

    @property
    def tokenizer_dir(self) -> str:
        return _tokenizer_dir(self.source)

    def absolute_spec(self) -> str:
        """The spec as an absolute path (built-in names stay names), so merge.yaml re-runs from anywhere."""
        if self.spec in BUILTIN_MODELS:
            return self.spec
        return "+".join(str(Path(part).expanduser().resolve()) for part in self.spec.split("+"))

    def record(self) -> dict:
        return {
            "spec": self.spec,
            "resolved": self.absolute_spec(),
            "path": self.source.path,
            "adapter": self.source.adapter,
            "below": list(self.source.below),
            "notes": self.notes,
        }


def resolve_inputs(recipe) -> dict[str, MergeInput]:
    """spec -> MergeInput for every model the recipe names; a spec that names nothing is a ModelError at its line."""
    inputs: dict[str, MergeInput] = {}
    by_stack: dict[tuple, MergeInput] = {}
    names: set[str] = set()
    for path, spec in recipe.model_slots():
        if spec in inputs:
            continue
        try:
            source = resolve_spec(spec)
        except ModelError as exc:
            raise ModelError(exc.message, where=f"{recipe.where(path)} ({dotted(path)})", hint=exc.hint) from None
        same = by_stack.get(_stack(source))
        if same:  # two spellings of one model: mergekit must see one input
            inputs[spec] = same
            continue
        name = _unique(re.sub(r"[^\w.-]", "_", Path(spec.split("+")[-1]).name) or "model", names)
        item = MergeInput(spec, source, name, notes=_describe(source))
        inputs[spec] = by_stack[item.stack] = item
    return inputs


def unique_inputs(inputs: dict[str, MergeInput]) -> list[MergeInput]:
    """Each input once, in recipe order (two spellings of one model share a MergeInput)."""
    return list({id(item): item for item in inputs.values()}.values())


def resolve_spec(spec: str) -> ModelSource:
    """resolve_model, plus mergekit's `base+adapter` form."""
    path = Path(spec).expanduser()
    if "+" in spec and not path.exists():
        base, adapter = spec.split("+", 1)
        under = resolve_model(base)
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise ModelError(
                f"'{adapter}' (after the + in '{spec}') is not a PEFT adapter directory", hint="write base+adapter with an adapter directory after the +"
            )
        return ModelSource(spec, under.path, adapter=adapter, below=(*under.below, under.adapter) if under.adapter else under.below)
    return resolve_model(spec)


def check_compatible(sources: list[ModelSource], *, tokenizer_source: str | None = None, same_depth: bool = True) -> None:
    """Refuse, before any work, models that cannot be merged: another architecture, a tensor of another
    shape, another vocabulary or tokenizer (unless `tokenizer_source` says how to align them) or, where
    whole models are merged (`same_depth`), a tensor only one of them has. Reads config.json and the
    safetensors headers only."""
    sources = list({_stack(s): s for s in sources}.values())
    if len(sources) < 2:
        return
    first = sources[0]
    a_config, a_shapes = _config(first.path), tensor_shapes(first.path)
    for other in sources[1:]:
        a, b = first.spec, other.spec
        b_config, b_shapes = _config(other.path), tensor_shapes(other.path)
        a_arch, b_arch = _architecture(a_config), _architecture(b_config)
        if a_arch != b_arch:
            raise ModelError(
                f"'{a}' is a {a_arch} but '{b}' is a {b_arch}; models of different architectures cannot be merged",
                hint="merge fine-tunes of one base model (same family and size)",
            )
        vocab = a_config.get("vocab_size"), b_config.get("vocab_size")
        if not tokenizer_source:
            if vocab[0] != vocab[1]:
                raise ModelError(
                    f"'{a}' has a vocabulary of {vocab[0]} tokens but '{b}' has {vocab[1]}",
                    hint="set tokenizer_source: base (or union) in the recipe so mergekit aligns the embeddings",
                )
            _check_tokenizers(first, other)
        for name in sorted(set(a_shapes) & set(b_shapes)):
            if a_shapes[name] != b_shapes[name]:
                if tokenizer_source and a_shapes[name][:1] == (vocab[0],) and b_shapes[name][:1] == (vocab[1],):
                    continue  # an embedding row per token: tokenizer_source aligns these
                raise ModelError(
                    f"{name} is {_shape(a_shapes[name])} in '{a}' but {_shape(b_shapes[name])} in '{b}'",
                    hint="merge models of the same size: fine-tunes of one base model",
                )
        if same_depth and a_shapes and b_shapes:
            tied = {"lm_head.weight"}  # absent where the embeddings are tied
            only = sorted((set(a_shapes) ^ set(b_shapes)) - tied)
            if only:
                has, lacks = (a, b) if only[0] in a_shapes else (b, a)
                raise ModelError(
                    f"{only[0]} is in '{has}' but not in '{lacks}' ({len(only)} tensors differ)",
                    hint="the models differ in layers or modules; merge models of one size, or pick layers with slices:",
                )


def tensor_shapes(model_dir: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from the safetensors headers (no weights read); {} for a .bin-only model."""
    from safetensors import safe_open

    shapes = {}
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def materialise(item: MergeInput, target: Path, log=print) -> str:
    """Write the adapter merged onto its base (fp32) as a model directory with the adapter's tokenizer."""
    from tunesmith.models.load import load_model

    log(f"merge: materialising {item.spec} onto its base in fp32")
    model = load_model(item.source, merge_adapter=True)
    model.save_pretrained(target)
    copy_tokenizer(item.tokenizer_dir, target)
    del model
    return str(target)


def copy_tokenizer(source_dir: str, target: Path) -> None:
    for name in TOKENIZER_FILES:
        if (Path(source_dir) / name).is_file():
            shutil.copy(Path(source_dir) / name, Path(target) / name)


def _check_tokenizers(a: ModelSource, b: ModelSource) -> None:
    fa, fb = Path(_tokenizer_dir(a)) / "tokenizer.json", Path(_tokenizer_dir(b)) / "tokenizer.json"
    if fa.is_file() and fb.is_file() and fa.read_bytes() == fb.read_bytes():
        return  # the common case (fine-tunes of one base), without parsing 2 MB of JSON twice
    va, vb = _vocab(_tokenizer_dir(a)), _vocab(_tokenizer_dir(b))
    if va is None or vb is None or va == vb:
        return
    ia, ib = ({i: tok for tok, i in v.items()} for v in (va, vb))
    first = min(i for i in set(ia) | set(ib) if ia.get(i) != ib.get(i))
    raise ModelError(
        f"'{a.spec}' and '{b.spec}' have different tokenizers: token id {first} is {ia.get(first)!r} in the first but {ib.get(first)!r} in the second",
        hint="set tokenizer_source: base (or union) in the recipe so mergekit maps the embeddings onto one tokenizer",
    )


def _vocab(directory: str) -> dict[str, int] | None:
    """Token -> id: from tokenizer.json when there is one (cheap), else from the loaded tokenizer."""
    file = Path(directory) / "tokenizer.json"
    if file.is_file():
        data = json.loads(file.read_text(encoding="utf-8"))
        vocab = data.get("model", {}).get("vocab") or {}
        vocab = dict(vocab) if isinstance(vocab, dict) else {piece[0]: i for i, piece in enumerate(vocab)}
        vocab.update({t["content"]: t["id"] for t in data.get("added_tokens", [])})
        return vocab
    if not (Path(directory) / "tokenizer_config.json").is_file():
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory).get_vocab()


def _tokenizer_dir(source: ModelSource) -> str:
    """An adapter directory carries the tokenizer (and chat template) it was trained with."""
    adapter = source.adapter
    return adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else source.path


def _describe(source: ModelSource) -> list[str]:
    if not source.adapter:
        return ["full model"]
    config = json.loads((Path(source.adapter) / "adapter_config.json").read_text())
    notes = [f"{config.get('peft_type', 'PEFT')} adapter (r={config.get('r')}, alpha={config.get('lora_alpha')}) on {source.path}"]
    if source.below:
        notes.append(f"on top of {len(source.below)} earlier adapter(s), merged into the base first")
    return notes


def _config(model_dir: str) -> dict:
    file = Path(model_dir) / "config.json"
    return json.loads(file.read_text()) if file.is_file() else {}


def _architecture(config: dict) -> str:
    return "/".join(config.get("architectures") or [config.get("model_type", "unknown model")])


def _shape(shape: tuple) -> str:
    return "x".join(map(str, shape)) or "a scalar"


def _stack(source: ModelSource) -> tuple[str, ...]:
    parts = (source.path, *source.below, *([source.adapter] if source.adapter else []))
    return tuple(str(Path(p).expanduser().resolve()) if Path(p).expanduser().exists() else p for p in parts)


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    taken.add(candidate)
    return candidate
