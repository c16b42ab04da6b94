"""PPO for language models: an actor, a critic, a reward and a reference, on transformers' Trainer.

TRL 1.x has no PPO trainer any more, so this is ours; it is meant to be read. One PPO iteration:

1. rollout: the actor (the policy being trained) samples one response to each of R prompts with
   tunesmith's decode loop (`infer.generate.complete_tokens`, what `tunesmith generate` runs);
2. score: the recipe's rewards score each response (rewards/: a reward model, rule-based functions or
   both, weighted), one number per response;
3. without gradients: the actor's log-probability of each response token ("old" log-probs), the
   reference's (the starting model: with LoRA the adapter disabled, in full fine-tuning a frozen copy),
   and the critic's value of each position;
4. per-token rewards: r_t = -kl_coef * (log p_actor - log p_ref) on every token (the KL penalty), plus
   the score on the last token; kl_coef is fixed or adapts towards `target_kl` (Ziegler et al. 2019);
5. GAE (train/advantages.py) turns rewards and values into advantages A_t and returns (the critic's
   target); the advantages are whitened over the batch;
6. `ppo_epochs` passes over the R rollouts in `num_mini_batches` minibatches, one optimizer step each:
   the clipped surrogate loss for the actor, max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)), and
   the clipped value loss for the critic, summed as pg_loss + vf_coef * vf_loss (one optimizer over
   both, as TRL's PPO trainer had it).

How this maps onto the Trainer: one optimizer step is one minibatch of per_device_train_batch_size x
gradient_accumulation_steps rollouts. The data loader yields each rollout batch of R prompts once per
micro-batch that trains on it (TRL's RepeatSampler, as its GRPO trainer does), so the Trainer's step
count, schedule, logging, checkpoints and resume work unchanged; `_prepare_inputs` samples a new batch
at the first micro-batch of each and hands out minibatch slices after. A checkpoint keeps the rollout
batch being trained on and kl_coef (ppo_state_<rank>.pt), so a run resumed in the middle of a batch trains on
exactly the rollouts it would have.

Under several processes (`tunesmith launch`, DDP) each process samples and scores its own rollout batch
and the gradients are averaged; the logged rollout metrics and the KL that adapts kl_coef are means over
every process's batch (so kl_coef stays the same everywhere); the advantages are whitened per process.

The critic is a separate value model: a causal LM body with a one-output head read at every position
(transformers' *ForSequenceClassification, whose head we apply per token). It starts as a copy of the
reward model when one is among the rewards (InstructGPT's and TRL's choice: its values start on the
reward's scale), else as the starting policy with a new head. With LoRA it trains its own adapter and
its head over its own frozen body; sharing the policy's frozen body would save that body's memory
(~270 MB in bf16 for SmolLM2) but ties the two together, and the reward model's body is already
a separate model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from tunesmith.rewards.scoring import mean
from tunesmith.train.advantages import gae, masked_mean, masked_var, whiten
from tunesmith.train.rollout import TimedGeneration, response_tokens

PPO_STATE = "ppo_state_{rank}.pt"  # one per process: under several processes each trains on its own rollout batch
CRITIC_DIR = "critic"


# ---------------------------------------------------------------- the pieces, as functions (tested by hand)


def kl_penalty_rewards(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards (B, L): -kl_coef * KL_t on every response token, plus each response's score on its last
    token. KL_t = log p_actor(token) - log p_ref(token), the per-sample estimate ("k1") of the KL divergence;
    its sum over a response estimates KL(actor || reference) for that prompt. Returns (rewards, kl)."""
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rewards[torch.arange(len(scores)), last] += scores.to(rewards)
    return rewards, kl


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, dict]:
    """PPO's clipped surrogate: mean over tokens of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)).

    ratio = p_new / p_old of each sampled token. For A > 0 a ratio above 1 + eps earns nothing more (no
    incentive to push further); for A < 0 neither does a ratio below 1 - eps. Where the update went the
    wrong way (A > 0 and ratio < 1 - eps, or A < 0 and ratio > 1 + eps) the unclipped, larger loss is kept,
    so it is always pulled back. Returns (loss, stats): clip_fraction
    (share of tokens where the clipped term was taken) and approx_kl (mean of (log ratio)^2 / 2)."""
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    stats = {
        "clip_fraction": masked_mean((clipped > unclipped).float(), mask),
        "approx_kl": 0.5 * masked_mean(log_ratio**2, mask),
        "ratio": masked_mean(ratio, mask),
    }
    return loss, stats


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange_value: float) -> tuple[torch.Tensor, dict]:
    """The critic's clipped regression to the returns: 0.5 * mean(max((V - R)^2, (V_clipped - R)^2)), where
    V_clipped stays within cliprange_value of the value at sampling time. Returns (loss, stats)."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped, clipped), mask)
    return loss, {"value_clip_fraction": masked_mean((clipped > unclipped).float(), mask)}


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns): 1 = the critic predicts the returns, 0 = no better than their mean."""
    var = masked_var(returns, mask)
    return float("nan") if var <= 0 else float(1 - masked_var(returns - values, mask) / var)


