"""`tunesmith pretrain|sft|reward|dpo|kto|orpo` (one thin command per stage) and `tunesmith train -c recipe.yaml`.

Every stage runs on the same scaffold (train/scaffold.py) and returns one StageResult, shown by one renderer.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from tunesmith.cli.main import app, console
from tunesmith.cli.options import RECIPE_OPTION, SET_HELP, STAGE_FLAGS, build_recipe, recipe_options

RESUME_HELP = "Continue a run: its directory (newest complete checkpoint) or one checkpoint-N directory."

STAGE_HELP = {
    "pretrain": "Continued pre-training on raw text (.txt, .md, .jsonl, .parquet; files, folders, globs), tokenised once into a cache, packed into blocks; held-out perplexity before/after. Default corpus: tunesmith-docs (this project's docs).",
    "sft": "Supervised fine-tuning: full, LoRA, DoRA or QLoRA. With no arguments: LoRA on the built-in pirate data.",
    "reward": "Train a reward model (one-score head) on preference pairs; reports pairwise accuracy. Default data: pirate-pairs.",
    "dpo": "Direct preference optimisation (every TRL DPO loss) against a frozen reference. Default data: pirate-pairs; --model takes an SFT run.",
    "kto": "KTO on answers labelled desirable/undesirable (or pairs, unpaired for you). Default data: pirate-kto.",
    "orpo": "ORPO: SFT and preference in one loss, no reference model. Default data: pirate-pairs.",
    "cpo": "CPO, or SimPO with --loss-type simpo: reference-free preference optimisation. Default data: pirate-pairs.",
    "grpo": "GRPO: sample a group of completions per prompt, score them with reward functions, learn from each one's reward against its group's. Default data: arithmetic.",
    "rloo": "RLOO: like grpo, each completion judged against the mean of the others (leave one out). Default data: arithmetic.",
    "ppo": "PPO: the actor samples, a reward model or reward functions score, a critic estimates values (GAE), a KL penalty keeps it near the reference; clipped updates. Default data: arithmetic; --reward-model takes a `tunesmith reward` run.",
}


def render_result(result) -> None:
    """What every stage shows at the end: answers before/after, what changed on the eval split, where the model is."""
    if result.after:
        table = Table(title="answers before and after training", show_lines=True)
        table.add_column("prompt", style="bold")
        if result.before:
            table.add_column("before")
        table.add_column("after")
        for i, prompt in enumerate(result.prompts):
            table.add_row(prompt, *([result.before[i]] if result.before else []), result.after[i])
        console.print(table)
    if result.diagnostics is not None:
        result.diagnostics.render(console)
    if result.changes:
        table = Table(title="what changed on the eval split")
        for col in ("measure", "before", "after"):
            table.add_column(col, justify="left" if col == "measure" else "right")
        for c in result.changes:
            table.add_row(c.metric, c.show(c.before), c.show(c.after))
        console.print(table)
    if result.examples:
        table = Table(title=result.examples_title, show_lines=True)
        for col in result.examples[0]:
            table.add_column(col)
        for row in result.examples:
            table.add_row(*(str(v) for v in row.values()))
        console.print(table)
    loss = f"final train loss {result.train_loss:.4f}" if result.train_loss is not None else ""
    if result.eval_loss is not None:
        loss += f", eval loss {result.eval_loss:.4f}"
    console.print(f"done in {result.seconds:.0f} s: {result.steps} steps, {loss}", highlight=False)
    console.print(f"model: {result.model_dir}" + (f"  merged: {result.merged_dir}" if result.merged_dir else ""), highlight=False)
    if result.stage in ("grpo", "rloo", "ppo"):
        what = "each response: score, KL, value, advantage" if result.stage == "ppo" else "each group: completions, rewards, advantages"
        console.print(f"look inside: tunesmith inspect rollouts {result.run_dir} --step {result.steps}  ({what})", soft_wrap=True, highlight=False)
        example = result.prompts[0] if result.prompts else "Solve 2+2. Reply with the number only."
        console.print(f"try it: tunesmith generate --model {result.run_dir} --prompt '{example}'", soft_wrap=True, highlight=False)
    elif result.stage == "pretrain":  # a text continuer: no chat template
        example = result.prompts[0] if result.prompts else "The"
        console.print(f"try it: tunesmith generate --model {result.run_dir} --no-chat --prompt '{example}'", soft_wrap=True, highlight=False)
    elif result.stage == "reward":
        console.print(
            f"try it: tunesmith score --reward-model {result.run_dir} --prompt 'What is the capital of France?' --response Paris --response Florida",
            soft_wrap=True,
            highlight=False,
        )
    else:
        console.print(f"try it: tunesmith generate --model {result.run_dir} --prompt 'What is the capital of France?'", soft_wrap=True, highlight=False)


def _train(stage: str | None, recipe, set_, overrides, resume) -> None:
    from tunesmith.train.scaffold import run_stage

    if resume and (recipe or set_ or overrides):
        console.print("note: --resume continues with the run's own recipe.yaml; other options are ignored")
    from tunesmith.train.distributed import launched_rank

    built = None if resume else build_recipe(recipe, set_, overrides, stage=stage)
    result = run_stage(built, resume=resume, stage_name=stage, console=console)
    if launched_rank() == 0:  # under `tunesmith launch`, one process shows the result
        render_result(result)


def _stage_command(stage: str) -> None:
    @recipe_options(extra=STAGE_FLAGS[stage])
    def command(
        recipe: Path | None = RECIPE_OPTION,
        set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
        resume: str | None = typer.Option(None, "--resume", help=RESUME_HELP),
        overrides: dict = None,
    ):
        _train(stage, recipe, set_, overrides, resume)

    command.__doc__ = STAGE_HELP[stage]
    app.command(stage)(command)


for _name in STAGE_HELP:
    _stage_command(_name)


@app.command()
def train(
    recipe: Path | None = RECIPE_OPTION,
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
    resume: str | None = typer.Option(None, "--resume", help=RESUME_HELP),
):
    """Run the stage a recipe names (`stage: pretrain|sft|reward|dpo|kto|orpo|cpo|grpo|rloo|ppo`), or resume any run."""
    if not recipe and not resume:
        from tunesmith.errors import RecipeError

        raise RecipeError(
            "tunesmith train needs a recipe (-c recipe.yaml) or --resume RUN",
            hint="or use the stage's own command: tunesmith pretrain|sft|reward|dpo|kto|orpo|cpo|grpo|rloo|ppo",
        )
    _train(None, recipe, set_, {}, resume)
