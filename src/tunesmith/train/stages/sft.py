"""Supervised fine-tuning (full, LoRA, DoRA, QLoRA) on `trl.SFTTrainer` with the compact loss (train/loss.py)."""

from __future__ import annotations

from tunesmith.train.stages.base import Stage, StageData


class SFTStage(Stage):
    name = "sft"
    unpadded_rows = True
    title = "supervised fine-tuning"
    data_kind = "sft"
    trainer_wraps_adapter = False  # SFT wraps the model itself (the speed settings in train/speed.py were measured so)

    def prepare_data(self, recipe, tokenizer, source=None, with_eval=True) -> StageData:
        from tunesmith.train.data import longest_sequence, prepare_training_data

        data = prepare_training_data(recipe, source, tokenizer=tokenizer, with_eval=with_eval)
        return StageData(
            train=data.train.dataset,
            eval=data.eval.dataset if data.eval else None,
            summary=data.summary(),
            num_examples=data.report.num_examples,
            num_sequences=data.num_sequences,
            longest=longest_sequence(recipe, data),
            tokens=data.report.num_tokens,
            eval_examples=data.eval.examples if data.eval else [],
            raw=data,
        )

    def config(self, recipe, common: dict, schedule=None):
        from trl import SFTConfig

        from tunesmith.train.data import PACKING_STRATEGY

        liger = common.pop("use_liger_kernel", None)
        if common.get("padding_free") or recipe.data.packing:  # TRL packs padding-free too
            # rows of real tokens only: "non_padding" would count tokens != pad_token_id, which drops every
            # end-of-turn token of a model whose pad token is its eos (SmolLM2)
            common = {**common, "include_num_input_tokens_seen": "all"}
        return SFTConfig(
            **common,
            use_liger_kernel=bool(liger),
            liger_kernel_config={"fused_linear_cross_entropy": False, "cross_entropy": False} if liger else None,  # the loss is ours
            # padding-free without packing: TRL would refuse max_length, which it cannot enforce then; the data is
            # already cut to it (data/tokenize.py)
            max_length=None if common.get("padding_free") and not recipe.data.packing else recipe.data.max_length,
            packing=recipe.data.packing,
            packing_strategy=PACKING_STRATEGY,
        )

    def trainer(self, *, model, ref_model, args, data, tokenizer, callbacks, peft_config):
        from tunesmith.train.trainer import CompactLossSFTTrainer

        return CompactLossSFTTrainer(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval, processing_class=tokenizer, callbacks=callbacks)

    def diagnose(self, model, tokenizer, recipe, data: StageData, run):
        """The cheap eval diagnostics (leakage, repetition, memorisation) on the eval split."""
        if not recipe.sample.diagnostics or data.eval is None:
            return None
        from tunesmith.evaluate import diagnose

        return diagnose(
            model,
            tokenizer,
            data.raw.eval,
            name=str(run.path),
            train_examples=data.raw.train.examples,
            max_prompts=8,
            max_new_tokens=recipe.sample.max_new_tokens,
        )
