"""What the training tests share: stop at a step (to interrupt a run), record what happened, compare it with the plan."""

import pytest
from transformers import TrainerCallback


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == self.step:
            control.should_training_stop = True


class Recorder(TrainerCallback):
    """The trainer's model and arguments, learning rates, saves and logging steps, as they happened."""

    def __init__(self):
        self.lrs, self.saves, self.logs = [], [], []
        self.model = self.args = None

    def on_train_begin(self, args, state, control, model=None, **kw):
        self.model, self.args = model, args

    def on_step_begin(self, args, state, control, optimizer=None, **kw):
        self.lrs.append(optimizer.param_groups[0]["lr"])

    def on_save(self, args, state, control, **kw):
        self.saves.append(state.global_step)

    def on_log(self, args, state, control, logs=None, **kw):
        if "loss" in (logs or {}):
            self.logs.append(state.global_step)


def assert_run_followed_plan(plan, recorder: Recorder, result) -> None:
    """The trainer did what `plan` printed: steps, checkpoints kept, logging, the learning rate at every step,
    trainable parameters, and the speed switches (attention kernel, autocast, checkpointing, weight dtype)."""
    s = plan.schedule
    assert result.steps == s.total_steps
    assert recorder.saves == s.checkpoint_steps
    kept = sorted(int(p.name.split("-")[1]) for p in result.run_dir.glob("checkpoint-*"))
    assert kept == s.kept_checkpoints
    assert recorder.logs == s.logging_steps
    assert recorder.lrs == pytest.approx(s.learning_rates, rel=1e-9, abs=1e-15)
    assert result.trainable_parameters == plan.trainable_parameters
    speed = plan.speed
    assert recorder.args.bf16 == (speed.autocast and plan.precision.name == "bf16")
    assert recorder.args.gradient_checkpointing == speed.gradient_checkpointing
    from tunesmith.train.speed import checkpointed_layers

    # every trained model follows the speed settings (PPO trains two: the actor and the critic)
    trained = [recorder.model.policy, recorder.model.critic] if hasattr(recorder.model, "critic") else [recorder.model]
    from tunesmith.train.varlen import implementation

    assert bool(getattr(recorder.args, "padding_free", False)) == speed.padding_free
    for model in trained:
        assert model.config._attn_implementation == (implementation(speed.attention) if speed.varlen else speed.attention)
        assert speed.varlen >= speed.padding_free
        checkpointed, layers = checkpointed_layers(model)
        assert checkpointed == (-(-layers // speed.checkpoint_every) if speed.checkpoint_every else 0), (
            checkpointed,
            layers,
            speed,
        )  # one layer in k, as the plan says
        assert str(model.get_base_model().dtype).removeprefix("torch.") == speed.weights
        from tunesmith.train.fused_lora import fused_layers

        fused, lora = fused_layers(model)
        assert fused == (lora if speed.fused_lora else 0), (fused, lora, speed)  # LoRA layers as one node each, as the plan says
        from tunesmith.train.fused_mlp import fused_mlps

        fused, mlps = fused_mlps(model)
        assert mlps and fused == (mlps if speed.fused_mlp else 0), (fused, mlps, speed)  # gated MLPs keep two tensors, as the plan says
        from tunesmith.train.loss import fused_head_of

        if plan.stage in ("dpo", "kto", "grpo", "rloo"):  # TRL's trainers with a fused head: on a CPU tunesmith's scores the tokens
            assert fused_head_of(model) == ("tunesmith" if plan.precision.device == "cpu" else "trl"), plan.stage
