"""`trl.SFTTrainer` with the loss computed on supervised positions only (see train/loss.py).

Everything else (data collation, packing, gradient accumulation, checkpoints, logging,
accelerate's DDP/FSDP/DeepSpeed) is TRL's and transformers'. The loss and the logged
metrics (`entropy`, `mean_token_accuracy`, `num_tokens`) mean what they mean in TRL;
cases this loss does not cover (label smoothing, DFT loss, a custom `compute_loss_func`,
MoE auxiliary losses, sequence parallelism, callers that want the logits) go to TRL's.
"""

from __future__ import annotations

from trl import SFTTrainer

from tunesmith.train.loss import causal_lm_loss


class CompactLossSFTTrainer(SFTTrainer):
    def _compact_loss_applies(self, return_outputs: bool) -> bool:
        parallelism = getattr(self.accelerator, "parallelism_config", None)
        return not (
            return_outputs
            or self.compute_loss_func is not None
            or self.label_smoother is not None
            or self.args.loss_type != "nll"
            or self.aux_loss_enabled
            or (parallelism is not None and getattr(parallelism, "sp_enabled", False))
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self._compact_loss_applies(return_outputs):
            return super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        loss, stats = causal_lm_loss(model, inputs, num_items_in_batch)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())  # DDP averages gradients; the count is global

        gather = self.accelerator.gather_for_metrics
        scored = gather(stats.tokens).sum()
        if scored > 0:
            self._metrics[mode]["entropy"].append((gather(stats.entropy).sum() / scored).item())
            self._metrics[mode]["mean_token_accuracy"].append((gather(stats.correct).sum() / scored).item())
        if mode == "train":
            if "attention_mask" in inputs:
                seen = gather(inputs["attention_mask"].sum()).sum().item()
            else:  # padding-free batches: one row of real tokens
                seen = gather(inputs["input_ids"].new_tensor(inputs["input_ids"].numel())).sum().item()
            self._total_train_tokens += seen // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        return loss
