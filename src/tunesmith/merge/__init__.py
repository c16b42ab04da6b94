"""Merging models: mergekit recipes over any tunesmith `--model` value (run dirs, adapters, models, built-ins).

    recipe = load_merge_recipe("merge.yaml")            # or slerp_recipe(a, b, t=0.5), recipe_from_flags(...)
    result = run_merge(recipe, "runs/merged")           # result.path: "adapter" or "full"
    load_model(str(result.model_dir))

recipe.py (the YAML), checks.py (what it is checked for on load), inputs.py (resolve, check compatible, materialise), adapters.py
(PEFT's add_weighted_adapter where it is exact), full.py (mergekit's engine), run.py (choose, write, record).
"""

from tunesmith.merge.inputs import check_compatible
from tunesmith.merge.recipe import MergeRecipe, load_merge_recipe, recipe_from_flags, slerp_recipe
from tunesmith.merge.run import MergeResult, run_merge

__all__ = ["MergeRecipe", "MergeResult", "check_compatible", "load_merge_recipe", "recipe_from_flags", "run_merge", "slerp_recipe"]
