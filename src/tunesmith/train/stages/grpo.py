"""GRPO on `trl.GRPOTrainer` (and RLOO on `trl.RLOOTrainer`, stages/rloo.py): online RL from reward functions.

Each step samples `num_generations` completions per prompt, scores them with the recipe's rewards
(rewards/), and trains each completion by its advantage: its reward against its own group's,
(r - group mean) / group std, with no critic. TRL computes the loss; what is ours:
- the rollouts are sampled by our decode loop (train/rollout.py), and every group is recorded in
  <run>/rollouts.jsonl (`tunesmith inspect rollouts`);
- the reference is the starting model: with LoRA the adapter disabled, in full fine-tuning the
  scaffold's frozen copy (TRL would reload the base from disk, losing a merged SFT adapter);
- before and after training, greedy answers to the held-out prompts are scored with the same
  rewards, plus the pass rate on an `answer` column when there is one.
"""

from __future__ import annotations

import re

from tunesmith.errors import RecipeError
from tunesmith.rewards.scoring import mean, prompts_and_columns, score, weighted
from tunesmith.train.rollout import FastRollouts
from tunesmith.train.stages.base import Change, Stage, StageData

MEASURE_PROMPTS = 64  # held-out prompts answered before and after training (greedy)


def grpo_loss_types() -> list[str]:
    """The loss types TRL's GRPOConfig documents (read from TRL, so a new TRL's losses show up here)."""
    from trl import GRPOConfig

    help_text = GRPOConfig.__dataclass_fields__["loss_type"].metadata["help"]
    supported = re.search(r"Supported values are (.*?)\.", help_text)
    names = re.findall(r"'(\w+)'", supported.group(1)) if supported else ["grpo", "dr_grpo", "dapo", "bnpo"]
    return [n for n in names if n != "luspo"]  # luspo needs importance_sampling_level='sequence', not offered here


def load_rewards(section, where: str) -> list:
    """The recipe's reward entries as callable `Reward`s (rewards/); bad names and files fail here, by entry."""
    from tunesmith.rewards import load_reward

    return [
        load_reward(e.function, reward_model=e.reward_model, weight=e.weight, options=dict(e.options), where=f"{where}.rewards[{i}]")
        for i, e in enumerate(section.rewards)
    ]


def rewards_formula(section) -> str:
    """The weighted rewards in one line, for the run header: '1 x numeric_answer + 0.5 x length_penalty'."""
    return " + ".join(f"{e.weight:g} x {e.function.rsplit(':', 1)[-1] if e.function else 'reward model'}" for e in section.rewards)


