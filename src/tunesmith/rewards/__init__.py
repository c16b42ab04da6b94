"""Reward functions for online RL (GRPO, RLOO, later PPO): rule-based built-ins, a trained reward model, or your own.

The contract. A reward function is a plain function

    def my_reward(prompts: list[str], completions: list[str], **columns) -> list[float | None]

- `prompts`: the prompt text of each completion (for a conversation, the last user message's content);
- `completions`: the reply text, special tokens removed;
- `columns`: the dataset's other columns by name, one value per completion (`answer=[...]`). The function
  must take `**kwargs` it does not use: it is handed every column, whichever it needs.
- returns one float per completion, in order. `None` means "not applicable" (as in TRL): that reward is
  left out for that completion (TRL turns it into NaN and ignores it when it sums the weighted rewards).

A parameter named after a column with no default (`*, answer`) declares that the function needs that
column: a dataset without it is refused with a sentence before the function runs. A keyword parameter
with a default (`*, max_chars=100`) is an option, set from the recipe (`options: {max_chars: 200}`).

Where rewards come from (`load_reward`):
- a built-in name (`exact_answer`, `numeric_answer`, `format`, `length_penalty`, `no_template_leakage`):
  one function in `rules.py` registered with `@register("name")`;
- `module.path:function` or `path/to/file.py:function`: your own function (`user.py`);
- `reward_model=runs/reward-...`: a model trained with `tunesmith reward` (`model.py`). It needs the whole
  prompt conversation, not only the last user text, so its `Reward` has `raw_prompts=True` and the TRL
  bridge hands it TRL's prompts untouched (message lists or strings).

`trl_bridge.trl_reward_functions` turns `Reward`s into what TRL's GRPOTrainer/RLOOTrainer call.
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from tunesmith.errors import RecipeError, TrainingError, TunesmithError

RewardFunction = Callable[..., list]

REWARDS: dict[str, RewardFunction] = {}
CHECKS: dict[str, Callable[[dict], None]] = {}  # name -> option check run at load time (raises ValueError)

_CONTRACT = "def fn(prompts, completions, **columns) -> list[float]"


def register(name: str, *, check: Callable[[dict], None] | None = None):
    """Register a built-in reward under `name`. `check(options)` runs when the reward is loaded and raises
    ValueError (a sentence) for a bad option value, so a recipe fails before training, not mid-run."""

    def add(fn: RewardFunction) -> RewardFunction:
        REWARDS[name] = fn
        if check:
            CHECKS[name] = check
        return fn

    return add


def signature_parts(fn) -> tuple[tuple[str, ...], dict[str, object]] | None:
    """(columns the function needs, its options with their defaults), read from its signature; None when the
    signature breaks the contract (cannot be called as fn(prompts=..., completions=..., **columns))."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some C callables have no signature: trust them
        return (), {}
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    required_positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty]
    if required_positional and not named & {"prompts", "completions"}:  # def f(p, c, **kw): named otherwise
        return None
    if any(p.kind is p.POSITIONAL_ONLY and p.default is p.empty for p in params):
        return None
    rest = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("prompts", "completions")]
    columns = tuple(p.name for p in rest if p.default is p.empty)
    options = {p.name: p.default for p in rest if p.default is not p.empty}
    return columns, options


@dataclass
class Reward:
    """A loaded reward: what TRL logs it under (`name`), its weight in the sum, and the function with its options.

    Calling it checks the columns the function needs, calls `function(prompts=..., completions=..., **columns,
    **options)` and checks the answer: one number (or None) per completion. With `raw_prompts` the function
    wants TRL's prompts as they are (message lists for conversations) instead of the last user text.
    """

    name: str
    function: RewardFunction
    weight: float = 1.0
    options: dict = field(default_factory=dict)
    columns: tuple[str, ...] = ()  # dataset columns the function needs
    raw_prompts: bool = False
    where: str = "grpo.rewards[0]"

    def check_columns(self, columns, source: str = "the dataset") -> None:
        """Refuse data that lacks a column this reward needs (called before training, and on every call)."""
        missing = [c for c in self.columns if c not in columns]
        if missing:
            have = ", ".join(sorted(columns)) or "no columns besides the prompt"
            raise RecipeError(
                f"{self.name} needs a dataset column '{missing[0]}'; {source} has: {have}",
                where=self.where,
                hint=f"add '{missing[0]}' to every row, or choose a reward that does not need it",
            )

    def __call__(self, prompts: list, completions: list[str], **columns) -> list[float | None]:
        self.check_columns(columns)
        try:
            scores = self.function(prompts=prompts, completions=completions, **columns, **self.options)
        except TunesmithError:
            raise
        except Exception as exc:
            raise TrainingError(
                f"the reward function '{self.name}' raised {type(exc).__name__}: {exc}".splitlines()[0],
                where=self.where,
                hint=f"fix the function; it is called as {_CONTRACT}",
            ) from exc
        return self._checked(scores, len(completions))

    def _checked(self, scores, expected: int) -> list[float | None]:
        try:
            values = list(scores)
        except TypeError:
            values = None
        if values is None or len(values) != expected:
            got = f"{len(values)} value{'' if len(values) == 1 else 's'}" if values is not None else f"a {type(scores).__name__}"
            raise TrainingError(
                f"the reward function '{self.name}' returned {got} for {expected} completions",
                where=self.where,
                hint="return a list with one float (or None) per completion, in order",
            )
        out: list[float | None] = []
        for i, value in enumerate(values):
            if value is not None and (isinstance(value, (str, bytes)) or not hasattr(type(value), "__float__")):
                raise TrainingError(
                    f"the reward function '{self.name}' returned {value!r} (a {type(value).__name__}) for completion {i}; expected a number or None",
                    where=self.where,
                )
            out.append(None if value is None else float(value))
        return out


