"""RLOO on `trl.RLOOTrainer`: GRPO's surface (stages/grpo.py), with a leave-one-out baseline.

Each completion's advantage is its reward minus the mean reward of the OTHER completions of its
prompt (`tunesmith inspect advantages --estimator rloo`), and the KL to the reference is folded
into the reward (beta * summed log-ratio) instead of added to the loss.
"""

from __future__ import annotations

from tunesmith.train.stages.grpo import GRPOStage


class RLOOStage(GRPOStage):
    name = "rloo"
    title = "REINFORCE leave-one-out"
    trainer_class = "RLOOTrainer"
    config_class = "RLOOConfig"
