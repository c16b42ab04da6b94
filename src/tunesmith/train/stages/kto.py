"""Kahneman-Tversky optimisation on `trl.KTOTrainer`: unpaired answers labelled desirable or undesirable."""

from __future__ import annotations

from tunesmith.train.stages.pairs import PreferenceStage


class KTOStage(PreferenceStage):
    name = "kto"
    unpadded_rows = True
    title = "Kahneman-Tversky optimisation"
    data_kind = "unpaired"
    needs_reference = True
    sequences_per_example = 1
    progress_metrics = ("rewards/margins",)
    plot_metrics = ("rewards/margins", "rewards/chosen", "rewards/rejected", "kl")

    def describe(self, recipe) -> str:
        s = recipe.kto
        return f"{self.title}, beta {s.beta:g}, desirable weight {s.desirable_weight:g}, undesirable weight {s.undesirable_weight:g}"

    def config(self, recipe, common: dict, schedule=None):
        from trl import KTOConfig

        return self.trl_config(KTOConfig, recipe, common, schedule=schedule)

    def trainer(self, *, model, ref_model, args, data, tokenizer, callbacks, peft_config):
        from trl import KTOTrainer

        return KTOTrainer(
            model=model,
            ref_model=ref_model,
            args=args,
            train_dataset=data.train,
            eval_dataset=data.eval,
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
        )
