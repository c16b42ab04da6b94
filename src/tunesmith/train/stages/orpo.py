"""Odds-ratio preference optimisation on `trl.experimental.orpo.ORPOTrainer`: SFT and preference in one loss, no reference."""

from __future__ import annotations

from tunesmith.train.stages.pairs import PreferenceStage, TokenScoredPairs, head_scores_tokens, logits_in_fp32


class ORPOStage(PreferenceStage):
    shares_prompts = "pair"
    projects_every_position = True  # trl.experimental's trainer takes outputs.logits of the whole micro-batch (off a CPU)
    name = "orpo"
    unpadded_rows = True
    title = "odds-ratio preference optimisation"
    implicit_reward = False
    progress_metrics = ("rewards/margins", "rewards/accuracies")
    plot_metrics = ("rewards/margins", "rewards/accuracies", "log_odds_ratio", "nll_loss")

    def describe(self, recipe) -> str:
        return f"{self.title}, lambda (beta) {recipe.orpo.beta:g}, reference-free"

    def config(self, recipe, common: dict, schedule=None):
        from trl.experimental.orpo import ORPOConfig

        # its batches carry chosen_/rejected_input_ids, which the Trainer's token counter cannot see
        return self.trl_config(ORPOConfig, recipe, common, include_num_input_tokens_seen="no")

    def all_positions_projected(self, recipe, precision) -> bool:
        return not head_scores_tokens(recipe, precision)

    def trainer(self, *, model, ref_model, args, data, tokenizer, callbacks, peft_config):
        from trl.experimental.orpo import ORPOTrainer

        class ScoredORPOTrainer(TokenScoredPairs, ORPOTrainer):
            nll_over_prompt = True  # ORPO's NLL term: the chosen sequence, prompt included

        return ScoredORPOTrainer(
            model=logits_in_fp32(model),
            args=args,
            train_dataset=data.train,
            eval_dataset=data.eval,
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
        )