@dataclass
class AdaptiveKL:
    """kl_coef, fixed (target None) or adapted towards `target` KL per response (Ziegler et al. 2019):
    after each rollout batch of n responses, kl_coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon."""

    value: float
    target: float | None = None
    horizon: int = 10000

    def update(self, kl: float, n: int) -> None:
        if self.target:
            error = max(-0.2, min(0.2, kl / self.target - 1))
            self.value *= 1 + error * n / self.horizon


# ---------------------------------------------------------------- configuration


def _default(name: str):
    """A PPO setting's default, from the recipe's section (recipes/schema.py holds every default)."""
    from tunesmith.recipes.schema import PPOSection

    return PPOSection.model_fields[name].default


@dataclass
class PPOConfig(TrainingArguments):
    """TrainingArguments plus PPO's settings (the recipe's `ppo:` section, same names and defaults)."""

    ppo_epochs: int = _default("ppo_epochs")
    num_mini_batches: int = _default("num_mini_batches")
    cliprange: float = _default("cliprange")
    cliprange_value: float = _default("cliprange_value")
    vf_coef: float = _default("vf_coef")
    kl_coef: float = _default("kl_coef")
    target_kl: float | None = _default("target_kl")
    kl_horizon: int = _default("kl_horizon")
    gamma: float = _default("gamma")
    lam: float = _default("lam")
    whiten_rewards: bool = _default("whiten_rewards")
    missing_eos_penalty: float | None = _default("missing_eos_penalty")
    max_completion_length: int = _default("max_completion_length")
    temperature: float = _default("temperature")
    top_p: float = _default("top_p")
    top_k: int = _default("top_k")
    min_p: float | None = _default("min_p")
    repetition_penalty: float = _default("repetition_penalty")
    disable_dropout: bool = _default("disable_dropout")
    sample_every: int = _default("sample_every")
    remove_unused_columns: bool = False  # the prompts' extra columns go to the reward functions

    @property
    def rollout_batch_size(self) -> int:
        """Prompts per rollout: one minibatch (per_device x accumulation) times num_mini_batches."""
        return self.per_device_train_batch_size * self.gradient_accumulation_steps * self.num_mini_batches


# ---------------------------------------------------------------- the two trained models, as one module


class PolicyAndCritic(torch.nn.Module):
    """The actor and the critic under one module, so one Trainer (one optimizer, one schedule) trains both."""

    def __init__(self, policy, critic):
        super().__init__()
        self.policy = policy
        self.critic = critic

    def forward(self, input_ids, attention_mask, position_ids, response_width: int):
        """Logits predicting each of the last `response_width` tokens (B, L, V), and the critic's value before each (B, L)."""
        logits = self.policy(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=response_width + 1, use_cache=False
        ).logits[:, :-1]
        return logits, critic_values(self.critic, input_ids, attention_mask, position_ids, response_width)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        kwargs_ = activation_checkpointing_kwargs or {"use_reentrant": False}  # reentrant needs inputs with grad on a frozen base
        for model in (self.policy, self.critic):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs_, **kwargs)


