"""Contrastive preference optimisation, and SimPO (`loss_type: simpo`), on `trl.experimental.cpo.CPOTrainer`: reference-free."""

from __future__ import annotations

from tunesmith.train.stages.pairs import PreferenceStage, TokenScoredPairs, head_scores_tokens, logits_in_fp32


class CPOStage(PreferenceStage):
    shares_prompts = "pair"
    projects_every_position = True  # trl.experimental's trainer takes outputs.logits of the whole micro-batch (off a CPU)
    name = "cpo"
    unpadded_rows = True
    title = "contrastive preference optimisation"
    implicit_reward = False
    plot_metrics = ("rewards/margins", "rewards/accuracies", "nll_loss")

    def describe(self, recipe) -> str:
        s = recipe.cpo
        if s.loss_type in ("simpo", "alphapo"):
            return f"SimPO ({s.loss_type}), beta {s.beta:g}, gamma {s.simpo_gamma:g}, NLL weight {s.cpo_alpha:g}, reference-free"
        return f"{self.title}, loss {s.loss_type}, beta {s.beta:g}, NLL weight {s.cpo_alpha:g}, reference-free"

    def config(self, recipe, common: dict, schedule=None):
        from trl.experimental.cpo import CPOConfig

        return self.trl_config(CPOConfig, recipe, common, include_num_input_tokens_seen="no")

    def all_positions_projected(self, recipe, precision) -> bool:
        return not head_scores_tokens(recipe, precision)

    def trainer(self, *, model, ref_model, args, data, tokenizer, callbacks, peft_config):
        from trl.experimental.cpo import CPOTrainer

        class ScoredCPOTrainer(TokenScoredPairs, CPOTrainer):
            def average_answer_logps(self) -> bool:
                return self.loss_type in ("ipo", "simpo")  # as CPOTrainer.concatenated_forward averages

            def nll_weight(self) -> float:
                return self.cpo_alpha

        return ScoredCPOTrainer(
            model=logits_in_fp32(model),
            args=args,
            train_dataset=data.train,
            eval_dataset=data.eval,
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
        )
