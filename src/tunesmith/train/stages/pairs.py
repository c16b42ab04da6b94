"""What the preference stages (DPO, KTO, ORPO) share: pair data, and measuring how the policy ranks the answers.

Before training the policy is the reference, so the log-probabilities measured then are the
reference's; after training, beta * (log pi - log pi_ref) is the implicit reward TRL optimises.
"""

from __future__ import annotations

import math

from tunesmith.train.stages.base import Change, Stage, StageData

TEXTBOOK_PROMPT = "What is the capital of France?"


def logits_in_fp32(model):
    """ORPO's and CPO's trainers take log-softmax of the logits in the model's dtype; over a bf16 base without
    autocast (our CPU default) that rounds every log-probability (losses came out as 7.0000, 8.9375). Return the
    LM head's output in fp32 instead; the backbone stays bf16."""
    import torch

    head = model.get_output_embeddings()
    if head is not None and next(head.parameters()).dtype != torch.float32:
        head.register_forward_hook(lambda module, args, output: output.float())
    return model


def precompute_reference(recipe, stage, schedule) -> bool:
    """Whether the reference scores the data once before training instead of in every step. The recipe decides;
    unset (auto), it is on when training makes two or more passes over the data: each example then costs one
    reference forward in all instead of one per epoch (measured with `tunesmith bench dpo --precompute`)."""
    section = getattr(recipe, stage.name, None)
    chosen = getattr(section, "precompute_ref_log_probs", None)
    if chosen is not None or not stage.needs_reference:
        return bool(chosen)
    return schedule is not None and schedule.num_epochs >= 2


def head_scores_tokens(recipe, precision) -> bool:
    """Whether ORPO's and CPO's trainers score answer tokens with tunesmith's head (`TokenScoredPairs`) rather than
    the micro-batch's whole logits: on a CPU, with a head that takes no gradient (the plan's memory follows this)."""
    return precision.device == "cpu" and recipe.method != "full" and not recipe.lora.train_embeddings


class TokenScoredPairs:
    """Mixin for trl.experimental's `ORPOTrainer` and `CPOTrainer`. Their `concatenated_forward` takes the logits of
    every position of the micro-batch (ORPO upcasts them to fp32, `logits_in_fp32`) and log-softmaxes them whole;
    on a CPU with a frozen head this one runs the same backbone and scores only the answer tokens, and ORPO's NLL
    tokens, with train/loss.py's `token_log_probs` (logits in the weights' dtype, softmax in fp32, as before).
    Returns what theirs returns; the two "logits" tensors, which the trainers only average for the
    `logits/chosen|rejected` metrics, hold each answer token's mean logit (theirs averaged prompt and padding too)."""

    nll_over_prompt = False  # ORPO's NLL term covers the prompt and the chosen answer; CPO's the chosen answer

    def average_answer_logps(self) -> bool:
        return True

    def nll_weight(self) -> float:
        return 1.0

    def concatenated_forward(self, model, batch):
        import functools

        import torch

        from tunesmith.train.loss import last_hidden_states, output_embeddings, plain_head, spread_over, token_log_probs, trains
        from tunesmith.train.prefix import scored_hidden_states

        head = output_embeddings(model)
        if (
            self.is_encoder_decoder
            or self.aux_loss_enabled
            or trains(head)
            or head.weight.device.type != "cpu"
            or not plain_head(model.config.get_text_config())
        ):
            return super().concatenated_forward(model, batch)
        padding = getattr(self, "padding_value", getattr(self, "pad_token_id", 0))  # ORPOTrainer's name, CPOTrainer's
        joined = self.concatenated_inputs(batch, is_encoder_decoder=False, padding_value=padding, device=self.accelerator.device)
        ids, mask, labels = joined["concatenated_input_ids"], joined["concatenated_attention_mask"], joined["concatenated_labels"]
        targets, answer = ids[:, 1:], labels[:, 1:] != -100
        if not torch.equal(labels[:, 1:][answer], targets[answer]):  # answers labelled with other tokens than they hold
            return super().concatenated_forward(model, batch)
        n = batch["chosen_labels"].shape[0]
        nll = answer.clone()
        nll[n:] = False
        if self.nll_over_prompt:
            nll[:n] = mask[:n, 1:].bool()
        scored = answer | nll
        hidden = scored_hidden_states(functools.partial(last_hidden_states, model), model.config, ids, mask, scored, answers=answer)
        scores = token_log_probs(hidden, head.weight, targets[scored])
        logp, mean_logit = spread_over(scored, scores.log_probs), spread_over(scored, scores.mean_logits)
        logps = (logp * answer).sum(-1)
        if self.average_answer_logps():
            logps = logps / answer.sum(-1)
        if self.nll_weight() == 0:
            nll_loss = torch.tensor(0.0, device=ids.device)
        else:
            nll_loss = -(logp[:n] * nll[:n]).sum() / nll[:n].sum()
        return logps[:n], logps[n:], mean_logit[:n][answer[:n]], mean_logit[n:][answer[n:]], nll_loss