def critic_values(critic, input_ids, attention_mask, position_ids, response_width: int) -> torch.Tensor:
    """V_t for each response position: the critic's head applied to the hidden state just before the token."""
    from peft import PeftModel

    seq = critic.get_base_model() if isinstance(critic, PeftModel) else critic  # LoRA layers sit inside it
    body = getattr(seq, seq.base_model_prefix)
    hidden = body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).last_hidden_state
    return seq.score(hidden[:, -response_width - 1 : -1]).squeeze(-1).float()


def tempered(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The logits of the sampling distribution, in fp32: divided by the rollouts' temperature (top-k/top-p truncation
    is not modelled, as in TRL)."""
    return logits.float() / temperature


def token_logprobs(tempered_logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) from `tempered` logits."""
    from trl.trainer.utils import selective_log_softmax

    return selective_log_softmax(tempered_logits, tokens)


# ---------------------------------------------------------------- the trainer


@dataclass
class Rollouts:
    """One rollout batch, padded: prompts left-padded to P tokens, responses right-padded to L."""

    input_ids: torch.Tensor  # (R, P + L)
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    response_mask: torch.Tensor  # (R, L): 1 on response tokens (the closing eos included)
    old_logprobs: torch.Tensor  # (R, L)
    old_values: torch.Tensor
    advantages: torch.Tensor  # whitened
    returns: torch.Tensor
    order: list[torch.Tensor] = field(default_factory=list)  # row indices of each micro-batch, all ppo_epochs

    TENSORS = ("input_ids", "attention_mask", "position_ids", "response_mask", "old_logprobs", "old_values", "advantages", "returns")

    def rows(self, index: torch.Tensor) -> dict:
        return {name: getattr(self, name)[index] for name in self.TENSORS}


