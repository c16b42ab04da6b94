"""A merge recipe: mergekit's own YAML shape, where each `model` is any tunesmith `--model` value.

    merge_method: slerp                  # any mergekit method (linear, slerp, ties, dare_ties, ...)
    base_model: runs/sft-pirate          # a run dir, adapter dir, model dir, built-in name or .gguf
    models:
      - model: runs/sft-pirate
      - model: runs/dpo-pirate
    parameters:
      t: [{filter: self_attn, value: [0, 0.5, 0.3, 0.7, 1]}, {filter: mlp, value: [1, 0.5, 0.7, 0.3, 0]}, {value: 0.5}]
    dtype: float32

mergekit's pydantic model (`MergeConfiguration`) is the schema: checks.py validates with it, then checks what it
leaves to merge time (the method's name, its parameters, its inputs) so a recipe fails on load, with the
file, line and field, instead of half-way through a merge.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunesmith.errors import RecipeError

NOT_MODELS = ("union", "base")  # tokenizer_source / tokenizer.source values that name no model


@dataclass
class MergeRecipe:
    """The recipe as data (mergekit's YAML shape); `file` is where it came from, for error messages."""

    data: dict
    file: str | None = None
    lines: dict[tuple, int] = field(default_factory=dict, repr=False)  # path in `data` -> 1-based line

    def __post_init__(self):
        from tunesmith.merge.checks import validate

        validate(self)

    @property
    def method(self) -> str:
        return self.data["merge_method"]

    @property
    def base_model(self) -> str | None:
        return spec_of(self.data["base_model"]) if self.data.get("base_model") else None

    @property
    def tokenizer_source(self) -> str | None:
        """What the tokenizer is built from (a spec, "union" or "base"); None: copied from the base model."""
        token = self.data.get("tokenizer") or {}
        value = self.data.get("tokenizer_source") or token.get("source")
        return spec_of(value) if value else None

    def where(self, path: tuple = ()) -> str:
        """`file:line` of the deepest part of `path` the file has, for RecipeError(where=...)."""
        source = self.file or "merge flags"
        for end in range(len(path), 0, -1):  # the whole document's "line 1" says nothing: file only
            if path[:end] in self.lines:
                return f"{source}:{self.lines[path[:end]]}"
        return source

    def model_slots(self) -> list[tuple[tuple, str]]:
        """(path in data, spec) of every model the recipe names: base_model first, then the inputs, then tokenizer donors."""
        return [(path, spec_of(value)) for path, value in slots(self.data)]

    def references(self) -> list[str]:
        """Each model spec once, in recipe order (base first)."""
        return list(dict.fromkeys(spec for _, spec in self.model_slots()))

    def with_models(self, mapping: dict[str, Any]) -> dict:
        """A copy of `data` with each model spec replaced by `mapping[spec]` (a resolved path, or mergekit's dict form)."""
        data = copy.deepcopy(self.data)
        for path, spec in self.model_slots():
            parent = data
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = mapping[spec]
        return data

    def to_yaml(self) -> str:
        return yaml.dump(self.data, Dumper=_FlowLists, sort_keys=False)


def load_merge_recipe(path: str | Path) -> MergeRecipe:
    """Read and check a merge recipe file; every problem is a RecipeError naming the file, line and field."""
    from tunesmith.recipes.load import read_yaml

    source = str(path)
    text, data = read_yaml(path, "merge recipe", hint="check the path to the recipe")
    node = yaml.compose(text)
    return MergeRecipe(data, file=source, lines=_node_lines(node))


def slerp_recipe(model_a: str, model_b: str, t: float | list, *, attn_t=None, mlp_t=None, dtype: str = "float32") -> MergeRecipe:
    """SLERP from `model_a` (t=0) to `model_b` (t=1). `t`, `attn_t`, `mlp_t`: a number, or a gradient list
    spread over the layers (mergekit's example: attn_t=[0, 0.5, 0.3, 0.7, 1], mlp_t=[1, 0.5, 0.7, 0.3, 0])."""
    t_setting: Any = t
    if attn_t is not None or mlp_t is not None:
        t_setting = [{"filter": f, "value": v} for f, v in (("self_attn", attn_t), ("mlp", mlp_t)) if v is not None]
        t_setting.append({"value": t})
    return MergeRecipe(
        {
            "merge_method": "slerp",
            "base_model": model_a,
            "models": [{"model": model_a}, {"model": model_b}],
            "parameters": {"t": t_setting},
            "dtype": dtype,
        }
    )


def recipe_from_flags(
    method: str,
    models: list[str],
    *,
    base: str | None = None,
    weights: list[float] | None = None,
    density: float | list[float] | None = None,
    t: float | list | None = None,
    dtype: str = "float32",
    tokenizer_source: str | None = None,
    chat_template: str | None = None,
    parameters: dict | None = None,
) -> MergeRecipe:
    """A recipe from command-line values: one `weights`/`density` entry per model (density may be one number for all)."""
    if method == "slerp" and base is None and len(models) == 2:
        base = models[0]  # slerp goes from its base (t=0) to the other model (t=1)
    for name, values in (("weights", weights), ("density", density)):
        if isinstance(values, list) and len(values) != len(models):
            raise RecipeError(
                f"--{name} has {len(values)} values for {len(models)} models",
                where="merge flags",
                hint=f"give one --{name} value per --model, in the same order",
            )
    entries = []
    for i, spec in enumerate(models):
        params = {}
        if weights is not None:
            params["weight"] = weights[i]
        if density is not None:
            params["density"] = density[i] if isinstance(density, list) else density
        entries.append({"model": spec, **({"parameters": params} if params else {})})
    data: dict[str, Any] = {"merge_method": method, "models": entries, "dtype": dtype}
    if base is not None:
        data["base_model"] = base
    shared = dict(parameters or {})
    if t is not None:
        shared["t"] = t
    if shared:
        data["parameters"] = shared
    if tokenizer_source:
        data["tokenizer_source"] = tokenizer_source
    if chat_template:
        data["chat_template"] = chat_template
    return MergeRecipe(data)


# -- walking the recipe ------------------------------------------------------------------------------


def spec_of(value) -> str:
    """A slot's value as a --model spec; mergekit's dict form {model, lora} becomes its `model+lora` string."""
    if isinstance(value, dict):
        return value["model"] + (f"+{value['lora']}" if value.get("lora") else "")
    return value


def slots(data: dict) -> list[tuple[tuple, Any]]:
    """(path, value) of every place a model is named, base_model first."""
    found = []
    if data.get("base_model"):
        found.append((("base_model",), data["base_model"]))

    def inputs(block, prefix):
        for i, entry in enumerate(block.get("models") or []):
            found.append(((*prefix, "models", i, "model"), entry["model"]))
        for i, out in enumerate(block.get("slices") or []):
            if out.get("base_model"):
                found.append(((*prefix, "slices", i, "base_model"), out["base_model"]))
            for j, entry in enumerate(out.get("sources") or []):
                found.append(((*prefix, "slices", i, "sources", j, "model"), entry["model"]))

    inputs(data, ())
    for name, module in (data.get("modules") or {}).items():
        inputs(module, ("modules", name))
    if data.get("tokenizer_source") and data["tokenizer_source"] not in NOT_MODELS:
        found.append((("tokenizer_source",), data["tokenizer_source"]))
    token = data.get("tokenizer") or {}
    if token.get("source") and token["source"] not in NOT_MODELS:
        found.append((("tokenizer", "source"), token["source"]))
    for name, setting in (token.get("tokens") or {}).items():
        source = (setting or {}).get("source")
        if isinstance(source, str):
            found.append((("tokenizer", "tokens", name, "source"), source))
        elif isinstance(source, dict) and source.get("kind") == "model_token":
            found.append((("tokenizer", "tokens", name, "source", "model"), source["model"]))
    return found


def parameter_blocks(data: dict) -> list[tuple[tuple, dict]]:
    """(path, parameters) of every `parameters:` mapping in the recipe."""
    blocks = []

    def visit(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "parameters" and isinstance(value, dict):
                    blocks.append(((*path, key), value))
                else:
                    visit(value, (*path, key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                visit(value, (*path, i))

    visit(data, ())
    return blocks


def _node_lines(node, path: tuple = (), lines: dict | None = None) -> dict[tuple, int]:
    """Path (keys and list indices) -> 1-based line of each node in a composed YAML document."""
    lines = {} if lines is None else lines
    if node is None:
        return lines
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _node_lines(value, (*path, key.value), lines)
            lines[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, value in enumerate(node.value):
            _node_lines(value, (*path, i), lines)
    return lines


class _FlowLists(yaml.SafeDumper):
    """Gradient lists of numbers on one line ([0, 0.5, 1]), as mergekit writes them."""


_FlowLists.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=all(isinstance(e, (int, float)) for e in data))
)


def existing_prefix(data, loc: tuple) -> tuple:
    """The longest prefix of `loc` that is a real path in `data` (pydantic adds union-branch names)."""
    node, found = data, ()
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
        found = (*found, part)
    return found


def value_at(data, path: tuple):
    for part in path:
        data = data[part]
    return data


def dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the recipe"