def weighted_sum(weights: list[float], scores: list[float | None]) -> float | None:
    """One completion's total reward, the number its advantage starts from: sum of weight x score over the
    rewards that applied (None left out, as TRL's nansum does); None when none applied."""
    applied = [(w, s) for w, s in zip(weights, scores) if s is not None]
    return sum(w * s for w, s in applied) if applied else None


def load_reward(
    function: str | None = None, *, reward_model: str | None = None, weight: float = 1.0, options: dict | None = None, where: str = "grpo.rewards[0]"
) -> Reward:
    """The reward a recipe names: exactly one of `function` (a built-in name, `module.path:function` or
    `path/to/file.py:function`) and `reward_model` (a reward run or model directory). Bad input -> RecipeError."""
    if (function is None) == (reward_model is None):
        raise RecipeError(
            "give a reward either as `function` or as `reward_model`, exactly one",
            where=where,
            hint="e.g. `function: exact_answer` or `reward_model: runs/reward-...`",
        )
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise RecipeError(f"the weight {weight!r} is not a finite number", where=where, hint="e.g. `weight: 0.5`")
    options = dict(options or {})
    if reward_model is not None:
        from tunesmith.rewards.model import reward_model_scorer

        fn = reward_model_scorer(reward_model, where=where)
        return _reward("reward_model", fn, weight, options, where, builtin=True, raw_prompts=True)
    if ":" not in function:
        if function.endswith(".py") or "/" in function:
            raise RecipeError(f"'{function}' names a file but not the function in it", where=where, hint=f"write {function}:name_of_the_function")
        if function not in REWARDS:
            close = difflib.get_close_matches(function, list(REWARDS), n=1)
            raise RecipeError(
                f"unknown reward function '{function}'" + (f" (did you mean '{close[0]}'?)" if close else ""),
                where=where,
                hint=f"built-in rewards: {', '.join(REWARDS)}; or your own as module.path:function or path/to/file.py:function",
            )
        return _reward(function, REWARDS[function], weight, options, where, builtin=True)
    from tunesmith.rewards.user import load_user_function

    fn = load_user_function(function, where=where)
    return _reward(function.rsplit(":", 1)[1], fn, weight, options, where, builtin=False)


def _reward(name: str, fn, weight: float, options: dict, where: str, *, builtin: bool, raw_prompts: bool = False) -> Reward:
    """Check the signature and, for built-ins, the options (name, type, value); then build the Reward."""
    parts = signature_parts(fn)
    if parts is None:
        raise RecipeError(
            f"the reward function '{name}' has the signature {name}{inspect.signature(fn)}, which cannot take the prompts, completions and dataset columns",
            where=where,
            hint=f"write it as {_CONTRACT} (the **columns takes the columns it does not use)",
        )
    columns, defaults = parts
    if builtin:
        for key, value in options.items():
            if key not in defaults:
                valid = ", ".join(defaults) or "none"
                raise RecipeError(f"{name} has no option '{key}'", where=f"{where}.options", hint=f"its options: {valid}")
            _check_type(name, key, value, defaults[key], where)
        if name in CHECKS:
            try:
                CHECKS[name]({**defaults, **options})
            except ValueError as exc:
                raise RecipeError(f"{name}: {exc}", where=f"{where}.options", hint=f"`tunesmith recipe --stage grpo` describes {name}'s options") from None
    clash = [k for k in options if k in ("prompts", "completions") or k in columns]
    if clash:
        raise RecipeError(
            f"the option '{clash[0]}' of {name} would hide what the trainer passes under that name", where=f"{where}.options", hint="rename the option"
        )
    return Reward(name=name, function=fn, weight=float(weight), options=options, columns=columns, raw_prompts=raw_prompts, where=where)


def _check_type(name: str, key: str, value, default, where: str) -> None:
    """An option takes its default's type (an int is fine where the default is a float)."""
    if default is None:
        return
    kind = type(default)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok:
        raise RecipeError(
            f"the option '{key}' of {name} is {value!r}; expected {kind.__name__} (default {default!r})",
            where=f"{where}.options.{key}",
            hint=f"write it as a {kind.__name__}, e.g. {key}: {default!r}",
        )


from tunesmith.rewards import rules  # noqa: E402, F401  (fills REWARDS; imported last: it registers through this module)
