"""Trainer callbacks the training tests share: stop at a step (to interrupt a run), record what happened."""

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
