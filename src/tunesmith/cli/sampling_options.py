"""The sampling flags (--temperature, --top-k, --top-p, --min-p, --repetition-penalty), declared once.

`generate`, `chat` and `inspect logits` share them with different defaults; each command names its
defaults in the decorator and receives one checked `SamplingParams` (a bad value is a TunesmithError
before any model is loaded).
"""

from __future__ import annotations

import functools
import inspect

import typer

# flag -> (type, default, typer.Option constraints, help); the defaults are SamplingParams' own (repeated
# here so that `--help` does not import torch; a test keeps them equal)
SAMPLING_FLAGS: dict[str, tuple[type, float, dict, str]] = {
    "temperature": (float, 1.0, {"min": 0.0}, "0 = greedy."),
    "top_k": (int, 0, {"min": 0}, "Keep the k most likely tokens (0 = off)."),
    "top_p": (float, 1.0, {}, "Nucleus: the smallest set with this much probability (1 = off)."),
    "min_p": (float, 0.0, {}, "Keep tokens with p >= min_p * p_max (0 = off)."),
    "repetition_penalty": (float, 1.0, {}, "> 1 discourages repeating tokens (1 = off)."),
}


def sampling_options(*, help_texts: dict[str, str] | None = None, **defaults):
    """Put the sampling flags where the command has its `params` parameter; they reach it as `params: SamplingParams`.

    defaults: this command's defaults (`temperature=0.7, top_p=0.95`), in the order the flags should be
    listed; flags not named follow with SamplingParams' defaults. help_texts: this command's wording of a flag's help.
    """
    unknown = set(defaults) - set(SAMPLING_FLAGS)
    if unknown:
        raise ValueError(f"unknown sampling flags {sorted(unknown)}; known: {list(SAMPLING_FLAGS)}")
    order = [*defaults, *(name for name in SAMPLING_FLAGS if name not in defaults)]
    texts = {name: flag[3] for name, flag in SAMPLING_FLAGS.items()} | (help_texts or {})

    def decorate(func):
        signature = inspect.signature(func)
        if "params" not in signature.parameters:
            raise TypeError(f"{func.__name__} needs a `params` parameter where the sampling flags go")
        flags = []
        for name in order:
            kind, default, limits, _ = SAMPLING_FLAGS[name]
            option = typer.Option(defaults.get(name, default), **limits, help=texts[name])
            flags.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind))
        params = []  # keyword-only throughout (typer passes keywords), so flags may sit between other parameters
        for p in signature.parameters.values():
            params += flags if p.name == "params" else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)]

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            from tunesmith.infer.sampling import SamplingParams

            return func(*args, params=SamplingParams(**{name: kwargs.pop(name) for name in order}), **kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)
        # typer reads type hints too; `params` is not a flag (and its annotation would import torch)
        wrapper.__annotations__ = {k: v for k, v in func.__annotations__.items() if k != "params"}
        return wrapper

    return decorate
