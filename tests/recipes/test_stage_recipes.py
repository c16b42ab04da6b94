"""Recipes for the training stages: stage defaults, stage sections with TRL's names, and what is refused."""

import pytest

from tunesmith.errors import RecipeError
from tunesmith.recipes import Recipe, dump_recipe, load_recipe
from tunesmith.recipes.schema import DPOSection, KTOSection, ORPOSection, RewardSection

OLD_RECIPE = """\
method: lora
model:
  name: smollm2-135m-instruct
lora:
  r: 8
data:
  dataset: pirate
  max_length: 256
training:
  max_steps: 20
  learning_rate: 0.0005
"""


def test_stage_defaults_to_sft_and_old_recipes_load_unchanged(tmp_path):
    assert Recipe().stage == "sft"
    assert load_recipe() == Recipe()
    f = tmp_path / "old.yaml"
    f.write_text(OLD_RECIPE)
    r = load_recipe(f)
    assert r.stage == "sft"
    assert (r.reward, r.dpo, r.kto, r.orpo) == (None, None, None, None)
    assert (r.lora.r, r.data.dataset, r.data.max_length, r.training.max_steps, r.training.learning_rate) == (8, "pirate", 256, 20, 5e-4)
    assert r.training.learning_rate == 5e-4
    assert load_recipe(None, {"method": "full"}).training.learning_rate == 2e-5  # SFT's defaults as before
    assert load_recipe().training.learning_rate == 1e-3
    # a dumped old recipe reads back the same, and stage sections stay out of it
    again = tmp_path / "again.yaml"
    again.write_text(dump_recipe(r))
    assert load_recipe(again) == r


def test_a_section_of_another_stage_is_refused_with_its_line(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("training:\n  max_steps: 3\ndpo:\n  beta: 0.2\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(f)
    msg = str(exc.value)
    assert f"{f}:3:" in msg
    assert "'dpo:' section" in msg and "stage is sft" in msg and "stage: dpo" in msg
    f.write_text("stage: reward\nkto:\n  beta: 0.2\n")
    with pytest.raises(RecipeError, match=r"r.yaml:2: .*'kto:' section, but its stage is reward"):
        load_recipe(f)
    with pytest.raises(RecipeError, match=r"'orpo:' section, but its stage is dpo"):
        load_recipe(None, {"stage": "dpo", "orpo.beta": 0.3})


@pytest.mark.parametrize(
    "stage, section, dataset, lr",
    [
        ("reward", RewardSection, "pirate-pairs", 5e-4),
        ("dpo", DPOSection, "pirate-pairs", 5e-5),
        ("kto", KTOSection, "pirate-kto", 5e-5),
        ("orpo", ORPOSection, "pirate-pairs", 5e-4),
    ],
)
def test_a_stage_fills_its_section_and_its_dataset(stage, section, dataset, lr):
    r = load_recipe(None, {"stage": stage})
    assert getattr(r, stage) == section()
    assert r.data.dataset == dataset
    assert r.training.learning_rate == lr
    assert all(getattr(r, other) is None for other in ("reward", "dpo", "kto", "orpo") if other != stage)
    # the recipe's own dataset wins, and the filled recipe round-trips
    assert load_recipe(None, {"stage": stage, "data.dataset": "mine.jsonl"}).data.dataset == "mine.jsonl"
    assert Recipe.model_validate(load_recipe(None, {"stage": stage}).model_dump()) == r


def test_dpo_section_takes_trl_names(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("stage: dpo\ndpo:\n  beta: 0.3\n  loss_type: ipo\n  label_smoothing: 0.1\n")
    r = load_recipe(f)
    assert (r.dpo.beta, r.dpo.loss_type, r.dpo.label_smoothing) == (0.3, ["ipo"], 0.1)
    assert r.data.dataset == "pirate-pairs"


def test_a_typo_in_a_stage_section_suggests_the_field(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown field 'dpo.bta'; did you mean 'dpo.beta'\?"):
        load_recipe(None, {"stage": "dpo", "dpo.bta": 0.1})
    f = tmp_path / "r.yaml"
    f.write_text("stage: kto\nkto:\n  desirable_wieght: 2\n")
    with pytest.raises(RecipeError, match=r"r.yaml:3: unknown field 'kto.desirable_wieght'; did you mean 'kto.desirable_weight'\?"):
        load_recipe(f)


def test_unknown_dpo_loss_type_is_refused_with_trls_list():
    from tunesmith.train.stages import get_stage
    from tunesmith.train.stages.dpo import dpo_loss_types

    known = dpo_loss_types()
    assert {"sigmoid", "ipo", "hinge", "robust"} <= set(known)
    import inspect
    import re

    from trl import DPOTrainer

    handled = set(re.findall(r'loss_type == "(\w+)"', inspect.getsource(DPOTrainer._compute_loss)))
    assert set(known) == handled  # the list read from DPOConfig's help is every loss the trainer computes
    stage = get_stage("dpo")
    stage.check(load_recipe(None, {"stage": "dpo", "dpo.loss_type": ["sigmoid", "sft"], "dpo.loss_weights": [1.0, 0.5]}))  # fine
    with pytest.raises(RecipeError) as exc:
        stage.check(load_recipe(None, {"stage": "dpo", "dpo.loss_type": "sigmoidd"}))
    assert "sigmoidd" in exc.value.message and exc.value.where == "dpo.loss_type"
    assert all(name in exc.value.hint for name in known)
    with pytest.raises(RecipeError, match="2 weights given for 1 loss types"):
        stage.check(load_recipe(None, {"stage": "dpo", "dpo.loss_weights": [1.0, 2.0]}))


def test_the_command_must_match_the_recipes_stage():
    from rich.console import Console

    from tunesmith.train.scaffold import open_run

    with pytest.raises(RecipeError, match=r"the recipe's stage is dpo, but this is `tunesmith sft`"):
        open_run(load_recipe(None, {"stage": "dpo"}), None, "sft", Console(quiet=True))
    _, recipe, _ = open_run(None, None, "kto", Console(quiet=True))  # no recipe: the command's stage
    assert recipe.stage == "kto" and recipe.kto == KTOSection() and recipe.data.dataset == "pirate-kto"
