"""Hand our rewards to TRL's GRPOTrainer / RLOOTrainer (`reward_funcs=`, `GRPOConfig.reward_weights`).

TRL 1.16 (`GRPOTrainer._calculate_rewards`, same in RLOO) calls each function as

    reward_func(prompts=..., completions=..., completion_ids=..., **reward_kwargs)

where `reward_kwargs` holds every dataset column but `prompt`/`completion`/`completion_ids`, plus its own
`trainer_state`, `log_extra`, `log_metric` (and `environments` with environment factories). For
conversational data a prompt is a message list and a completion `[{"role": "assistant", "content": ...}]`
(more messages after tool calls). Each bridge function turns that into our contract: text prompts (the last
user message) and replies (the last assistant message), dataset columns only. TRL logs a function's
rewards as `rewards/<__name__>/mean` and `/std`, so each gets its reward's name, made unique.
"""

from __future__ import annotations

from collections.abc import Callable

from tunesmith.rewards import Reward

TRL_ARGUMENTS = frozenset({"completion_ids", "trainer_state", "log_extra", "log_metric", "environments"})


def content_text(message: dict) -> str:
    """A message's text; multimodal content (a list of parts) keeps its text parts."""
    content = message.get("content") or ""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type", "text") == "text")
    return content


def last_of(messages: list[dict], role: str) -> str:
    """The text of the last `role` message, else of the last message ("" for none)."""
    chosen = next((m for m in reversed(messages) if m.get("role") == role), messages[-1] if messages else None)
    return content_text(chosen) if chosen else ""


def prompt_text(prompt) -> str:
    """Our contract's prompt: the string itself, or a conversation's last user message."""
    return last_of(prompt, "user") if isinstance(prompt, list) else prompt


def completion_text(completion) -> str:
    """Our contract's completion: the string itself, or the last assistant message's text."""
    return last_of(completion, "assistant") if isinstance(completion, list) else completion


def unique_names(names: list[str]) -> list[str]:
    """`format, format, x` -> `format, format_2, x`: TRL keys its metrics by name, so two equal names would mix."""
    out: list[str] = []
    for name in names:
        candidate, n = name, 1
        while candidate in out:
            n += 1
            candidate = f"{name}_{n}"
        out.append(candidate)
    return out


def trl_reward_function(reward: Reward, name: str | None = None) -> Callable[..., list]:
    """One TRL-callable reward function named `name` (default: the reward's name)."""

    def reward_function(prompts, completions, **kwargs):
        columns = {k: v for k, v in kwargs.items() if k not in TRL_ARGUMENTS}
        texts = [completion_text(c) for c in completions]
        return reward(prompts if reward.raw_prompts else [prompt_text(p) for p in prompts], texts, **columns)

    reward_function.__name__ = reward_function.__qualname__ = name or reward.name
    return reward_function


def trl_reward_functions(rewards: list[Reward]) -> tuple[list[Callable[..., list]], list[float]]:
    """(functions for `GRPOTrainer(reward_funcs=...)` / `RLOOTrainer`, weights for `reward_weights`), in order."""
    names = unique_names([r.name for r in rewards])
    return [trl_reward_function(r, n) for r, n in zip(rewards, names)], [r.weight for r in rewards]