class PreferenceStage(Stage):
    data_kind = "preference"
    sequences_per_example = 2
    progress_metrics = ("rewards/margins", "rewards/accuracies")
    plot_metrics = ("rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected")
    implicit_reward = True  # DPO/KTO: beta * log-ratio to the reference; ORPO has no reference

    def trl_config(self, cls, recipe, common: dict, schedule=None, **extra):
        """As every stage's, with max_length and precompute_ref_log_probs decided (see precompute_reference)."""
        fields = self.section(recipe).model_dump()
        if "precompute_ref_log_probs" in fields:
            extra["precompute_ref_log_probs"] = precompute_reference(recipe, self, schedule)
        return super().trl_config(cls, recipe, common, schedule, max_length=recipe.data.max_length, **extra)

    def scores(self, model, tokenizer, prompts: list, responses: list) -> list[float]:
        """How the model rates each response to its prompt: the policy's summed log-probability."""
        from tunesmith.evaluate.preference import response_logprobs

        return response_logprobs(model, tokenizer, prompts, responses)

    def measure(self, model, tokenizer, recipe, data: StageData) -> dict:
        from tunesmith.evaluate.preference import Pairs

        pairs = Pairs.from_examples(data.eval_examples)
        if not len(pairs):
            return {}
        return {
            "pairs": pairs,
            "chosen": self.scores(model, tokenizer, pairs.prompts, pairs.chosen),
            "rejected": self.scores(model, tokenizer, pairs.prompts, pairs.rejected),
            "beta": getattr(self.section(recipe), "beta", None),
        }

    def compare(self, before: dict, after: dict):
        from tunesmith.evaluate.preference import pairwise_accuracy, text_of

        mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
        b_margin = [c - r for c, r in zip(before["chosen"], before["rejected"])]
        a_margin = [c - r for c, r in zip(after["chosen"], after["rejected"])]
        changes = [
            Change("log p(chosen), mean", mean(before["chosen"]), mean(after["chosen"]), "{:.2f}"),
            Change("log p(rejected), mean", mean(before["rejected"]), mean(after["rejected"]), "{:.2f}"),
            Change("log p(chosen) - log p(rejected), mean", mean(b_margin), mean(a_margin), "{:.2f}"),
            Change(
                "preference accuracy (policy ranks chosen first)",
                pairwise_accuracy(before["chosen"], before["rejected"]),
                pairwise_accuracy(after["chosen"], after["rejected"]),
                "{:.0%}",
            ),
        ]
        beta = after["beta"]
        if self.implicit_reward:  # before training the policy is the reference: its implicit reward is 0 by definition
            rewards_c = [beta * (a - b) for a, b in zip(after["chosen"], before["chosen"])]
            rewards_r = [beta * (a - b) for a, b in zip(after["rejected"], before["rejected"])]
            changes.append(Change(f"implicit reward margin, beta={beta:g}", 0.0, mean([c - r for c, r in zip(rewards_c, rewards_r)]), "{:+.3f}"))
            changes.append(Change("implicit reward accuracy", None, pairwise_accuracy(rewards_c, rewards_r), "{:.0%}"))
        pairs = after["pairs"]
        order = sorted(range(len(pairs)), key=lambda i: text_of(pairs.prompts[i]) != TEXTBOOK_PROMPT)[:4]
        examples = []
        for i in order:
            row = {
                "prompt": text_of(pairs.prompts[i]),
                "chosen": text_of(pairs.chosen[i]),
                "rejected": text_of(pairs.rejected[i]),
                "log p chosen": f"{before['chosen'][i]:.2f} -> {after['chosen'][i]:.2f}",
                "log p rejected": f"{before['rejected'][i]:.2f} -> {after['rejected'][i]:.2f}",
            }
            if max(len(row["chosen"]), len(row["rejected"])) < 20:  # one-word answers: show probabilities
                p = lambda lp: f"{math.exp(lp):.3g}"  # noqa: E731
                row["log p chosen"] += f"  (p {p(before['chosen'][i])} -> {p(after['chosen'][i])})"
                row["log p rejected"] += f"  (p {p(before['rejected'][i])} -> {p(after['rejected'][i])})"
            examples.append(row)
        return changes, examples, "eval pairs before -> after"