class PPOTrainer(TimedGeneration, Trainer):
    """transformers' Trainer with PPO's rollouts in `_prepare_inputs` and its losses in `compute_loss`."""

    def __init__(self, *, policy, critic, ref_model, rewards, args: PPOConfig, train_dataset, processing_class, callbacks=None):
        from trl.trainer.utils import disable_dropout_in_model, identity

        if args.disable_dropout:
            for model in (policy, critic, ref_model):
                if model is not None:
                    disable_dropout_in_model(model)
        super().__init__(
            model=PolicyAndCritic(policy, critic),
            args=args,
            train_dataset=train_dataset,
            data_collator=identity,
            processing_class=processing_class,
            callbacks=callbacks,
        )
        self.ref_model = ref_model
        self.rewards = rewards
        self.kl = AdaptiveKL(args.kl_coef, args.target_kl, args.kl_horizon)
        self.rollout_seed = args.seed
        self._rollouts: Rollouts | None = None
        self._micro = 0  # micro-batches trained so far
        self._rollout_index = 0
        self._metrics: dict[str, list[float]] = {}

    @property
    def micro_per_rollout(self) -> int:
        a = self.args
        return a.ppo_epochs * a.num_mini_batches * a.gradient_accumulation_steps

    # ------------------------------------------------------------ data: each rollout batch once per micro-batch on it

    def get_train_dataloader(self):
        return self._get_dataloader(
            dataset=self.train_dataset, description="Training", batch_size=self.args.rollout_batch_size, sampler_fn=self._get_train_sampler, is_training=True
        )

    def _get_train_sampler(self, dataset=None):
        from trl.trainer.utils import RepeatSampler

        class EpochSeededSampler(RepeatSampler):
            """TRL's RepeatSampler with its order seeded by the epoch, so a run resumed in epoch k sees epoch k's order."""

            def set_epoch(self, epoch: int) -> None:
                self.generator.manual_seed(self.seed + epoch)

        dataset = dataset if dataset is not None else self.train_dataset
        return EpochSeededSampler(
            dataset, mini_repeat_count=1, batch_size=self.args.rollout_batch_size, repeat_count=self.micro_per_rollout, shuffle=True, seed=self.args.seed
        )

    def _prepare_inputs(self, prompts: list[dict]) -> dict:
        step_in_rollout = self._micro % self.micro_per_rollout
        if step_in_rollout == 0 or self._rollouts is None:
            self._rollouts = self._rollout(prompts)
        self._micro += 1
        return self._rollouts.rows(self._rollouts.order[step_in_rollout])

    # ------------------------------------------------------------ one rollout batch

    @torch.no_grad()
    def _rollout(self, examples: list[dict]) -> Rollouts:
        from tunesmith.infer.generate import encode_prompt
        from tunesmith.rewards.scoring import prompts_and_columns, score, weighted

        self._start_window()
        a, tokenizer = self.args, self.processing_class
        policy = self.accelerator.unwrap_model(self.model).policy
        device = next(policy.parameters()).device
        prompts, columns = prompts_and_columns(examples)
        prompt_ids = [encode_prompt(tokenizer, p, chat=isinstance(p, list)) for p in prompts]

        # 1. the actor samples (seeded by the rollout's index: a resumed run samples what the whole run did)
        seed = self.rollout_seed * 1_000_003 + self._rollout_index * 1009 + self.accelerator.process_index * 7919  # each process its own draws
        generator = torch.Generator(device=device).manual_seed(seed)
        was_training = policy.training
        policy.eval()
        done = self._sample_responses(policy, prompt_ids, generator)
        policy.train(was_training)
        responses = [response_tokens(c) for c in done]
        texts = [c.text for c in done]

        # 2. the rewards score each response
        per_function = score(self.rewards, prompts, texts, columns)
        totals = weighted(self.rewards, per_function)
        scores = torch.tensor([0.0 if t is None else t for t in totals], dtype=torch.float32, device=device)
        stopped = torch.tensor([c.stop_token is not None for c in done], device=device)
        if a.missing_eos_penalty is not None:
            scores = scores - a.missing_eos_penalty * (~stopped).float()

        # 3. old log-probs, reference log-probs and values, in micro-batches
        batch = pad_rollouts(prompt_ids, responses, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id, device)
        mask = batch["response_mask"]
        old_logprobs, ref_logprobs, values, entropy = self._score_tokens(batch)

        # 4. the KL penalty folded into per-token rewards; 5. GAE, whitened advantages, returns
        rewards, kl = kl_penalty_rewards(old_logprobs, ref_logprobs, scores, mask, self.kl.value)
        if a.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        estimate = gae(rewards, values, a.gamma, a.lam, mask)
        advantages = whiten(estimate.advantages, mask)

        kl_per_response = kl.sum(dim=1)
        everywhere = lambda t: self.accelerator.reduce(t.float().mean(), "mean").item()  # noqa: E731  (the mean over every process's batch)
        batch_kl = everywhere(kl_per_response)
        self._record_metrics(
            {
                "reward": everywhere(scores),
                "reward_with_kl": everywhere(scores - self.kl.value * kl_per_response),
                "kl": batch_kl,
                "kl_coef": self.kl.value,
                "entropy": masked_mean(entropy, mask).item(),
                "response_length": mask.sum(dim=1).float().mean().item(),
                "stopped": stopped.float().mean().item(),
                "explained_variance": explained_variance(values, estimate.returns, mask),
                "value": masked_mean(values, mask).item(),
                **{f"rewards/{name}/mean": mean(v) for name, v in per_function.items()},
            }
        )
        if self.accelerator.is_main_process:
            self._record(prompts, texts, scores, kl_per_response, values, estimate, mask)
        self.kl.update(batch_kl, len(prompts) * self.accelerator.num_processes)  # one kl_coef on every process
        self._rollout_index += 1
        return Rollouts(
            **batch, old_logprobs=old_logprobs, old_values=values, advantages=advantages, returns=estimate.returns, order=self._minibatch_order(len(prompts))
        )

    def _score_tokens(self, batch: dict):
        """(old log-probs, reference log-probs, values, entropy), each (R, L), through the forward the loss uses."""
        from trl.trainer.utils import entropy_from_logits

        model = self.accelerator.unwrap_model(self.model)
        width = batch["response_mask"].shape[1]
        tokens = batch["input_ids"][:, -width:]
        out = {k: [] for k in ("old", "ref", "values", "entropy")}
        size = self.args.per_device_train_batch_size
        for start in range(0, len(tokens), size):
            rows = slice(start, start + size)
            inputs = dict(input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows], position_ids=batch["position_ids"][rows])
            with self.accelerator.autocast():
                logits, values = model(**inputs, response_width=width)
                sampling = tempered(logits, self.args.temperature)
                out["old"].append(token_logprobs(sampling, tokens[rows]))
                out["entropy"].append(entropy_from_logits(sampling))
                out["values"].append(values)
                if self.kl.value == 0 and not self.kl.target:  # no KL penalty, no reference (none was built)
                    out["ref"].append(out["old"][-1])
                else:
                    out["ref"].append(token_logprobs(tempered(self._reference_logits(inputs, width), self.args.temperature), tokens[rows]))
        mask = batch["response_mask"]
        return tuple(torch.cat(out[k]) * mask for k in ("old", "ref", "values", "entropy"))

    def _reference_logits(self, inputs: dict, width: int) -> torch.Tensor:
        """The starting policy's logits: the frozen copy (full fine-tuning), or the actor with its adapter disabled."""
        if self.ref_model is not None:
            return self.ref_model(**inputs, logits_to_keep=width + 1, use_cache=False).logits[:, :-1]
        policy = self.accelerator.unwrap_model(self.model).policy
        with policy.disable_adapter():
            return policy(**inputs, logits_to_keep=width + 1, use_cache=False).logits[:, :-1]

    def _minibatch_order(self, n: int) -> list[torch.Tensor]:
        """Row indices of every micro-batch: each PPO epoch a fresh permutation of the rollouts, cut into micro-batches."""
        generator = torch.Generator().manual_seed(self.rollout_seed * 7919 + self._rollout_index)
        size = self.args.per_device_train_batch_size
        order = []
        for _ in range(self.args.ppo_epochs):
            perm = torch.randperm(n, generator=generator)
            order += [perm[i : i + size] for i in range(0, n, size)]
        return order

    # ------------------------------------------------------------ the loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        a = self.args
        mask = inputs["response_mask"]
        width = mask.shape[1]
        with self.accelerator.autocast():
            logits, values = model(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], position_ids=inputs["position_ids"], response_width=width
            )
        logprobs = token_logprobs(tempered(logits, a.temperature), inputs["input_ids"][:, -width:])
        pg_loss, pg_stats = policy_loss(logprobs, inputs["old_logprobs"], inputs["advantages"], mask, a.cliprange)
        vf_loss, vf_stats = value_loss(values, inputs["old_values"], inputs["returns"], mask, a.cliprange_value)
        loss = pg_loss + a.vf_coef * vf_loss
        self._record_metrics({"policy_loss": pg_loss.item(), "value_loss": vf_loss.item(), **{k: v.item() for k, v in {**pg_stats, **vf_stats}.items()}})
        return (loss, {"logits": logits}) if return_outputs else loss

    # ------------------------------------------------------------ what is logged and recorded

    def _record_metrics(self, values: dict) -> None:
        for key, value in values.items():
            if value is not None and value == value:
                self._metrics.setdefault(key, []).append(float(value))

    def log(self, logs: dict, start_time: float | None = None) -> None:
        """Add the means of the PPO metrics since the last log (TimedGeneration adds the share of time spent sampling)."""
        if "loss" in logs:
            logs.update({key: sum(v) / len(v) for key, v in self._metrics.items() if v})
            self._metrics = {}
        super().log(logs, start_time)

    def _record(self, prompts, texts, scores, kl, values, estimate, mask) -> None:
        """Append this rollout batch to <run>/rollouts.jsonl: per response its score, KL, first value and mean advantage."""
        from tunesmith.rewards.trl_bridge import prompt_text
        from tunesmith.train.rollout import ROLLOUTS_FILE

        lengths = mask.sum(dim=1).long().tolist()
        samples = [
            {
                "prompt": prompt_text(prompts[i]),
                "completion": texts[i],
                "tokens": lengths[i],
                "score": round(float(scores[i]), 4),
                "kl": round(float(kl[i]), 4),
                "reward_with_kl": round(float(scores[i] - self.kl.value * kl[i]), 4),
                "value_first": round(float(values[i, 0]), 4),
                "advantage_first": round(float(estimate.advantages[i, 0]), 4),
                "return_first": round(float(estimate.returns[i, 0]), 4),
            }
            for i in range(len(prompts))
        ]
        record = {"step": self.state.global_step + 1, "rollout": self._rollout_index, "kl_coef": self.kl.value, "samples": samples}
        with open(Path(self.args.output_dir) / ROLLOUTS_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.args.sample_every and self._rollout_index % self.args.sample_every == 0:
            best = max(range(len(samples)), key=lambda i: samples[i]["score"])
            s = samples[best]
            print(
                f"  sample (rollout {self._rollout_index}, best of {len(samples)}): {s['prompt'][:60]!r} -> {s['completion'][:100]!r}  score {s['score']:+.3f}, KL {s['kl']:.3f}",
                flush=True,
            )

    # ------------------------------------------------------------ checkpoints: both models and the rollout state

    def _save_checkpoint(self, model, trial) -> None:
        """Each process's PPO state first (its own rollout batch under several processes), then the Trainer's checkpoint,
        whose trainer_state.json, written last, marks it complete."""
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self._state(), folder / PPO_STATE.format(rank=self.accelerator.process_index))
        super()._save_checkpoint(model, trial)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        output_dir = Path(output_dir or self.args.output_dir)
        if not self.args.should_save:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model)
        model.policy.save_pretrained(output_dir)
        model.critic.save_pretrained(output_dir / CRITIC_DIR)
        self.processing_class.save_pretrained(output_dir)

    def _state(self) -> dict:
        """What a resumed run needs beyond weights and optimizer: kl_coef, the rollout count, the batch being trained on."""
        rollouts = self._rollouts
        mid_batch = self._micro % self.micro_per_rollout != 0
        return {
            "kl_coef": self.kl.value,
            "rollout_index": self._rollout_index,
            "micro": self._micro,
            "rollouts": {**{k: getattr(rollouts, k) for k in Rollouts.TENSORS}, "order": rollouts.order} if rollouts is not None and mid_batch else None,
        }

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        checkpoint = Path(resume_from_checkpoint)
        module = self.accelerator.unwrap_model(self.model)
        load_weights(module.policy, checkpoint)
        load_weights(module.critic, checkpoint / CRITIC_DIR)
        state = torch.load(checkpoint / PPO_STATE.format(rank=self.accelerator.process_index), weights_only=False)
        self.kl.value = state["kl_coef"]
        self._rollout_index = state["rollout_index"]
        self._micro = state["micro"]
        if state["rollouts"] is not None:
            self._rollouts = Rollouts(**state["rollouts"])


