"""Rollouts for the RL stages: our decode loop inside TRL's GRPO/RLOO trainers, and a record of every group.

`FastRollouts` is mixed into `trl.GRPOTrainer` / `trl.RLOOTrainer` (stages/grpo.py). It changes two things:
- the completions are sampled by `infer.generate.complete_tokens`, the loop `tunesmith generate` uses
  (finished rows leave the batch, the sampling maths of `inspect logits`), instead of `model.generate`;
- after each batch is scored, every group (one prompt, its `num_generations` completions, each reward,
  the group's mean and std and each advantage, exactly as the trainer computed them) is appended to
  <run>/rollouts.jsonl, which `tunesmith inspect rollouts` reads.
It also logs the share of time spent generating (`time/generate_share`). The sampling and its timing
(`TimedGeneration`, `sampling_params`, `response_tokens`) serve PPO's trainer too (train/ppo.py).

The trainers (stages/grpo.py) route TRL's `_generate_single_turn` to `_sample`; TRL 1.x calls it and
`_generate_and_score_completions` in both trainers, and the fast suite runs both, so a TRL that renames
them fails a test, not a user's run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from tunesmith.rewards import weighted_sum
from tunesmith.rewards.trl_bridge import completion_text, prompt_text
from tunesmith.train.advantages import group_advantages

ROLLOUTS_FILE = "rollouts.jsonl"


def sampling_params(args):
    """The rollouts' sampling settings (an RL stage's config: GRPOConfig, RLOOConfig, PPOConfig) as our decode loop takes them."""
    from tunesmith.infer.sampling import SamplingParams

    return SamplingParams(
        temperature=args.temperature, top_k=args.top_k or 0, top_p=args.top_p, min_p=args.min_p or 0.0, repetition_penalty=args.repetition_penalty
    )


def response_tokens(completion) -> list[int]:
    """The tokens the policy produced: the reply, and the eos / end-of-turn token when it stopped (the policy must learn to stop)."""
    return completion.token_ids + ([completion.stop_token] if completion.stop_token is not None else [])


class TimedGeneration:
    """Mixin for the RL trainers (GRPO/RLOO through FastRollouts, PPO): sample with our decode loop, and log how
    long sampling took since the last log and its share of the wall time (time/generate_s, time/generate_share)."""

    _generate_seconds = 0.0
    _window_start: float | None = None

    def _start_window(self) -> None:
        if self._window_start is None:
            self._window_start = time.perf_counter()

    def _sample_responses(self, model, prompt_ids: list[list[int]], generator: torch.Generator) -> list:
        """One completion per prompt by `infer.generate.complete_tokens`, timed."""
        from tunesmith.heap import release_free_memory
        from tunesmith.infer.generate import complete_tokens

        started = time.perf_counter()
        # no packed weights here (infer/packed.py): bench grpo measured the same step time (7.7-8.3 vs 7.9 s) for
        # +270 MB at the peak kept between steps, +200 MB dropped after each rollout
        done = complete_tokens(
            model,
            self.processing_class,
            prompt_ids,
            sampling_params(self.args),
            max_new_tokens=self.args.max_completion_length,
            generator=generator,
            pack_weights=False,
        )
        release_free_memory()  # the decode loop's many small freed blocks, before the step's backward needs the room
        self._generate_seconds += time.perf_counter() - started
        return done

    def log(self, logs: dict, start_time: float | None = None) -> None:
        """Add how long generating took since the last log, and its share of the wall time."""
        if self.model.training and self._window_start is not None and "loss" in logs:
            wall = time.perf_counter() - self._window_start
            logs["time/generate_s"] = round(self._generate_seconds, 3)
            logs["time/generate_share"] = round(self._generate_seconds / wall, 4) if wall > 0 else 0.0
            self._generate_seconds, self._window_start = 0.0, time.perf_counter()
        super().log(logs, start_time)


class FastRollouts(TimedGeneration):
    """Mixin for TRL's GRPOTrainer and RLOOTrainer (put it first in the bases)."""

    rollout_seed: int = 0

    # ------------------------------------------------------------ sampling

    def _sample(self, prompt_ids: list[list[int]]) -> list[list[int]]:
        """One completion per prompt (the trainer has already repeated each prompt num_generations times).
        Each completion ends with the eos / end-of-turn token when the model stopped, as TRL's own path
        keeps it: the policy must learn to stop. Seeded by step, so a resumed run samples the same."""
        model = self.accelerator.unwrap_model(self.model)
        step = self.state.global_step
        self._calls_in_step = self._calls_in_step + 1 if getattr(self, "_calls_step", None) == step else 0
        self._calls_step = step
        # the seed depends on the step (and the call within it) only, so a resumed run samples what the whole run did
        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(self.rollout_seed * 1_000_003 + step * 1009 + self._calls_in_step)
        return [response_tokens(c) for c in self._sample_responses(model, prompt_ids, generator)]

    def _samples_here(self, images) -> bool:
        """Whether our loop can sample this batch: text only, no vLLM, no tool calls (TRL's own path does those)."""
        return images is None and not self.args.use_vllm and not getattr(self, "tools", None)

    # ------------------------------------------------------------ the record

    def _generate_and_score_completions(self, inputs):
        self._start_window()
        output = super()._generate_and_score_completions(inputs)
        if self.model.training and self.accelerator.is_main_process:
            self._record_groups()
        return output

    def _record_groups(self) -> None:
        """Append the batch just scored to <run>/rollouts.jsonl, one line per generation batch."""
        logs = self._logs
        names = list(logs["rewards"])
        weights = [float(w) for w in self.reward_weights]
        prompts, completions, advantages = list(logs["prompt"]), list(logs["completion"]), list(logs["advantages"])
        per_function = {name: list(logs["rewards"][name]) for name in names}
        size = self.num_generations
        groups = []
        for start in range(0, len(prompts), size):
            rows = []
            for i in range(start, min(start + size, len(prompts))):
                scores = {name: _num(per_function[name][i]) for name in names}
                total = weighted_sum(weights, list(scores.values()))
                rows.append({"completion": completion_text(completions[i]), "rewards": scores, "reward": total, "advantage": _num(advantages[i])})
            # the group's mean and std as the trainer computes them (NaN rewards left out, sample std)
            stats = group_advantages([float("nan") if r["reward"] is None else r["reward"] for r in rows])
            groups.append({"prompt": prompt_text(prompts[start]), "mean": _num(stats.group_mean[0]), "std": _num(stats.group_std[0]), "completions": rows})
        record = {"step": self.state.global_step + 1, "weights": dict(zip(names, weights)), "groups": groups}
        with open(Path(self.args.output_dir) / ROLLOUTS_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")


def _num(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def read_rollouts(run_dir: str | Path) -> list[dict]:
    """Every recorded generation batch of a run, in order (see FastRollouts._record_groups for the shape)."""
    path = Path(run_dir) / ROLLOUTS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def keep_rollouts_until(run_dir: Path, step: int) -> None:
    """On resume: drop the records of steps after the checkpoint, which the resumed run samples again."""
    path = Path(run_dir) / ROLLOUTS_FILE
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(f"{line}\n" for line in kept))
