"""Scoring a batch of replies with a recipe's rewards: what the RL stages do with every batch they sample
(GRPO and RLOO's held-out measurement, PPO's rollouts and measurement)."""

from __future__ import annotations


def prompts_and_columns(examples: list[dict]) -> tuple[list, dict[str, list]]:
    """Rows -> (their prompts, every other column by name): what a reward function is called with."""
    prompts = [e["prompt"] for e in examples]
    columns = {k: [e[k] for e in examples] for k in (examples[0] if examples else {}) if k != "prompt"}
    return prompts, columns


def score(rewards: list, prompts: list, completions: list[str], columns: dict[str, list]) -> dict[str, list]:
    """Each reward's scores of `completions` (None where it does not apply), by reward name."""
    from tunesmith.rewards.trl_bridge import completion_text, prompt_text, unique_names

    texts = [prompt_text(p) for p in prompts]
    out = {}
    for name, reward in zip(unique_names([r.name for r in rewards]), rewards):
        out[name] = reward(prompts if reward.raw_prompts else texts, [completion_text(c) for c in completions], **columns)
    return out


def weighted(rewards: list, per_function: dict[str, list]) -> list[float | None]:
    """The weighted sum the advantages start from, per completion (rewards.weighted_sum)."""
    from tunesmith.rewards import weighted_sum

    return [weighted_sum([r.weight for r in rewards], list(scores)) for scores in zip(*per_function.values())]


def mean(values) -> float | None:
    """The mean of the scores that apply (None left out); None when none does."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None
