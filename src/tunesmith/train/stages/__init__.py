"""The training stages. A new stage is one module here plus one line in STAGES (and its recipe section)."""

from __future__ import annotations

import importlib

from tunesmith.train.stages.base import Change, Stage, StageData, StageResult

# stage name -> "module:class" (imported on use, so `tunesmith plan` does not pay for every trainer)
STAGES: dict[str, str] = {
    "pretrain": "tunesmith.train.stages.pretrain:PretrainStage",
    "sft": "tunesmith.train.stages.sft:SFTStage",
    "reward": "tunesmith.train.stages.reward:RewardStage",
    "dpo": "tunesmith.train.stages.dpo:DPOStage",
    "kto": "tunesmith.train.stages.kto:KTOStage",
    "orpo": "tunesmith.train.stages.orpo:ORPOStage",
    "cpo": "tunesmith.train.stages.cpo:CPOStage",
    "grpo": "tunesmith.train.stages.grpo:GRPOStage",
    "rloo": "tunesmith.train.stages.rloo:RLOOStage",
    "ppo": "tunesmith.train.stages.ppo:PPOStage",
}


def get_stage(name: str) -> Stage:
    module, cls = STAGES[name].split(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["STAGES", "Change", "Stage", "StageData", "StageResult", "get_stage"]