class GRPOStage(Stage):
    shares_prompts = "group"
    name = "grpo"
    title = "group relative policy optimisation"
    data_kind = "prompt"
    progress_metrics = ("reward", "kl")
    trainer_class = "GRPOTrainer"
    config_class = "GRPOConfig"

    @property
    def unit(self) -> str:
        return "completions"

    def uses_reference(self, recipe) -> bool:
        return self.section(recipe).beta > 0

    def describe(self, recipe) -> str:
        s = self.section(recipe)
        return f"{self.title}, {s.num_generations} completions per prompt, beta {s.beta:g}, rewards {rewards_formula(s)}"

    def plots(self, recipe) -> dict[str, tuple[str, ...]]:
        names = [f"rewards/{n}/mean" for n in self._reward_names(recipe)]
        return {"reward.png": ("reward", *names), "kl.png": ("kl", "clip_ratio/region_mean")}

    def _reward_names(self, recipe) -> list[str]:
        from tunesmith.rewards.trl_bridge import unique_names

        return unique_names([r.name for r in load_rewards(self.section(recipe), self.name)])

    def plan_notes(self, recipe) -> list[str]:
        s, t = self.section(recipe), recipe.training
        prompts = t.per_device_train_batch_size * t.gradient_accumulation_steps // s.num_generations
        return [
            f"rollouts: each step samples {prompts} prompts x {s.num_generations} completions of up to {s.max_completion_length} tokens (temperature {s.temperature:g}) "
            f"with tunesmith's decode loop, scores them and trains on each one's advantage; generation is typically 40-50% of a step on a CPU"
        ]

    def check(self, recipe) -> None:
        s, t = self.section(recipe), recipe.training
        completions = t.per_device_train_batch_size * t.gradient_accumulation_steps
        if completions % s.num_generations:
            raise RecipeError(
                f"a step trains on {completions} completions (per_device_train_batch_size {t.per_device_train_batch_size} x gradient_accumulation_steps {t.gradient_accumulation_steps}), which is not a whole number of groups of {s.num_generations}",
                where=f"{self.name}.num_generations",
                hint=f"make per_device_train_batch_size x gradient_accumulation_steps a multiple of {s.num_generations} (e.g. {s.num_generations} x 2), or change num_generations",
            )
        if self.name == "grpo" and s.loss_type not in (known := grpo_loss_types()):
            raise RecipeError(f"{s.loss_type} is not a loss TRL's GRPOTrainer offers", where="grpo.loss_type", hint=f"one of: {', '.join(known)}")
        load_rewards(s, self.name)  # unknown names, missing files, wrong signatures: before anything runs

    def prepare_data(self, recipe, tokenizer, source=None, with_eval=True) -> StageData:
        data = self.prompts_with_rewards(recipe, tokenizer, source, with_eval)
        # the trainer iterates over completions: every prompt num_generations times (the plan counts the same)
        data.num_sequences = data.num_examples * self.section(recipe).num_generations * self.section(recipe).num_iterations
        return data

    def prompts_with_rewards(self, recipe, tokenizer, source=None, with_eval=True) -> StageData:
        """The prompts (and held-out prompts) with the recipe's rewards loaded and checked against their columns,
        as every online-RL stage takes them; the caller says how many sequences the trainer iterates over."""
        data = super().prepare_data(recipe, tokenizer, source, with_eval)
        rewards = load_rewards(self.section(recipe), self.name)
        for reward in rewards:  # a missing column (`answer` for exact_answer) stops here, before the run starts
            reward.check_columns([c for c in data.train.column_names if c != "prompt"], source or recipe.data.dataset)
        data.longest += self.section(recipe).max_completion_length  # what the trainer runs: prompt + completion
        data.summary += f"\nrewards: {', '.join(f'{r.name} (weight {r.weight:g})' for r in rewards)}"
        data.raw = rewards
        data.eval = None  # the trainer's own eval would sample and report a loss that means nothing here;
        # the held-out prompts are answered and scored before and after training instead (measure)
        return data

    def config(self, recipe, common: dict, schedule=None):
        import trl

        return self.trl_config(
            getattr(trl, self.config_class),
            recipe,
            common,
            exclude={"rewards", "reward_model"},  # ours: rewards/ loads them
            reward_weights=[e.weight for e in self.section(recipe).rewards],
            include_num_input_tokens_seen="no",  # the trainer counts prompt and completion tokens itself
        )

    def trainer(self, *, model, ref_model, args, data, tokenizer, callbacks, peft_config):
        import trl

        from tunesmith.rewards.trl_bridge import trl_reward_functions

        functions, _ = trl_reward_functions(data.raw)
        cls = rollout_trainer(getattr(trl, self.trainer_class))
        beta = args.beta
        if ref_model is not None:
            args.beta = 0.0  # TRL would reload the reference by name from disk; ours is the starting model itself
        trainer = cls(
            model=model,
            reward_funcs=functions,
            args=args,
            train_dataset=data.train,
            eval_dataset=data.eval,
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
        )
        trainer.rollout_seed = args.seed
        if ref_model is not None:
            from trl.trainer.utils import add_fused_lm_head

            args.beta = trainer.beta = beta
            add_fused_lm_head(ref_model, temperature=trainer.temperature)  # as TRL prepares a reference of its own
            trainer.ref_model = trainer.accelerator.prepare_model(ref_model, evaluation_mode=True)
        return trainer

    # ------------------------------------------------------------ before / after

    def measure(self, model, tokenizer, recipe, data: StageData) -> dict:
        """Greedy answers to the held-out prompts, scored by the recipe's rewards (and the pass rate on `answer`)."""
        from tunesmith.infer.generate import complete
        from tunesmith.rewards import load_reward

        examples = data.eval_examples[:MEASURE_PROMPTS]
        if not examples:
            return {}
        prompts, columns = prompts_and_columns(examples)
        chat = isinstance(prompts[0], list)
        replies = [c.text for c in complete(model, tokenizer, prompts, max_new_tokens=self.section(recipe).max_completion_length, chat=chat, batch_size=16)]
        rewards = data.raw
        per_function = score(rewards, prompts, replies, columns)
        snapshot = {"prompts": prompts, "replies": replies, "rewards": per_function, "total": weighted(rewards, per_function)}
        if "answer" in columns:
            snapshot["correct"] = load_reward("numeric_answer")(prompts, replies, **columns)
            snapshot["exact"] = load_reward("exact_answer")(prompts, replies, **columns)
        return snapshot

    def compare(self, before: dict, after: dict):
        from tunesmith.rewards.trl_bridge import prompt_text

        changes = [Change("mean reward (weighted sum), greedy", mean(before["total"]), mean(after["total"]), "{:+.3f}")]
        changes += [Change(f"  {name}, mean", mean(before["rewards"][name]), mean(after["rewards"][name]), "{:+.3f}") for name in after["rewards"]]
        if "correct" in after:
            changes.append(Change("answer correct (last number = answer)", mean(before["correct"]), mean(after["correct"]), "{:.0%}"))
            changes.append(Change("exact answer (reply is just the answer)", mean(before["exact"]), mean(after["exact"]), "{:.0%}"))
        changed = [i for i in range(len(after["replies"])) if after["replies"][i] != before["replies"][i]] or list(range(len(after["replies"])))
        examples = [
            {
                "prompt": prompt_text(after["prompts"][i]),
                "before": before["replies"][i],
                "after": after["replies"][i],
                "reward": f"{_show(before['total'][i])} -> {_show(after['total'][i])}",
            }
            for i in changed[:4]
        ]
        return changes, examples, "held-out prompts, greedy, before -> after"


def _show(value) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


def rollout_trainer(base):
    """`base` (GRPOTrainer or RLOOTrainer) with our rollouts and their record (train/rollout.py)."""
    import trl

    if base is trl.RLOOTrainer:

        class RLOOWithRollouts(FastRollouts, base):
            def _generate_single_turn(self, prompt_ids, images, multimodal_fields):
                if not self._samples_here(images):
                    return super()._generate_single_turn(prompt_ids, images, multimodal_fields)
                return self._sample(prompt_ids)

        return RLOOWithRollouts

    class GRPOWithRollouts(FastRollouts, base):
        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            if not self._samples_here(images):
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
            return self._sample(prompt_ids), None  # no sampling log-probs: TRL recomputes what it needs

    return GRPOWithRollouts
