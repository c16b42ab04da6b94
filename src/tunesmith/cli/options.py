"""Typed command-line flags for the common recipe fields, generated from one table.

Each flag is a shortcut for `--set <path>=<value>`; its help text is the field's
description in recipes/schema.py, so `--help`, YAML and docs never disagree.
"""

from __future__ import annotations

import functools
import inspect
from typing import Optional

import typer

from tunesmith.recipes.schema import Recipe, section_model

# flag name -> (recipe path, type)
RECIPE_FLAGS: dict[str, tuple[str, type]] = {
    "model": ("model.name", str),
    "precision": ("model.precision", str),
    "method": ("method", str),
    "dataset": ("data.dataset", str),
    "eval_dataset": ("data.eval_dataset", str),
    "max_length": ("data.max_length", int),
    "packing": ("data.packing", bool),
    "train_on_prompt": ("data.train_on_prompt", bool),
    "output_dir": ("output_dir", str),
    "per_device_train_batch_size": ("training.per_device_train_batch_size", int),
    "gradient_accumulation_steps": ("training.gradient_accumulation_steps", int),
    "num_train_epochs": ("training.num_train_epochs", float),
    "max_steps": ("training.max_steps", int),
    "learning_rate": ("training.learning_rate", float),
    "lr_scheduler_type": ("training.lr_scheduler_type", str),
    "warmup_ratio": ("training.warmup_ratio", float),
    "logging_steps": ("training.logging_steps", int),
    "save_strategy": ("training.save_strategy", str),
    "save_steps": ("training.save_steps", int),
    "save_total_limit": ("training.save_total_limit", int),
    "gradient_checkpointing": ("training.gradient_checkpointing", bool),
    "seed": ("training.seed", int),
    "lora_r": ("lora.r", int),
    "lora_alpha": ("lora.lora_alpha", int),
    "preset": ("lora.preset", str),
    "use_dora": ("lora.use_dora", bool),
    "train_embeddings": ("lora.train_embeddings", bool),
    "merge": ("merge", bool),
}


# stage -> its own flags (recipe paths in the stage's section)
STAGE_FLAGS: dict[str, dict[str, tuple[str, type]]] = {
    "pretrain": {"text_field": ("pretrain.text_field", str), "eval_blocks": ("pretrain.eval_blocks", int)},
    "sft": {},
    "reward": {"center_rewards_coefficient": ("reward.center_rewards_coefficient", float)},
    "dpo": {"beta": ("dpo.beta", float), "loss_type": ("dpo.loss_type", str), "precompute_ref_log_probs": ("dpo.precompute_ref_log_probs", bool)},
    "kto": {"beta": ("kto.beta", float), "desirable_weight": ("kto.desirable_weight", float), "undesirable_weight": ("kto.undesirable_weight", float)},
    "orpo": {"beta": ("orpo.beta", float)},
    "cpo": {"beta": ("cpo.beta", float), "loss_type": ("cpo.loss_type", str), "cpo_alpha": ("cpo.cpo_alpha", float), "simpo_gamma": ("cpo.simpo_gamma", float)},
    **{
        stage: {
            "rewards": (f"{stage}.rewards", str),
            "reward_model": (f"{stage}.reward_model", str),
            "num_generations": (f"{stage}.num_generations", int),
            "max_completion_length": (f"{stage}.max_completion_length", int),
            "temperature": (f"{stage}.temperature", float),
            "beta": (f"{stage}.beta", float),
        }
        for stage in ("grpo", "rloo")
    },
    "ppo": {
        "rewards": ("ppo.rewards", str),
        "reward_model": ("ppo.reward_model", str),
        "max_completion_length": ("ppo.max_completion_length", int),
        "temperature": ("ppo.temperature", float),
        "kl_coef": ("ppo.kl_coef", float),
        "target_kl": ("ppo.target_kl", float),
        "ppo_epochs": ("ppo.ppo_epochs", int),
        "num_mini_batches": ("ppo.num_mini_batches", int),
        "cliprange": ("ppo.cliprange", float),
        "vf_coef": ("ppo.vf_coef", float),
        "gamma": ("ppo.gamma", float),
        "lam": ("ppo.lam", float),
    },
}


def field_help(path: str) -> str:
    model = Recipe
    *parents, name = path.split(".")
    for part in parents:
        model = section_model(model.model_fields[part].annotation)
    info = model.model_fields[name]
    default = info.default
    if isinstance(default, list) and default and hasattr(default[0], "model_dump"):  # e.g. rewards: entries as YAML shows them
        default = [d.model_dump(exclude_defaults=True) for d in default]
    return f"{info.description or ''} [recipe: {path}, default: {default}]"


def recipe_options(*names: str, extra: dict[str, tuple[str, type]] | None = None):
    """Add `--flag` options (from RECIPE_FLAGS, plus `extra`) to a command; they reach it as `overrides: dict`."""
    table = {**RECIPE_FLAGS, **(extra or {})}
    chosen = (*names, *(extra or {})) if names else tuple(table)

    def decorate(func):
        signature = inspect.signature(func)
        params = [p for p in signature.parameters.values() if p.name != "overrides"]
        for name in chosen:
            path, kind = table[name]
            flag = name.replace("_", "-")
            decl = f"--{flag}/--no-{flag}" if kind is bool else f"--{flag}"
            option = typer.Option(None, decl, help=field_help(path), rich_help_panel="Recipe fields", show_default=False)
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind]))  # noqa: UP045  (built at run time for typer, as the decorators would write it)

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            overrides = {table[n][0]: kwargs.pop(n) for n in chosen if kwargs.get(n) is not None}
            for n in chosen:
                kwargs.pop(n, None)
            return func(*args, overrides=overrides, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)
        return wrapper

    return decorate


def build_recipe(recipe_file, sets: list[str] | None, overrides: dict, stage: str | None = None):
    """Recipe file < --set items < typed flags. `stage`: the command's stage, used where the file names none."""
    from tunesmith.recipes import load_recipe
    from tunesmith.recipes.load import parse_override

    merged: dict = {}
    for item in sets or []:
        path, value = parse_override(item)
        merged[".".join(path)] = value
    merged.update(overrides)
    return load_recipe(recipe_file, merged, stage=stage)


RECIPE_OPTION = typer.Option(None, "--recipe", "-c", help="Recipe YAML file.", exists=False)
SET_HELP = "Override any recipe field: --set training.learning_rate=1e-4 (repeatable)."
