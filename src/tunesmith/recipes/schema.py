"""The recipe: one pydantic model per section, every default in this file.

Training field names are Hugging Face `TrainingArguments` names, so what users know
carries over; every field has a description, which `--help` and the docs reuse.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tunesmith.models.builtin import DEFAULT_MODEL

DEMO_PROMPTS = [
    "What is the capital of France?",
    "How many legs does a spider have?",
    "Give me a tip for staying healthy.",
]


STAGES = ("pretrain", "sft", "reward", "dpo", "kto", "orpo", "cpo", "grpo", "rloo", "ppo")

# Measured on the pirate demo (SmolLM2-135M, 48 steps): LoRA at 2e-4 barely moved the style
# (loss 3.5 -> 2.6); 1e-3 learned it (-> 1.7) and kept the facts. Preference stages push on a
# log-ratio against the reference and are run at lower rates (TRL: 1e-6 full; LoRA needs more).
# DPO on the pirate SFT run, 48 steps of 16 pairs: LoRA at 2e-4 over-optimised (train loss 0.15,
# log p of the chosen answers fell 21 nats, replies turned into "matey, matey, matey", and bare
# "Paris" fell below "Florida"); 5e-5 raised eval preference accuracy 65% -> 85% with the chosen
# answers' log p nearly unchanged (-55.5 -> -56.1) and Paris still preferred.
DEFAULT_LEARNING_RATE = {
    "pretrain": {"lora": 1e-3, "qlora": 1e-3, "full": 2e-5},
    "sft": {"lora": 1e-3, "qlora": 1e-3, "full": 2e-5},
    "reward": {"lora": 5e-4, "qlora": 5e-4, "full": 1e-5},
    "dpo": {"lora": 5e-5, "qlora": 5e-5, "full": 1e-6},
    "kto": {"lora": 5e-5, "qlora": 5e-5, "full": 1e-6},
    "orpo": {"lora": 5e-4, "qlora": 5e-4, "full": 8e-6},
    "cpo": {"lora": 5e-5, "qlora": 5e-5, "full": 1e-6},
    "grpo": {"lora": 5e-4, "qlora": 5e-4, "full": 1e-6},
    "rloo": {"lora": 5e-4, "qlora": 5e-4, "full": 1e-6},
    "ppo": {"lora": 3e-4, "qlora": 3e-4, "full": 1e-6},
}


def section_model(annotation):
    """The section class of a field annotation (`DPOSection | None` -> DPOSection), else None."""
    import typing

    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    name: str = Field(DEFAULT_MODEL, description="Built-in model name, local model/adapter/run directory, .gguf file, or Hub id.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="auto: bf16 where the hardware has fast bf16 (CUDA cc>=8, CPU with avx512_bf16/AMX), fp16 on older GPUs, else fp32."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None,
        description="Attention kernel; default: flash_attention_2 on a GPU with flash-attn installed, eager on a CPU for sequences up to 256 tokens, else sdpa.",
    )


class LoraSection(Section):
    r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int | None = Field(None, ge=1, description="LoRA scaling numerator; default 2*r.")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="Module names to adapt (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj) or 'all-linear'; on a model that fuses them (Phi-3) q/k/v select qkv_proj and gate/up select gate_up_proj.",
    )
    layers: Literal["all", "low", "mid", "high"] | list[int] = Field("all", description="Which decoder layers: all, low/mid/high third, or a list of indices.")
    preset: Literal["limited-data", "limited-hardware", "precise-tone"] | None = Field(
        None, description="Named module/layer selection from practice; overrides target_modules and layers."
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    train_embeddings: bool = Field(
        False,
        description="Also train the input embeddings and the LM head in full beside the adapter (peft modules_to_save; kept tied where the model ties them): for new vocabulary or a new domain's words. Costs their size in trainable parameters.",
    )

    @property
    def alpha(self) -> int:
        return self.lora_alpha or 2 * self.r


class DataSection(Section):
    dataset: str = Field("pirate", description="Built-in name (pirate), local file/directory (jsonl, json, csv, parquet) or datasets Hub name.")
    eval_dataset: str | None = Field(
        None, description="Evaluation data; default: the built-in's eval split (pirate -> pirate-eval), else none; 'none' turns it off."
    )
    format: str = Field("auto", description="auto, text, prompt_completion, messages, alpaca or sharegpt.")
    max_length: int = Field(512, ge=8, description="Longest example in tokens (after the chat template).")
    truncation: Literal["truncate", "drop"] = Field("truncate", description="What to do with longer examples.")
    train_on_prompt: bool = Field(False, description="Also train on prompt/user tokens (default: completion/assistant only).")
    packing: bool = Field(False, description="Pack several examples into each max_length sequence (TRL best-fit-decreasing).")


class TrainingSection(Section):
    per_device_train_batch_size: int = Field(8, ge=1, description="Examples per device per micro-batch.")
    gradient_accumulation_steps: int = Field(2, ge=1, description="Micro-batches per optimizer step.")
    num_train_epochs: float = Field(3.0, gt=0, description="Passes over the data (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Total optimizer steps; wins over num_train_epochs when > 0.")
    learning_rate: float | None = Field(
        None, gt=0, description="Peak learning rate; default 1e-3 for LoRA/QLoRA (small adapters on small models), 2e-5 for full fine-tuning."
    )
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial", "inverse_sqrt"] = Field(
        "cosine", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of total steps spent warming up (rounded up to whole steps).")
    warmup_steps: int = Field(0, ge=0, description="Warmup steps; wins over warmup_ratio when > 0.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0: off).")
    optim: str = Field("adamw_torch", description="Optimizer name as in TrainingArguments.")
    logging_strategy: Literal["steps", "epoch", "no"] = Field("steps", description="When to log metrics.")
    logging_steps: int = Field(5, ge=1, description="Log every N optimizer steps.")
    logging_first_step: bool = Field(False, description="Also log the first step.")
    save_strategy: Literal["steps", "epoch", "no"] = Field("epoch", description="When to write a checkpoint.")
    save_steps: int = Field(500, ge=1, description="Checkpoint every N steps (save_strategy=steps).")
    save_total_limit: int | None = Field(2, ge=1, description="Keep only the newest N checkpoints (None: all).")
    eval_strategy: Literal["steps", "epoch", "no"] = Field("no", description="When to compute eval loss.")
    eval_steps: int | None = Field(None, ge=1, description="Evaluate every N steps (eval_strategy=steps).")
    gradient_checkpointing: bool | None = Field(
        None,
        description="Recompute activations in backward to save memory: true for every layer, false for none. Unset: none where the base is stored in bf16 (it costs ~30% of an SFT step); for an fp32 run on a CPU none for sft and dpo (AVX2 benches: under plain TRL's peak memory without it, since SFT trains padding-free and gated MLPs keep half their tensors) and one layer in 3 for the other stages (~15% less peak memory for ~15% of the step); for grpo and rloo one layer in 3 on a bf16 CPU (bench grpo: close to the speed of none, under plain TRL's peak memory), every layer elsewhere; on for ppo (111 vs 118 s and 3.6 vs 4.7 GB peak for 8 steps of the pirate demo, avx512_bf16 CPU).",
    )
    use_liger_kernel: bool | None = Field(
        None, description="Liger's Triton kernels (RMSNorm, RoPE, SwiGLU); default: on with a CUDA GPU and liger-kernel installed."
    )
    seed: int = Field(42, description="Seed for weights init, data order and dropout.")
    report_to: list[str] = Field([], description="Extra metric sinks: tensorboard, wandb, mlflow (metrics.jsonl is always written).")
    dataloader_num_workers: int = Field(0, ge=0, description="Data loader worker processes.")

    @field_validator("report_to", mode="before")
    @classmethod
    def _listify(cls, value):
        return [value] if isinstance(value, str) else value


class DistributedSection(Section):
    """How the processes of `accelerate launch` / `tunesmith launch` share the work (ignored in a single process).
    Strategy names are accelerate's; each maps to transformers' TrainingArguments (fsdp, fsdp_config, deepspeed)."""

    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp",
        description="ddp: every process holds the whole model, gradients are averaged; fsdp: weights, gradients and optimizer state sharded across processes (PyTorch FSDP2); deepspeed: ZeRO stage zero_stage (CUDA, needs the deepspeed package).",
    )
    zero_stage: Literal[2, 3] = Field(2, description="DeepSpeed ZeRO stage: 2 shards gradients and optimizer state, 3 the weights too.")
    offload: bool = Field(False, description="Keep optimizer state (and with ZeRO-3 / FSDP the weights) in CPU memory: slower steps, much less GPU memory.")
    fsdp_sharding: Literal["full_shard", "shard_grad_op"] = Field(
        "full_shard",
        description="FSDP: full_shard (weights, gradients and optimizer state; the weights are gathered for each layer's forward and backward), shard_grad_op (the weights stay whole after the forward: more memory, less communication).",
    )
    fsdp_wrap: Literal["transformer_layer", "size"] = Field(
        "transformer_layer", description="FSDP: wrap each decoder layer (the model's own layer class), or by parameter count."
    )


class SampleSection(Section):
    prompts: list[str] = Field(DEMO_PROMPTS, description="Prompts answered before and after training, side by side.")
    max_new_tokens: int = Field(48, ge=1, description="Tokens generated per answer.")
    temperature: float = Field(0.0, ge=0, description="0: greedy.")
    diagnostics: bool = Field(True, description="After training, run the cheap eval diagnostics (leakage, repetition, memorization) on the eval split.")


# Stage sections: field names are TRL's config names (DPOConfig, KTOConfig, ORPOConfig, RewardConfig),
# passed through unchanged, so TRL's documentation applies.


class RewardSection(Section):
    center_rewards_coefficient: float | None = Field(
        None, ge=0, description="Pull rewards towards 0 (adds coef * mean(r^2) to the loss; Eisenstein et al. use 0.01). None: off."
    )
    disable_dropout: bool = Field(True, description="Turn dropout off in the model (stable pairwise scores).")


class DPOSection(Section):
    beta: float = Field(0.1, gt=0, description="KL strength: higher keeps the policy closer to the reference. For loss_type ipo it is IPO's tau.")
    loss_type: list[str] = Field(
        ["sigmoid"],
        description="DPO loss(es), TRL's names: sigmoid (DPO), ipo, hinge, robust, ... (`tunesmith recipe --stage dpo` lists all TRL offers); several are summed with loss_weights.",
    )
    loss_weights: list[float] | None = Field(None, description="One weight per loss_type (default 1.0 each).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Robust DPO: probability that a preference label is flipped (0.1 typical); EXO's epsilon.")
    precompute_ref_log_probs: bool | None = Field(
        None,
        description="Score the data with the reference once before training, then train without the reference forward. Unset: on when training makes 2+ passes over the data (one reference forward per pair instead of one per epoch).",
    )
    ld_alpha: float | None = Field(None, ge=0, le=1, description="LD-DPO: weight on the tokens past the shorter answer's length (None: plain DPO).")
    use_weighting: bool = Field(False, description="WPO weighting of pairs by the policy's length-normalised probability.")
    disable_dropout: bool = Field(True, description="Turn dropout off in policy and reference, so their log-ratios are comparable.")

    @field_validator("loss_type", mode="before")
    @classmethod
    def _listify(cls, value):
        return [value] if isinstance(value, str) else value


class KTOSection(Section):
    beta: float = Field(0.1, gt=0, description="KL strength against the reference.")
    desirable_weight: float = Field(1.0, gt=0, description="Weight of desirable (label true) examples; raise it when they are fewer.")
    undesirable_weight: float = Field(1.0, gt=0, description="Weight of undesirable (label false) examples.")
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field("kto", description="kto, or apo_zero_unpaired (anchored preference optimisation).")
    precompute_ref_log_probs: bool | None = Field(
        None, description="Score the data with the reference once before training. Unset: on when training makes 2+ passes over the data."
    )
    disable_dropout: bool = Field(True, description="Turn dropout off in policy and reference.")


class ORPOSection(Section):
    beta: float = Field(0.1, gt=0, description="ORPO's lambda: weight of the odds-ratio term next to the SFT loss on the chosen answer.")
    disable_dropout: bool = Field(True, description="Turn dropout off in the model.")


class PretrainSection(Section):
    text_field: str = Field(
        "text", description="The field (.jsonl) or column (.parquet) that holds each document's text; .txt/.md files are one document each."
    )
    eval_blocks: int = Field(
        32, ge=0, description="Blocks held out for perplexity before and after training, spread evenly through the corpus (at most a tenth of it; 0: none)."
    )


# The built-in dataset each stage trains on when the recipe names none.
STAGE_DATASETS = {
    "pretrain": "tunesmith-docs",
    "sft": "pirate",
    "reward": "pirate-pairs",
    "dpo": "pirate-pairs",
    "kto": "pirate-kto",
    "orpo": "pirate-pairs",
    "cpo": "pirate-pairs",
    "grpo": "arithmetic",
    "rloo": "arithmetic",
    "ppo": "arithmetic",
}


class CPOSection(Section):
    beta: float = Field(0.1, gt=0, description="Temperature of the preference loss (SimPO uses ~2.0).")
    loss_type: Literal["sigmoid", "hinge", "ipo", "simpo", "alphapo"] = Field(
        "sigmoid", description="sigmoid (CPO), hinge, ipo, simpo (SimPO: length-normalised, reference-free), alphapo."
    )
    cpo_alpha: float = Field(1.0, ge=0, description="Weight of the NLL (behaviour-cloning) term on the chosen answer; 0 with simpo gives pure SimPO.")
    simpo_gamma: float = Field(0.5, ge=0, description="SimPO's target reward margin (loss_type simpo only).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="Probability that a preference label is flipped (robust loss).")
    disable_dropout: bool = Field(True, description="Turn dropout off in the model.")


class RewardEntry(Section):
    """One reward function of an RL stage: a built-in, your own function, or a reward model; weighted."""

    function: str | None = Field(
        None,
        description="Built-in reward (exact_answer, numeric_answer, format, length_penalty, no_template_leakage), or your own: module.path:function or path/to/file.py:function (your code, imported and run in this process with your rights: not sandboxed).",
    )
    reward_model: str | None = Field(None, description="A reward model trained with `tunesmith reward` (its run directory), scoring prompt and reply.")
    weight: float = Field(1.0, description="Weight of this reward in the sum the advantages are computed from.")
    options: dict[str, Any] = Field({}, description="Keyword arguments for the function (e.g. format: {pattern: '-?\\d+'}, length_penalty: {max_chars: 100}).")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value):
        return {"function": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_source(self):
        if (self.function is None) == (self.reward_model is None):
            raise ValueError("a reward names either function: (a built-in or module:function) or reward_model: (a run directory), not both or neither")
        return self


# GRPO on `arithmetic` (LoRA at 5e-4, temperature 0.8, 48 tokens, 50 steps of 2 prompts x 8 completions, ~8 min on
# the avx512_bf16 CPU): held-out answers correct 58% -> 88%, mean reward +0.55 -> +0.88, KL to the start ~0.3.
# RL on a CPU is counted in steps: with no max_steps or epochs in the recipe, an RL stage runs RL_DEFAULT_STEPS.
# PPO checkpoints activations by default (two trained models); GRPO and RLOO one decoder layer in 3 on a bf16 CPU and
# every layer elsewhere (train/speed.py: checkpoint_every, with bench grpo's figures). The runs' rewards are identical.
RL_DEFAULT_STEPS = 50
RL_STAGES = ("grpo", "rloo", "ppo")
# PPO's step is one minibatch update; each rollout batch of 16 prompts gives ppo_epochs (4) of them. On the
# avx512_bf16 CPU a step takes ~16 s (two models trained, plus a quarter of the batch's sampling and scoring), so
# the default is 32 steps: 8 rollout batches, ~8.5 min for the pirate demo (held-out reward -1.95 -> -0.03).
PPO_DEFAULT_STEPS = 32
# Text for `pretrain` to continue before and after training (no chat template): openings the built-in corpus, this
# project's docs, has words for.
PRETRAIN_PROMPTS = ["To fine-tune a model with tunesmith,", "A LoRA adapter", "The learning rate"]
ARITHMETIC_PROMPTS = ["Solve 2+2. Reply with the number only.", "What is 7 + 5? Answer with just the number.", "Solve 9-3. Reply with the number only."]

# The arithmetic demo: the last number of the reply must be the answer ("7 + 5 = 12" counts), and replies
# that ramble past 40 characters lose up to 1 (the 135M model explains a sum for 100+ characters, and
# truncated rambling hides the answer). Measured: see the README's GRPO section.
ARITHMETIC_REWARDS = [RewardEntry(function="numeric_answer"), RewardEntry(function="length_penalty", weight=0.5, options={"max_chars": 40})]


class SamplingRLSection(Section):
    """What every online-RL stage shares (GRPO, RLOO, PPO): sampling responses and scoring them (TRL's names)."""

    max_completion_length: int = Field(
        48, ge=1, description="Longest completion in tokens: generation time grows with it (TRL's default 512 is minutes per step on a CPU)."
    )
    temperature: float = Field(
        0.8,
        gt=0,
        description="Sampling temperature of the rollouts; 0.8, not TRL's 1.0: a 135M model at 1.0 samples many off-topic replies, which carry no signal.",
    )
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling of the rollouts (1 = off).")
    top_k: int = Field(0, ge=0, description="Top-k sampling of the rollouts (0 = off).")
    min_p: float | None = Field(None, ge=0, le=1, description="Min-p sampling of the rollouts (None = off).")
    repetition_penalty: float = Field(1.0, gt=0, description="Repetition penalty of the rollouts (1 = off).")
    rewards: list[RewardEntry] = Field(
        ARITHMETIC_REWARDS,
        description="Reward functions, summed with their weights; each is logged separately. Default: the arithmetic demo's (numeric_answer + 0.5 * length_penalty). On the command line: names with optional weights, --rewards numeric_answer,0.5*length_penalty.",
    )
    disable_dropout: bool = Field(True, description="Turn dropout off, so the policy that sampled and the one trained agree.")

    reward_model: str | None = Field(
        None,
        description="Shortcut: a reward model run (`tunesmith reward`) used as a reward of weight 1; alone it replaces the default rewards, beside `rewards` it is added to them.",
    )

    @field_validator("rewards", mode="before")
    @classmethod
    def _from_text(cls, value):
        """`--rewards numeric_answer,0.5*length_penalty`: names, each with an optional weight."""
        if isinstance(value, str):
            entries = []
            for part in filter(None, (p.strip() for p in value.split(","))):
                weight, _, name = part.rpartition("*")
                entries.append({"function": name.strip(), "weight": float(weight) if weight else 1.0})
            return entries
        return value

    @field_validator("rewards")
    @classmethod
    def _some(cls, value):
        if not value:
            raise ValueError("rewards is empty; name at least one reward function (e.g. numeric_answer) or reward_model")
        return value

    @model_validator(mode="after")
    def _fold_reward_model(self):
        if self.reward_model:
            entry = RewardEntry(reward_model=self.reward_model)
            rewards = [*self.rewards, entry] if "rewards" in self.model_fields_set else [entry]
            object.__setattr__(self, "rewards", rewards)
            object.__setattr__(self, "reward_model", None)
            self.model_fields_set.add("rewards")
        return self


class RolloutSection(SamplingRLSection):
    """What GRPO and RLOO share: groups of completions per prompt, each judged against its group."""

    num_generations: int = Field(
        8,
        ge=2,
        description="Group size: completions sampled per prompt; each is judged against its group. per_device_train_batch_size * gradient_accumulation_steps must be a multiple of it.",
    )
    epsilon: float = Field(0.2, ge=0, description="Clip range: the probability ratio to the sampling policy is held to [1 - epsilon, 1 + epsilon].")
    num_iterations: int = Field(1, ge=1, description="Optimisation passes over each batch of rollouts (mu in the GRPO paper); above 1 the clip matters.")
    mask_truncated_completions: bool = Field(False, description="Leave completions cut at max_completion_length out of the loss.")


class GRPOSection(RolloutSection):
    # TRL's default beta is 0 (no reference, no KL term). We keep the textbook's KL penalty (DeepSeekMath: 0.04):
    # on a few hundred prompts it stops the policy drifting into reward hacks, and with LoRA the reference is
    # free (the adapter disabled, no second model); it costs one no-grad forward per step.
    beta: float = Field(
        0.04,
        ge=0,
        description="KL coefficient against the reference (the starting model). 0.04 as in DeepSeekMath, not TRL's 0: it keeps the policy near the start on small data; with LoRA the reference costs no memory (adapter disabled), one forward per step. 0 drops the reference.",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="Advantage = (reward - group mean) / std: group (the std of each group, TRL's default), batch (one std over the batch), none (reward - group mean, Dr. GRPO).",
    )
    loss_type: str = Field(
        "dapo",
        description="TRL's GRPO loss normalisation: grpo (per sequence), bnpo, dr_grpo, dapo (TRL's default: per token over the batch), ...; `tunesmith recipe --stage grpo` lists them.",
    )


class RLOOSection(RolloutSection):
    num_generations: int = Field(
        4,
        ge=2,
        description="Group size: completions per prompt; each one's baseline is the mean reward of the others. per_device_train_batch_size * gradient_accumulation_steps must be a multiple of it.",
    )
    beta: float = Field(
        0.05,
        ge=0,
        description="KL coefficient against the reference (TRL's RLOO default; folded into the reward). With LoRA the reference is the adapter disabled.",
    )
    normalize_advantages: bool = Field(False, description="Divide the advantages by their std over the batch.")


class PPOSection(SamplingRLSection):
    """PPO (train/ppo.py): one response per prompt, a critic's values as the baseline, a per-token KL penalty.
    Defaults are TRL's last PPO trainer's (PPOConfig, trl 0.2x) unless a description says otherwise."""

    ppo_epochs: int = Field(4, ge=1, description="Passes over each rollout batch; each pass is num_mini_batches optimizer steps.")
    num_mini_batches: int = Field(
        1,
        ge=1,
        description="Minibatches (optimizer steps) per pass; a rollout batch is per_device_train_batch_size x gradient_accumulation_steps x num_mini_batches prompts.",
    )
    cliprange: float = Field(0.2, gt=0, lt=1, description="Clip range of the actor's probability ratio: held to [1 - cliprange, 1 + cliprange] (0.8..1.2).")
    cliprange_value: float = Field(0.2, gt=0, description="Clip range of the critic: its value may move this far from the value at sampling time.")
    vf_coef: float = Field(0.1, ge=0, description="Weight of the critic's value loss beside the actor's loss (one optimizer trains both).")
    kl_coef: float = Field(
        0.05,
        ge=0,
        description="Per-token KL penalty against the reference (the starting model), folded into the rewards; the starting value when target_kl is set. 0: no reference.",
    )
    target_kl: float | None = Field(
        None,
        gt=0,
        description="Adapt kl_coef so the KL per response approaches this (Ziegler et al. 2019: +-20% per kl_horizon responses); None: kl_coef stays fixed.",
    )
    kl_horizon: int = Field(10000, ge=1, description="Responses over which the adaptive kl_coef moves by at most 20%.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount of future rewards in GAE (1: the score at the end counts fully at every token).")
    lam: float = Field(0.95, ge=0, le=1, description="GAE's lambda: 0 trusts the critic's next value (one-step TD), 1 the sampled return (Monte Carlo).")
    whiten_rewards: bool = Field(False, description="Normalise the per-token rewards over the batch (keeping their mean) before GAE.")
    missing_eos_penalty: float | None = Field(
        None, ge=0, description="Subtract this from the score of responses cut off at max_completion_length (None: no penalty)."
    )
    sample_every: int = Field(
        5, ge=0, description="Print the best-scored response of every N-th rollout batch (0: never); every batch is recorded in <run>/rollouts.jsonl."
    )


STAGE_SECTIONS = {
    "pretrain": PretrainSection,
    "reward": RewardSection,
    "dpo": DPOSection,
    "kto": KTOSection,
    "orpo": ORPOSection,
    "cpo": CPOSection,
    "grpo": GRPOSection,
    "rloo": RLOOSection,
    "ppo": PPOSection,
}


class Recipe(Section):
    stage: Literal["pretrain", "sft", "reward", "dpo", "kto", "orpo", "cpo", "grpo", "rloo", "ppo"] = Field(
        "sft",
        description="Training stage: pretrain (continued pre-training on raw text), sft, reward (reward model), dpo, kto, orpo, cpo (CPO/SimPO), grpo or rloo (RL with reward functions), ppo (actor, critic, reward, reference); its own section holds its settings.",
    )
    method: Literal["full", "lora", "qlora"] = Field("lora", description="full fine-tuning, LoRA, or QLoRA (4-bit base, CUDA only).")
    model: ModelSection = ModelSection()
    lora: LoraSection = LoraSection()
    data: DataSection = DataSection()
    training: TrainingSection = TrainingSection()
    sample: SampleSection = SampleSection()
    distributed: DistributedSection = DistributedSection()
    output_dir: str | None = Field(None, description="Run directory; default runs/<method>-<timestamp>.")
    merge: bool = Field(False, description="Also write a merged full model (LoRA) to <run>/merged.")
    pretrain: PretrainSection | None = Field(None, description="Settings of stage pretrain: the corpus's text field, held-out blocks.")
    reward: RewardSection | None = Field(None, description="Settings of stage reward (TRL RewardConfig names).")
    dpo: DPOSection | None = Field(None, description="Settings of stage dpo (TRL DPOConfig names).")
    kto: KTOSection | None = Field(None, description="Settings of stage kto (TRL KTOConfig names).")
    orpo: ORPOSection | None = Field(None, description="Settings of stage orpo (TRL ORPOConfig names).")
    cpo: CPOSection | None = Field(None, description="Settings of stage cpo: CPO and SimPO (TRL CPOConfig names).")
    grpo: GRPOSection | None = Field(None, description="Settings of stage grpo: rollouts, rewards, KL (TRL GRPOConfig names).")
    rloo: RLOOSection | None = Field(None, description="Settings of stage rloo: rollouts, rewards, KL (TRL RLOOConfig names).")
    ppo: PPOSection | None = Field(None, description="Settings of stage ppo: rollouts, rewards, critic, KL penalty, GAE, clipping (TRL's PPOConfig names).")

    @field_validator(*STAGE_SECTIONS)
    @classmethod
    def _section_of_this_stage(cls, value, info: ValidationInfo):
        """A field-level error, so the message points at the section's line in the recipe file."""
        stage = info.data.get("stage")
        if value is not None and stage is not None and info.field_name != stage:
            raise ValueError(f"the recipe has a '{info.field_name}:' section, but its stage is {stage}; set stage: {info.field_name}, or remove the section")
        return value

    @model_validator(mode="after")
    def _check(self):
        if getattr(self, self.stage, False) is None:
            object.__setattr__(self, self.stage, STAGE_SECTIONS[self.stage]())
        if "dataset" not in self.data.model_fields_set:
            self.data.dataset = STAGE_DATASETS[self.stage]
        t = self.training
        if self.stage == "pretrain" and not {"max_steps", "num_train_epochs"} & t.model_fields_set:
            t.num_train_epochs = 1.0  # continued pre-training makes one pass over the corpus unless told otherwise
        if self.stage == "pretrain" and not {"per_device_train_batch_size", "gradient_accumulation_steps"} & t.model_fields_set:
            # blocks of 512 are ~7x the pirate chats: 2 x 8 keeps the step's 16 blocks and ~2.5 GB of activations
            # (4 x 4: 4.75 GB peak at the same ~225 tokens/s, avx512_bf16 CPU)
            t.per_device_train_batch_size, t.gradient_accumulation_steps = 2, 8
        if self.stage == "pretrain" and "prompts" not in self.sample.model_fields_set:
            self.sample.prompts = PRETRAIN_PROMPTS
        if self.stage in RL_STAGES and not {"max_steps", "num_train_epochs"} & t.model_fields_set:
            t.max_steps = PPO_DEFAULT_STEPS if self.stage == "ppo" else RL_DEFAULT_STEPS
        if self.stage == "ppo":
            per_batch = self.ppo.ppo_epochs * self.ppo.num_mini_batches  # optimizer steps per rollout batch
            if "logging_steps" not in t.model_fields_set:
                t.logging_steps = per_batch  # one line per rollout batch
            if not {"save_strategy", "save_steps"} & t.model_fields_set:  # an epoch is longer than a PPO run: keep every 2nd batch
                t.save_strategy, t.save_steps = "steps", 2 * per_batch
        if self.stage == "ppo" and t.gradient_checkpointing is None:
            t.gradient_checkpointing = True  # measured: ~20% of the step for ~25% less peak memory (see above); grpo/rloo: train/speed.py
        if self.stage in RL_STAGES and "prompts" not in self.sample.model_fields_set and self.data.dataset == "arithmetic":
            self.sample.prompts = ARITHMETIC_PROMPTS
        if t.learning_rate is None:
            t.learning_rate = DEFAULT_LEARNING_RATE[self.stage][self.method]
        if t.save_strategy == "steps" and t.save_steps < 1:
            raise ValueError("training.save_steps must be >= 1 when save_strategy is steps")
        if t.max_steps == 0:
            raise ValueError("training.max_steps is 0; use -1 to train by epochs or a positive number of steps")
        return self
