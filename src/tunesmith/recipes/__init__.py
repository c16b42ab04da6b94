"""Recipes: pydantic models (schema.py) and YAML + override loading (load.py)."""

from tunesmith.recipes.load import dump_recipe, load_recipe
from tunesmith.recipes.schema import Recipe

__all__ = ["Recipe", "dump_recipe", "load_recipe"]