def load_weights(model, folder: Path) -> None:
    """Weights saved by `save_pretrained` back into `model`: a LoRA adapter (and head) or a full model."""
    from peft import PeftModel, set_peft_model_state_dict
    from safetensors.torch import load_file

    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
        return
    from transformers.modeling_utils import load_sharded_checkpoint

    if (folder / "model.safetensors").is_file():
        model.load_state_dict(load_file(folder / "model.safetensors"), strict=False)  # tied weights are saved once
    else:
        load_sharded_checkpoint(model, folder, strict=False)


def pad_rollouts(prompt_ids: list[list[int]], responses: list[list[int]], pad_id: int, device) -> dict:
    """Prompts left-padded, responses right-padded: every response starts at the same column, so one slice reads them."""
    width_p = max(len(p) for p in prompt_ids)
    width_r = max(1, max(len(r) for r in responses))
    rows, masks, response_masks = [], [], []
    for p, r in zip(prompt_ids, responses):
        rows.append([pad_id] * (width_p - len(p)) + p + r + [pad_id] * (width_r - len(r)))
        masks.append([0] * (width_p - len(p)) + [1] * (len(p) + len(r)) + [0] * (width_r - len(r)))
        response_masks.append([1] * len(r) + [0] * (width_r - len(r)))
    attention = torch.tensor(masks, device=device)
    return {
        "input_ids": torch.tensor(rows, device=device),
        "attention_mask": attention,
        "position_ids": (attention.cumsum(dim=1) - 1).clamp(min=0),
        "response_mask": torch.tensor(response_masks, device=device, dtype=torch.float32),
    }
