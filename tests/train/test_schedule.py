from tunesmith.recipes import load_recipe
from tunesmith.train.schedule import compute_schedule


def schedule(n, **training):
    return compute_schedule(load_recipe(None, {f"training.{k}": v for k, v in training.items()}).training, n)


def test_issue_example():
    s = schedule(
        1000, per_device_train_batch_size=4, gradient_accumulation_steps=4, num_train_epochs=3, save_strategy="epoch", save_total_limit=2, logging_steps=7
    )
    assert s.effective_batch_size == 16
    assert s.steps_per_epoch == 63  # 250 micro-batches / 4, rounded up
    assert s.total_steps == 189
    assert s.checkpoint_steps == [63, 126, 189]
    assert s.kept_checkpoints == [126, 189]
    assert s.logging_steps == list(range(7, 190, 7))


def test_max_steps_wins_and_last_step_is_saved():
    s = schedule(
        1000,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=4,
        num_train_epochs=3,
        max_steps=50,
        save_strategy="steps",
        save_steps=20,
        save_total_limit=None,
    )
    assert s.total_steps == 50
    assert s.checkpoint_steps == [20, 40, 50]
    assert s.kept_checkpoints == [20, 40, 50]


def test_fractional_epochs_and_epoch_saves_at_cut():
    s = schedule(100, per_device_train_batch_size=10, gradient_accumulation_steps=1, num_train_epochs=1.5, save_strategy="epoch", save_total_limit=None)
    assert s.steps_per_epoch == 10 and s.total_steps == 15
    assert s.checkpoint_steps == [10, 15]


def test_warmup_and_lr_curve():
    s = schedule(
        160, per_device_train_batch_size=4, gradient_accumulation_steps=4, num_train_epochs=2, warmup_ratio=0.1, learning_rate=1e-3, lr_scheduler_type="linear"
    )
    assert s.total_steps == 20 and s.warmup_steps == 2
    assert s.learning_rates[0] == 0.0
    assert abs(s.learning_rates[1] - 5e-4) < 1e-12
    assert abs(s.learning_rates[2] - 1e-3) < 1e-12  # peak right after warmup
    assert s.learning_rates[-1] < s.learning_rates[2] and len(s.learning_rates) == 20


def test_world_size_divides_batches():
    s = compute_schedule(load_recipe().training, 1000, world_size=2)
    # defaults: 8 per device x 2 devices x 2 accumulation; 1000 / 16 = 62.5 -> 63 micro-batches -> 32 steps
    assert s.effective_batch_size == 32 and s.micro_batches_per_epoch == 63 and s.steps_per_epoch == 32
