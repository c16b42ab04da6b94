"""Build a `Recipe` from YAML plus command-line overrides, with errors that point at the line.

Precedence (later wins): defaults in schema.py < recipe file < `--set key=value` and typed flags.
"""

from __future__ import annotations

import difflib
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


def parse_override(item: str) -> tuple[list[str], Any]:
    """`training.learning_rate=1e-4` -> (['training', 'learning_rate'], 0.0001); values are parsed as YAML."""
    if "=" not in item:
        raise RecipeError(f"override '{item}' has no '='", hint="write --set section.field=value, e.g. --set training.learning_rate=1e-4")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
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
    return f"{where}{dotted}: {message} (got {error.get('input')!r})" if "input" in error and not isinstance(error["input"], dict) else f"{where}{dotted}: {message}"


def read_yaml(path: str | Path, what: str, hint: str | None = None) -> tuple[str, Any]:
    """(text, parsed) of a YAML file; an unreadable file or bad YAML is a RecipeError at `file:line` (recipes, merge
    recipes and pipelines all read their files here)."""
    source = str(path)
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise RecipeError(f"cannot read the {what}: {exc.strerror}", where=source, hint=hint) from exc
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        raise RecipeError(f"not valid YAML: {getattr(exc, 'problem', None) or exc}", where=where) from None


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
            raise RecipeError("a recipe must be a mapping of sections (model:, data:, training:, ...)", where=source)
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
