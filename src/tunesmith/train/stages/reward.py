"""Reward models on `trl.RewardTrainer`: a one-score head on the model, trained so chosen scores above rejected.

The result loads with vanilla `AutoModelForSequenceClassification` (LoRA: plus peft) and scores a
conversation by its last token, as `tunesmith score` and the RL stages use it.
"""

from __future__ import annotations

from tunesmith.train.stages.base import Change
from tunesmith.train.stages.pairs import PreferenceStage


class RewardStage(PreferenceStage):
    name = "reward"
    title = "reward model"
    head = "reward"
    progress_metrics = ("accuracy", "margin")
    plot_metrics = ("accuracy", "margin")
    implicit_reward = False

    def describe(self, recipe) -> str:
        return "a one-score head on the model, trained to score chosen above rejected"

    def config(self, recipe, common: dict, schedule=None):
        from trl import RewardConfig

        return self.trl_config(RewardConfig, recipe, common)

    def trainer(self, *, model, ref_model, args, data, tokenizer, callbacks, peft_config):
        from trl import RewardTrainer

        model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last non-pad token
        return RewardTrainer(
            model=model, args=args, train_dataset=data.train, eval_dataset=data.eval, processing_class=tokenizer, callbacks=callbacks, peft_config=peft_config
        )

    def scores(self, model, tokenizer, prompts: list, responses: list) -> list[float]:
        """The reward model's score of each response (read at the last non-pad token)."""
        from tunesmith.evaluate.preference import reward_scores

        return reward_scores(model, tokenizer, prompts, responses)

    def compare(self, before: dict, after: dict):
        from tunesmith.evaluate.preference import pairwise_accuracy, text_of

        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        changes = [
            Change(
                "pairwise accuracy (chosen scored higher)",
                pairwise_accuracy(before["chosen"], before["rejected"]),
                pairwise_accuracy(after["chosen"], after["rejected"]),
                "{:.0%}",
            ),
            Change(
                "score margin chosen - rejected, mean",
                mean([c - r for c, r in zip(before["chosen"], before["rejected"])]),
                mean([c - r for c, r in zip(after["chosen"], after["rejected"])]),
                "{:+.3f}",
            ),
            Change("score of chosen, mean", mean(before["chosen"]), mean(after["chosen"]), "{:+.3f}"),
            Change("score of rejected, mean", mean(before["rejected"]), mean(after["rejected"]), "{:+.3f}"),
        ]
        pairs = after["pairs"]
        examples = [
            {
                "prompt": text_of(pairs.prompts[i]),
                "chosen": text_of(pairs.chosen[i]),
                "rejected": text_of(pairs.rejected[i]),
                "score chosen": f"{after['chosen'][i]:+.3f}",
                "score rejected": f"{after['rejected'][i]:+.3f}",
            }
            for i in range(min(4, len(pairs)))
        ]
        return changes, examples, "scored eval pairs (after training)"
