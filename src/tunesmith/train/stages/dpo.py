"""Direct preference optimisation (and every loss TRL's DPOTrainer offers) on `trl.DPOTrainer`."""

from __future__ import annotations

import re

from tunesmith.train.stages.pairs import PreferenceStage


def dpo_loss_types() -> list[str]:
    """The loss types TRL's DPOConfig documents (read from TRL, so a new TRL's losses show up here)."""
    from trl import DPOConfig

    help_text = DPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    return re.findall(r"`'(\w+)'`", help_text)


class DPOStage(PreferenceStage):
    shares_prompts = "pair"
    name = "dpo"
    unpadded_rows = True
    title = "direct preference optimisation"
    needs_reference = True

    def describe(self, recipe) -> str:
        s = recipe.dpo
        return f"{self.title}, loss {'+'.join(s.loss_type)}, beta {s.beta:g}"

    def check(self, recipe) -> None:
        from tunesmith.errors import RecipeError

        known = dpo_loss_types()
        unknown = [t for t in recipe.dpo.loss_type if t not in known]
        if unknown:
            raise RecipeError(f"{', '.join(unknown)} is not a loss TRL's DPOTrainer offers", where="dpo.loss_type", hint=f"one or more of: {', '.join(known)}")
        if recipe.dpo.loss_weights is not None and len(recipe.dpo.loss_weights) != len(recipe.dpo.loss_type):
            raise RecipeError(
                f"{len(recipe.dpo.loss_weights)} weights given for {len(recipe.dpo.loss_type)} loss types",
                where="dpo.loss_weights",
                hint="give one weight per loss_type, or leave it unset",
            )
        if "exo_pair" in recipe.dpo.loss_type and recipe.dpo.label_smoothing == 0:
            raise RecipeError("loss_type exo_pair needs label_smoothing > 0", where="dpo.label_smoothing", hint="the EXO paper uses 1e-3")

    def config(self, recipe, common: dict, schedule=None):
        from trl import DPOConfig

        return self.trl_config(DPOConfig, recipe, common, schedule=schedule)

    def trainer(self, *, model, ref_model, args, data, tokenizer, callbacks, peft_config):
        from trl import DPOTrainer

        return DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=data.train,
            eval_dataset=data.eval,
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
        )
