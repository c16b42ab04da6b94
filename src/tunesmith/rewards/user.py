"""Your own reward function, named in a recipe as `module.path:function` or `path/to/file.py:function`.

A file path is relative to the current directory. Every way the name can be wrong (no such file or
module, an import that fails, no such function, not a function, async) is a RecipeError saying which;
the signature is checked by `load_reward` against the package contract.

Security: importing the module runs its code, in this process, with the user's rights (files, network,
credentials), as `python file.py` would. Nothing is sandboxed: name only code you trust (README, "Rewards").
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
from pathlib import Path

from tunesmith.errors import RecipeError

FORMS = "module.path:function or path/to/file.py:function"


def load_user_function(spec: str, *, where: str = "grpo.rewards[0]"):
    """The callable `spec` names; the module is imported (or the file run) once."""
    target, _, name = spec.rpartition(":")
    if not target or not name.isidentifier():
        raise RecipeError(f"'{spec}' does not name a function", where=where, hint=f"write {FORMS}")
    is_file = target.endswith(".py") or "/" in target or "\\" in target
    module = _import_file(target, where) if is_file else _import_module(target, where)
    if not hasattr(module, name):
        defined = [n for n, v in vars(module).items() if inspect.isfunction(v) and v.__module__ == module.__name__ and not n.startswith("_")]
        raise RecipeError(
            f"'{target}' has no function '{name}'",
            where=where,
            hint=f"it defines: {', '.join(defined)}" if defined else f"define {name}(prompts, completions, **columns) in it",
        )
    fn = getattr(module, name)
    if not callable(fn):
        raise RecipeError(
            f"'{spec}' is not a function (its type is {type(fn).__name__})", where=where, hint="point at a function taking (prompts, completions, **columns)"
        )
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
        raise RecipeError(f"'{spec}' is an async function; reward functions are called synchronously here", where=where, hint="make it a plain def")
    return fn


def _import_module(target: str, where: str):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        missing = exc.name or target
        hint = f"is '{missing}' installed, or on PYTHONPATH? For a file, write path/to/file.py:function"
        raise RecipeError(f"cannot import the module '{target}' (no module named '{missing}')", where=where, hint=hint) from None
    except Exception as exc:  # noqa: BLE001  the module itself fails as it is imported: show its error, not our traceback
        raise RecipeError(
            f"importing '{target}' failed: {type(exc).__name__}: {exc}".splitlines()[0],
            where=where,
            hint=f"fix the module (python -c 'import {target}' shows the whole error)",
        ) from None


def _import_file(target: str, where: str):
    path = Path(target).expanduser()
    if not path.is_file():
        raise RecipeError(
            f"the reward file '{target}' does not exist (looked in {Path.cwd()})",
            where=where,
            hint=f"paths are relative to the current directory; write {FORMS}",
        )
    # A stable, unique module name per file, registered in sys.modules so pickling and dataclasses work.
    module_name = "tunesmith_user_reward_" + re.sub(r"\W", "_", str(path.resolve()))
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001  any error in the user's file is theirs to fix
        del sys.modules[module_name]
        line = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
        hint = (
            f"fix the syntax at {path.name}:{exc.lineno} (python -m py_compile {target} checks it)"
            if line
            else f"fix the file (python {target} shows the whole error)"
        )
        raise RecipeError(f"running '{target}' failed{line}: {type(exc).__name__}: {exc}".splitlines()[0], where=where, hint=hint) from None
    return module
