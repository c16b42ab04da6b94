"""`tunesmith recipe`: every recipe field with its default and meaning, as commented YAML."""

from __future__ import annotations

from pydantic import BaseModel

from tunesmith.cli.main import app, console


def commented_yaml(model: type[BaseModel], indent: int = 0) -> list[str]:
    import yaml

    lines = []
    pad = "  " * indent
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"{pad}{name}:")
            lines += commented_yaml(annotation, indent + 1)
            continue
        value = yaml.safe_dump({name: info.default}, default_flow_style=True, width=1000).strip()[1:-1]
        lines.append(f"{pad}{value}  # {info.description}")
    return lines


@app.command()
def recipe():
    """Print the default recipe: every field, its default, and what it means."""
    from tunesmith.recipes.schema import Recipe

    console.print("\n".join(commented_yaml(Recipe)), highlight=False, markup=False)
