"""PPO (train/ppo.py): an actor, a critic, a reward (model or functions) and a reference.

GRPO's surface (stages/grpo.py): prompt-only data, the same reward registry, the held-out prompts
answered greedily and scored before and after training. What differs: one response per prompt, a
critic (a value model) as the baseline, GAE over the tokens, a per-token KL penalty in the reward,
and `ppo_epochs` clipped passes over each rollout batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.errors import RecipeError
from tunesmith.train.stages.base import StageData
from tunesmith.train.stages.grpo import GRPOStage, load_rewards, rewards_formula


def rollout_batch_size(recipe) -> int:
    t, s = recipe.training, recipe.ppo
    return t.per_device_train_batch_size * t.gradient_accumulation_steps * s.num_mini_batches


def reward_model_spec(recipe) -> str | None:
    """The first reward model among the rewards (the critic starts as a copy of it), or None."""
    return next((e.reward_model for e in recipe.ppo.rewards if e.reward_model), None)


class PPOStage(GRPOStage):
    projects_every_position = True  # train/ppo.py takes the logits of every response position of a micro-batch at once
    shares_prompts = ""  # one response per prompt: nothing to share
    name = "ppo"
    title = "proximal policy optimisation"
    progress_metrics = ("reward", "kl", "value_loss")
    trainer_wraps_adapter = False  # the actor gets its adapter from the scaffold; the critic its own here

    @property
    def unit(self) -> str:
        return "responses"

    def uses_reference(self, recipe) -> bool:
        return recipe.ppo.kl_coef > 0

    def describe(self, recipe) -> str:
        s = recipe.ppo
        kl = f"KL penalty {s.kl_coef:g}" + (f" adapting to {s.target_kl:g}" if s.target_kl else "")
        return f"{self.title}: actor, critic, rewards {rewards_formula(s)}, reference ({kl}); {s.ppo_epochs} epochs x {s.num_mini_batches} minibatches per {rollout_batch_size(recipe)} rollouts"

    def plots(self, recipe) -> dict[str, tuple[str, ...]]:
        return {
            "reward.png": ("reward", "reward_with_kl", "value"),
            "kl.png": ("kl", "approx_kl", "clip_fraction"),
            "critic.png": ("value_loss", "explained_variance"),
        }

    def plan_notes(self, recipe) -> list[str]:
        s, t = recipe.ppo, recipe.training
        rollouts = rollout_batch_size(recipe)
        critic = f"a copy of the reward model {reward_model_spec(recipe)}" if reward_model_spec(recipe) else "the starting policy with a new value head"
        adapter = "its own LoRA adapter and head" if recipe.method != "full" else "all its weights"
        return [
            f"rollouts: every {s.ppo_epochs * s.num_mini_batches} steps the actor samples one response to each of {rollouts} prompts (up to {s.max_completion_length} tokens, temperature {s.temperature:g}); "
            f"then {s.ppo_epochs} passes over them in {s.num_mini_batches} minibatch(es) of {t.per_device_train_batch_size * t.gradient_accumulation_steps}, one optimizer step each; "
            f"an epoch is every prompt once (the last partial rollout batch left out), each trained {s.ppo_epochs} times",
            f"four models: the actor (trained), the critic ({critic}, training {adapter}), the reward ({', '.join(e.function or 'reward model' for e in s.rewards)}) and the reference "
            + ("(the actor with its adapter disabled: no copy)" if recipe.method != "full" else "(a frozen copy of the starting weights)"),
        ]

    def plan_models(self, recipe, precision, estimate) -> tuple[int, int, dict[str, int]]:
        """The critic (trained: weights, gradients, optimizer state, activations) and the reward model (fp32 weights,
        as rewards/model.py loads it; rule-based rewards hold nothing)."""
        from tunesmith.models.load import meta_model
        from tunesmith.train.plan import parameter_counts

        spec = reward_model_spec(recipe)
        critic = meta_model(spec or recipe.model.name, head="reward")
        total, trainable = parameter_counts(recipe, critic, "reward")
        memory = {"critic": sum(estimate(critic, "reward").values())}
        memory["reward_model"] = sum(p.numel() for p in critic.parameters()) * 4 if spec else 0
        return total, trainable, memory

    def check(self, recipe) -> None:
        s = recipe.ppo
        if s.target_kl is not None and s.kl_coef == 0:
            raise RecipeError(
                "target_kl adapts kl_coef, but kl_coef is 0 (no reference, nothing to adapt)",
                where="ppo.target_kl",
                hint="set kl_coef > 0 (e.g. 0.05) as the starting value, or drop target_kl",
            )
        if recipe.method == "qlora":
            raise RecipeError(
                "PPO does not take QLoRA yet: the critic and the reference are not built for a 4-bit base (and it could not be tested without a GPU)",
                where="method",
                hint="use method: lora",
            )
        load_rewards(s, self.name)
        if spec := reward_model_spec(recipe):  # the critic, a copy of the reward model, reads the actor's token ids
            from tunesmith.models.load import meta_model

            theirs, ours = meta_model(spec, head="reward").config.vocab_size, meta_model(recipe.model.name).config.vocab_size
            if theirs != ours:
                raise RecipeError(
                    f"the reward model {spec} has a vocabulary of {theirs} tokens and the model {recipe.model.name} one of {ours}; the critic starts as a copy of the reward model and reads the actor's tokens",
                    where="ppo.reward_model",
                    hint="train the reward model from the same model family as the actor (tunesmith reward --model ...)",
                )

    def prepare_data(self, recipe, tokenizer, source=None, with_eval=True) -> StageData:
        data = self.prompts_with_rewards(recipe, tokenizer, source, with_eval)
        rollouts = rollout_batch_size(recipe)
        if data.num_examples < rollouts:
            raise RecipeError(
                f"a rollout batch is {rollouts} prompts, but the data has {data.num_examples}",
                where="training.per_device_train_batch_size",
                hint=f"lower per_device_train_batch_size x gradient_accumulation_steps x ppo.num_mini_batches to at most {data.num_examples}, or add prompts",
            )
        # the trainer iterates over whole rollout batches (the last partial one is left out), each ppo_epochs times
        data.num_sequences = data.num_examples // rollouts * rollouts * recipe.ppo.ppo_epochs
        data.extras["critic"] = CriticSource(reward_model_spec(recipe), recipe.model.name, recipe.method, recipe.lora)
        return data

    def config(self, recipe, common: dict, schedule=None):
        from tunesmith.train.ppo import PPOConfig

        return self.trl_config(PPOConfig, recipe, common, exclude={"rewards", "reward_model"}, include_num_input_tokens_seen="no")

    def trainer(self, *, model, ref_model, args, data, tokenizer, callbacks, peft_config):
        from tunesmith.train.ppo import PPOTrainer

        critic = build_critic(data.extras["critic"], model)
        return PPOTrainer(
            policy=model,
            critic=critic,
            ref_model=ref_model,
            rewards=data.raw,
            args=args,
            train_dataset=data.train,
            processing_class=tokenizer,
            callbacks=callbacks,
        )

    def trained_model(self, trainer):
        return trainer.model.policy


@dataclass(frozen=True)
class CriticSource:
    """Where the critic starts: the reward model (`reward_model`), else the starting policy `model`."""

    reward_model: str | None
    model: str
    method: str
    lora: object  # the recipe's LoraSection: the critic's adapter takes the actor's settings


def build_critic(source: CriticSource, policy):
    """The value model, in the dtype of the actor's base: a copy of the reward model when one scores (its values
    start on the reward's scale), else the starting policy with a new head at zero (values start at 0, no made-up
    baseline). With LoRA it trains its own adapter and head (peft's SEQ_CLS task keeps the head trainable)."""
    import torch

    from tunesmith.models.load import resolve_model
    from tunesmith.models.reward import load_reward_model, new_reward_model, score_in_fp32

    frozen = [p for p in policy.parameters() if not p.requires_grad]
    dtype = (frozen or list(policy.parameters()))[0].dtype
    if source.reward_model:
        critic = load_reward_model(source.reward_model, dtype=dtype)
        if hasattr(critic, "merge_and_unload"):  # a reward run's adapter: folded into the copy
            critic = critic.merge_and_unload()
        if critic.score.weight.dtype != torch.float32:
            critic = score_in_fp32(critic)
    else:
        critic = new_reward_model(resolve_model(source.model), dtype)
        torch.nn.init.zeros_(critic.score.weight)
    attention = policy.config._attn_implementation  # the kernel the scaffold chose for this run (train/speed.py)
    if critic.config._attn_implementation != attention:
        critic.set_attn_implementation(attention)
    if critic.config.pad_token_id is None:
        critic.config.pad_token_id = policy.config.pad_token_id
    critic.train()
    if source.method == "full":
        return critic
    from peft import get_peft_model

    from tunesmith.models.lora import build_lora_config

    critic.requires_grad_(False)
    return get_peft_model(critic, build_lora_config(critic, source.lora, task_type="SEQ_CLS"))
