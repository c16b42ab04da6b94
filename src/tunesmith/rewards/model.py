"""A trained reward model as a reward: its score for (prompt conversation, reply), higher = preferred.

The model is checked when the recipe is loaded (is it a one-score classifier?) but its weights are loaded
on the first call, so building a recipe or a plan stays cheap. It scores exactly as `tunesmith score` and
the reward-model evaluation do (`evaluate.preference.reward_scores`): the chat template over the prompt
conversation plus the reply, score read at the last token. That needs the whole conversation (system
message, earlier turns), so the `Reward` built on it asks for raw prompts (`Reward.raw_prompts`).
"""

from __future__ import annotations

from tunesmith.errors import ModelError, RecipeError

HINT = "train one with `tunesmith reward`, and give its run directory as reward_model"


class RewardModelScorer:
    """A reward function (see the package contract) backed by a reward model, loaded once, lazily.

    prompts: message lists or strings; a string is taken as the user's message when the tokenizer has a
    chat template (as `tunesmith score` does), so the model sees conversations shaped like its training.
    Runs on the GPU when there is one, in fp32 (scores are compared across a group: keep them exact).
    """

    __name__ = "reward_model"

    def __init__(self, source):
        self.source = source
        self.model = None
        self.tokenizer = None

    def load(self) -> None:
        import torch

        from tunesmith.models.load import load_tokenizer
        from tunesmith.models.reward import load_reward_model

        model = load_reward_model(self.source)
        self.model = model.to("cuda") if torch.cuda.is_available() else model
        self.tokenizer = load_tokenizer(self.source)

    def __call__(self, prompts: list, completions: list[str], *, batch_size: int = 8, **_) -> list[float]:
        from tunesmith.evaluate.preference import reward_scores

        if self.model is None:
            self.load()
        if self.tokenizer.chat_template:
            prompts = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
        return reward_scores(self.model, self.tokenizer, prompts, completions, batch_size=batch_size)


def reward_model_scorer(spec: str, *, where: str = "grpo.rewards[0]") -> RewardModelScorer:
    """Check that `spec` (a reward run directory, its model/ adapter, or a full reward model) is a reward
    model, without loading its weights. Anything else -> RecipeError with how to get one."""
    from tunesmith.models.builtin import BUILTIN_MODELS
    from tunesmith.models.load import resolve_model

    if spec in BUILTIN_MODELS:  # a chat model; resolving it would first convert its GGUF file, for nothing
        raise RecipeError(f"'{spec}' is a built-in chat model, not a reward model", where=f"{where}.reward_model", hint=HINT)
    try:
        source = resolve_model(spec)
    except ModelError as exc:
        raise RecipeError(exc.message, where=f"{where}.reward_model", hint=exc.hint or HINT) from None
    if not source.is_reward_model():
        raise RecipeError(f"'{spec}' is not a reward model (no one-score classification head)", where=f"{where}.reward_model", hint=HINT)
    return RewardModelScorer(source)
