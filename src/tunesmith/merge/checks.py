"""The checks a merge recipe gets when it is built: mergekit's pydantic schema, then what mergekit leaves
to merge time (the method's name, its parameters, its input contract), each turned into one sentence
with the file, line and field."""

from __future__ import annotations

import copy
import difflib

from tunesmith.errors import RecipeError
from tunesmith.merge.recipe import MergeRecipe, dotted, existing_prefix, parameter_blocks, slots, spec_of, value_at


def validate(recipe: MergeRecipe) -> None:
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    data = recipe.data
    if not isinstance(data, dict):
        raise RecipeError(
            "a merge recipe must be a mapping (merge_method:, base_model:, models:, ...)",
            where=recipe.where(),
            hint="see mergekit's examples; each model may be any --model value",
        )
    try:
        MergeConfiguration.model_validate(copy.deepcopy(data))
    except ValidationError as exc:
        raise _pydantic_error(recipe, exc.errors()) from None
    except (RuntimeError, ValueError) as exc:  # mergekit's model validators raise RuntimeError
        raise _structure_error(recipe, str(exc)) from None
    method = _method(recipe)
    for path, value in slots(data):
        if not isinstance(value, str) and not (isinstance(value, dict) and isinstance(value.get("model"), str)):
            raise RecipeError(f"{dotted(path)} must be a model name or path, not {value!r}", where=recipe.where(path))
    _check_parameters(recipe, method)


def _method(recipe: MergeRecipe):
    from mergekit.merge_methods import registry

    names = [m.spec.name for m in registry.registered_methods()]
    name = recipe.data["merge_method"]
    if name not in names:
        close = difflib.get_close_matches(str(name), names, n=1)
        raise RecipeError(
            f"unknown merge_method '{name}'",
            where=recipe.where(("merge_method",)),
            hint=f"did you mean '{close[0]}'?" if close else f"mergekit's methods: {', '.join(sorted(names))}",
        )
    return registry.get(name)


def _check_parameters(recipe: MergeRecipe, method) -> None:
    """Unknown parameter names (typos), required ones left out, and the method's input contract: the checks
    mergekit makes only when it plans the merge, after the inputs are loaded."""
    spec = method.spec
    known = {p.name: p for p in spec.parameters}
    for path, params in parameter_blocks(recipe.data):
        for name in params:
            if name not in known:
                close = difflib.get_close_matches(name, list(known), n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"{spec.name} takes: {', '.join(known) or 'no parameters'}"
                raise RecipeError(f"{dotted((*path, name))} is not a parameter of {spec.name}", where=recipe.where((*path, name)), hint=hint)
    models = recipe.data.get("models")
    if not models:
        return  # slices/modules: mergekit checks these per slice when it plans
    base = recipe.base_model
    specs = [spec_of(m["model"]) for m in models]
    ids = specs + ([base] if base and base not in specs else [])
    try:
        spec.contract.validate_ids(ids, base)
    except ValueError as exc:
        message = str(exc).removesuffix(" for default").replace("Merge method", spec.name)
        hint = "add base_model: <the model the others were fine-tuned from>" if "base" in message else "see the method's page in mergekit's docs"
        raise RecipeError(message[0].lower() + message[1:], where=recipe.where(("models",)), hint=hint) from None
    top = recipe.data.get("parameters") or {}
    for p in spec.parameters:
        if not p.required:
            continue
        if p.scope.value == "shared":
            if p.name not in top:
                raise RecipeError(f"{spec.name} needs the parameter '{p.name}'", where=recipe.where(("parameters",)), hint=f"add parameters: {{{p.name}: ...}}")
            continue
        for i, model_spec in enumerate(ids):
            if p.scope.value == "non_base" and model_spec == base:
                continue
            own = (models[i].get("parameters") or {}) if i < len(models) else {}
            if p.name not in own and p.name not in top:
                what = "the base model" if model_spec == base else f"models[{i}]"
                raise RecipeError(
                    f"{spec.name} needs '{p.name}' for {what} ('{model_spec}')",
                    where=recipe.where(("models", i) if i < len(models) else ("base_model",)),
                    hint=f"add parameters: {{{p.name}: ...}} to it, or once under the top-level parameters:",
                )


def _pydantic_error(recipe: MergeRecipe, errors: list[dict]) -> RecipeError:
    """One sentence for the first problem. Union fields (parameters) report one error per alternative;
    the location is cut back to the part that exists in the recipe, and its value is quoted."""
    error = errors[0]
    loc = tuple(error["loc"])
    real = existing_prefix(recipe.data, loc)
    if error["type"] == "missing" and len(real) == len(loc) - 1:
        parent = value_at(recipe.data, real)
        close = difflib.get_close_matches(str(loc[-1]), [str(k) for k in parent], n=1) if isinstance(parent, dict) else []
        hint = (
            f"found '{close[0]}': did you mean '{loc[-1]}'?"
            if close
            else "mergekit's recipe fields: merge_method, base_model, models (or slices), parameters, dtype, tokenizer_source, chat_template"
        )
        return RecipeError(f"{dotted(loc)} is missing", where=recipe.where(real), hint=hint)
    value = value_at(recipe.data, real)
    alternatives = [e for e in errors if existing_prefix(recipe.data, tuple(e["loc"])) == real]
    reason = "" if len(alternatives) > 1 else f" ({error['msg'].removeprefix('Value error, ')})"
    hint = "a parameter is a number, a gradient list of numbers, or a list of {filter: ..., value: ...}" if "parameters" in real else None
    return RecipeError(f"{dotted(real)} cannot be {value!r}{reason}", where=recipe.where(real), hint=hint)


def _structure_error(recipe: MergeRecipe, message: str) -> RecipeError:
    where = recipe.where()
    if message.startswith("Exactly one of 'models'"):
        given = [k for k in ("models", "slices", "modules") if recipe.data.get(k)]
        if not given:
            return RecipeError("the recipe lists no models to merge", where=where, hint="add models: [{model: <a>}, {model: <b>}] (or slices:)")
        return RecipeError(f"the recipe has both {' and '.join(given)}; use one", where=where, hint="models: merges whole models; slices: picks layer ranges")
    if "tokenizer_source and tokenizer" in message:
        return RecipeError(
            "the recipe sets both tokenizer_source and tokenizer; use one", where=where, hint="tokenizer: {source: ...} is the longer form of tokenizer_source"
        )
    if "slices or models" in message:
        return RecipeError("each entry of modules: needs models: or slices:", where=where)
    return RecipeError(f"mergekit rejects the recipe: {message}", where=where)
