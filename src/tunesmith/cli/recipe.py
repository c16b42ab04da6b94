"""`tunesmith recipe [--stage S]`: every recipe field of a stage with its default and meaning, as commented YAML."""

from __future__ import annotations

import typer
from pydantic import BaseModel

from tunesmith.cli.main import app, console


def commented_yaml(model: BaseModel, indent: int = 0, extra: dict[str, str] | None = None) -> list[str]:
    """`model`'s fields as YAML with each description as a comment; stage sections appear only when set."""
    import yaml

    from tunesmith.recipes.schema import section_model

    lines = []
    pad = "  " * indent
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, list):  # e.g. rewards: a list of entries, written as YAML lists
            value = [v.model_dump(exclude_defaults=True) if isinstance(v, BaseModel) else v for v in value]
        elif section_model(info.annotation) is not None:
            if value is None:
                continue  # another stage's section
            lines.append(f"{pad}{name}:" + (f"  # {info.description}" if info.description else ""))
            lines += commented_yaml(value, indent + 1, extra)
            continue
        text = yaml.safe_dump({name: value}, default_flow_style=True, width=1000).strip()[1:-1]
        note = (extra or {}).get(f"{type(model).__name__}.{name}")
        lines.append(f"{pad}{text}  # {info.description}" + (f" TRL offers: {note}." if note else ""))
    return lines


@app.command()
def recipe(stage: str | None = typer.Option(None, "--stage", help="sft (default), reward, dpo, kto, orpo, cpo, grpo or rloo: the fields of that stage.")):
    """Print the default recipe of a stage: every field, its default, and what it means."""
    from tunesmith.errors import RecipeError
    from tunesmith.recipes.schema import STAGES, Recipe

    if stage is not None and stage not in STAGES:
        raise RecipeError(f"--stage {stage} is not a stage", hint=f"stages: {', '.join(STAGES)}")
    extra = {}
    if stage == "dpo":
        from tunesmith.train.stages.dpo import dpo_loss_types

        extra["DPOSection.loss_type"] = ", ".join(dpo_loss_types())
    if stage == "grpo":
        from tunesmith.train.stages.grpo import grpo_loss_types

        extra["GRPOSection.loss_type"] = ", ".join(grpo_loss_types())
    console.print("\n".join(commented_yaml(Recipe(stage=stage or "sft"), extra=extra)), highlight=False, markup=False, soft_wrap=True)
