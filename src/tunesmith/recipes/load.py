"""Build a `Recipe` from YAML plus command-line overrides, with errors that point at the line.

Precedence (later wins): defaults in schema.py < recipe file < `--set key=value` and typed flags.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tunesmith.errors import RecipeError
from tunesmith.recipes.schema import Recipe, section_model


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each mapping key path in a YAML document to its 1-based line number."""
    lines: dict[tuple[str, ...], int] = {}

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                lines[sub] = key.start_mark.line + 1
                walk(value, sub)

    try:
        walk(yaml.compose(text), ())
    except yaml.YAMLError:
        pass
    return lines


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: int, again: int):
        self.key, self.first, self.again = key, first, again


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key_node.start_mark.line + 1
                if key_node.value in seen:
                    raise _DuplicateKey(key_node.value, seen[key_node.value], line)
                seen[key_node.value] = line
        return super().construct_mapping(node, deep)


def _yaml_hint(problem: str, line: int | None) -> str:
    at = f" on line {line}" if line else ""
    if "\\t" in problem or "tab" in problem:
        return f"YAML indents with spaces, not tabs: replace the tab{at} with spaces"
    return f"check the indentation, the colon after each key and the closing brackets and quotes{at} (or the line above it)"


def parse_override(item: str) -> tuple[list[str], Any]:
    """`training.learning_rate=1e-4` -> (['training', 'learning_rate'], 0.0001); values are parsed as YAML."""
    if "=" not in item:
        raise RecipeError(f"override '{item}' has no '='", hint="write --set section.field=value, e.g. --set training.learning_rate=1e-4")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(
            f"the value of --set {item} is not valid YAML: {problem}",
            where="command line",
            hint=f"quote it to pass text (--set '{key}=\"...\"'), or close its brackets",
        ) from None
    # YAML reads 1e-4 as a string (no dot before the exponent); users mean a number.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            pass
    return key.strip().split("."), value


def set_path(data: dict, path: list[str], value: Any) -> None:
    for part in path[:-1]:
        node = data.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"cannot set '{'.'.join(path)}': '{part}' is a value, not a section")
        data = node
    data[path[-1]] = value


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names valid at the parent of location `loc` (for did-you-mean)."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        model = section_model(getattr(field, "annotation", None))
        if model is None:
            return []
    return list(model.model_fields)


def _explain(error: dict, source: str | None, lines: dict, overridden: set[tuple[str, ...]]) -> str:
    loc = tuple(str(p) for p in error["loc"] if not str(p).startswith("function-"))
    named_in_message = False
    if not loc:  # a check across fields (model validator): point at the field its sentence names, where the file has it
        named = [tuple(m.split(".")) for m in re.findall(r"\b[a-z_]+(?:\.[a-z_]+)+\b", error["msg"])]
        loc = next((n for n in named if n in lines or n in overridden), ())
        named_in_message = bool(loc)
    dotted = ".".join(loc) or "recipe"
    where = ""
    if loc in overridden:
        where = "command line: "
    elif source and loc in lines:
        where = f"{source}:{lines[loc]}: "
    elif source:
        where = f"{source}: "
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(loc[-1], _fields_at(Recipe, loc), n=1, cutoff=0.5)
        hint = f"; did you mean '{'.'.join((*loc[:-1], close[0]))}'?" if close else f"; known fields here: {', '.join(_fields_at(Recipe, loc))}"
        return f"{where}unknown field '{dotted}'{hint}"
    message = error["msg"].removeprefix("Value error, ")
    if named_in_message:
        return f"{where}{message}"
    return (
        f"{where}{dotted}: {message} (got {error.get('input')!r})"
        if "input" in error and not isinstance(error["input"], dict)
        else f"{where}{dotted}: {message}"
    )


def read_yaml(path: str | Path, what: str, hint: str | None = None) -> tuple[str, Any]:
    """(text, parsed) of a YAML file; an unreadable file or bad YAML is a RecipeError at `file:line` (recipes, merge
    recipes and pipelines all read their files here)."""
    from tunesmith.data.readers import decode_text

    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RecipeError(f"cannot read the {what}: {exc.strerror}", where=source, hint=hint) from exc
    text = decode_text(data, source, "YAML text", Path(path).name, error=RecipeError)
    try:
        return text, yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise RecipeError(
            f"the key '{exc.key}' is given twice in one section (lines {exc.first} and {exc.again}); YAML would keep only the last",
            where=f"{source}:{exc.again}",
            hint="keep one of them",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        where = f"{source}:{line}" if line else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        column = f" (column {mark.column + 1})" if mark else ""
        raise RecipeError(f"not valid YAML: {problem}{column}", where=where, hint=_yaml_hint(problem, line)) from None


def load_recipe(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None, stage: str | None = None) -> Recipe:
    """Read a recipe file (optional), apply overrides (`a.b=v` strings or {dotted: value}), validate.
    `stage`: the stage to take where neither the file nor the overrides name one (a stage's own command)."""
    data: dict = {}
    text = ""
    source = None
    if path is not None:
        source = str(path)
        text, data = read_yaml(path, "recipe", hint="check the path given to --recipe")
        data = data or {}
        if not isinstance(data, dict):
            raise RecipeError(
                f"a recipe must be a mapping of sections (model:, data:, training:, ...), not a {type(data).__name__}",
                where=source,
                hint="`tunesmith recipe` prints a complete recipe to start from",
            )
    overridden: set[tuple[str, ...]] = set()
    items = overrides.items() if isinstance(overrides, dict) else [parse_override(o) for o in overrides or []]
    for key, value in items:
        parts = key.split(".") if isinstance(key, str) else key
        set_path(data, parts, value)
        overridden.add(tuple(parts))
    if stage is not None:
        data.setdefault("stage", stage)
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        messages = [_explain(e, source, _key_lines(text), overridden) for e in exc.errors()]
        raise RecipeError("\n".join(messages), hint="`tunesmith recipe` prints every field with its default and meaning") from None


def dump_recipe(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (what a run directory stores and `--recipe` reads back)."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
