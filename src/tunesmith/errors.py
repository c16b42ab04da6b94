"""User-facing errors.

Every error a user can cause is a `TunesmithError`: a sentence that says what was
wrong, where (file, line, field) and what to do. The CLI prints it as one or two
lines and exits non-zero; library tracebacks are for our bugs, not their input.
"""

from __future__ import annotations


class TunesmithError(Exception):
    """An error in what the user asked for, with where it happened and a hint."""

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.format())

    def format(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text


def first_line(exc: BaseException) -> str:
    """The first line of a library exception's message (for a sentence of ours), or its type's name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class RecipeError(TunesmithError):
    """A recipe (YAML file or override) is invalid."""


class DataError(TunesmithError):
    """A dataset file, row or field is invalid."""


class ModelError(TunesmithError):
    """A model cannot be found, loaded or used as asked."""


class TrainingError(TunesmithError):
    """Training went wrong in a way the user can act on (NaN loss, out of memory)."""
