"""bench dpo: both sides are given the same job, and the report says what the figures say."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tunesmith.bench.dpo import Job, baseline_config, report_lines, step_gaps, summarise, tunesmith_overrides
from tunesmith.bench.measure import batch_counter

# what the job fixes, by DPOConfig name; each side's own choices (dtype, autocast, checkpointing) are not here
FIXED = (
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_steps",
    "beta",
    "seed",
    "loss_type",
    "logging_steps",
    "precompute_ref_log_probs",
)


def _tunesmith_config(job: Job, tmp_path):
    from tunesmith.models.precision import resolve_precision
    from tunesmith.recipes import load_recipe
    from tunesmith.train.scaffold import common_arguments
    from tunesmith.train.speed import speed_settings
    from tunesmith.train.stages import get_stage

    recipe = load_recipe(None, tunesmith_overrides(job, str(tmp_path)))
    precision = resolve_precision(recipe.model.precision)
    stage = get_stage(recipe.stage)
    common = common_arguments(recipe, SimpleNamespace(path=tmp_path), precision, False, speed_settings(recipe, precision, 100))
    return recipe, stage, stage.config(recipe, common)


@pytest.mark.parametrize(
    "job",
    [Job(), Job(steps=3, batch_size=2, gradient_accumulation_steps=1, max_length=256, learning_rate=1e-4, beta=0.2, seed=7, precompute_ref_log_probs=True)],
)
def test_both_sides_get_the_same_job(job, tmp_path, tiny_model_dir, smol_tokenizer):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig

    from tunesmith.bench.dpo import pirate_pairs
    from tunesmith.models.lora import build_lora_config

    base = DPOConfig(**baseline_config(job, str(tmp_path), use_cpu=True))
    recipe, stage, ours = _tunesmith_config(job, tmp_path)
    assert recipe.stage == "dpo" and recipe.data.dataset == "pirate-pairs"
    assert {k: getattr(base, k) for k in FIXED} == {k: getattr(ours, k) for k in FIXED}
    from tunesmith.bench.measure import emulated_bf16

    # the baseline keeps DPOConfig's defaults, but for bf16=False where the CPU would emulate bf16
    assert base.gradient_checkpointing and base.bf16 == (not emulated_bf16())
    # ours: no checkpointing over a bf16 base; one layer in 3 in fp32 (the precision auto picks without fast bf16)
    assert ours.gradient_checkpointing == emulated_bf16() and ours.disable_dropout == base.disable_dropout

    # the same adapter: rank, alpha, dropout, modules
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    theirs = LoraConfig(r=job.lora_r, lora_alpha=job.lora_alpha, lora_dropout=job.lora_dropout, target_modules=job.target_modules, task_type="CAUSAL_LM")
    mine = build_lora_config(model, recipe.lora)
    assert (mine.r, mine.lora_alpha, mine.lora_dropout) == (theirs.r, theirs.lora_alpha, theirs.lora_dropout)
    assert {m.rsplit(".", 1)[-1] for m in mine.target_modules} == set(theirs.target_modules)

    # the same rows in the same order (the trainers' samplers are seeded alike)
    data = stage.prepare_data(recipe, smol_tokenizer, with_eval=False)
    assert data.train.to_list() == pirate_pairs(smol_tokenizer).to_list()


def _run(tokens_per_s, rss, losses, real=1000):
    return {
        "tokens_per_s": tokens_per_s,
        "gflops_per_s": tokens_per_s / 2,  # the work a token takes is the same on both sides
        "timed_flops": 4e9,
        "seconds_per_step": 1000 / tokens_per_s,
        "peak_rss_mb": rss,
        "final_loss": losses[-1],
        "losses": losses,
        "timed_real_tokens": real,
        "timed_padded_positions": 1250,
        "all_real_tokens": real + 500,
        "timed_seconds": 8.0,
        "train_seconds": 10.0,
        "process_seconds": 20.0,
        "peak_rss_mb_by": {},
        "settings": {"weights": "float32"},
    }


def test_report_medians_gaps_and_targets():
    runs = {
        "baseline": [_run(100, 2000, [0.6931, 0.6800, 0.6500]), _run(110, 2100, [0.6931, 0.6800, 0.6500]), _run(90, 1900, [0.6931, 0.6800, 0.6500])],
        "tunesmith": [_run(250, 1800, [0.6931, 0.6810, 0.6625]), _run(190, 1700, [0.6931, 0.6810, 0.6625]), _run(210, 1900, [0.6931, 0.6810, 0.6625])],
    }
    report = summarise(Job(steps=3), runs, {"gflops": 250.0, "dtype": "bf16"})
    assert report["sides"]["baseline"]["tokens_per_s"] == 100 and report["sides"]["tunesmith"]["tokens_per_s"] == 210
    assert report["sides"]["baseline"]["mfu"] == pytest.approx(0.2) and report["sides"]["tunesmith"]["mfu"] == pytest.approx(0.42)
    assert report["speed_ratio"] == pytest.approx(2.1) and report["memory_ratio"] == pytest.approx(0.9)
    assert report["loss_curve_max_gap"] == pytest.approx(0.0125 / 0.65) and report["loss_curve_max_gap_step"] == 3
    assert report["same_batches"]
    assert report["targets"] == {"speed ratio >= 2": True, "peak memory <= baseline": True, "loss within 2% at every step": True}

    lines = report_lines(report)
    assert lines[0].startswith("job: 3 steps x 4 pairs x 2 accumulation")
    assert lines[1].startswith("bf16 matmul peak on this machine, now: 250 GFLOP/s")
    assert "100.0 real tokens/s" in lines[2] and "50 GFLOP/s = 20% of peak" in lines[2] and "20% padding" in lines[2]
    assert lines[3].startswith("tunesmith") and "105 GFLOP/s = 42% of peak" in lines[3]
    assert "3: 0.6500/0.6625" in lines[4]
    assert "largest loss gap 1.92% at step 3" in lines[5]

    runs["tunesmith"][1]["all_real_tokens"] += 1  # a run that saw other batches
    runs["tunesmith"][0]["losses"] = [0.6931, 0.6810, 0.6700]
    report = summarise(Job(steps=3), runs)
    assert not report["same_batches"] and not report["targets"]["loss within 2% at every step"]
    assert "same batches on both sides: NO" in report_lines(report)[4]  # no peak measured: no peak line


def test_dpo_work_is_the_policy_step_plus_the_references_forward(tiny_model_dir):
    """The reference's forward is a third of the base model's step (2N against 4N a token) and half its head."""
    from transformers import AutoConfig

    from tunesmith.bench.measure import reference_flops, training_flops

    config = AutoConfig.from_pretrained(tiny_model_dir)
    short = [1] * 100  # attention negligible: the weights' forward is half of forward + input-gradient backward
    assert reference_flops(config, short, 10) == pytest.approx(training_flops(config, 0, short, 10) / 2, rel=0.01)
    lengths = [400, 310, 520, 470]  # long: attention's forward is a third of its forward + backward
    longer = [2 * n for n in lengths]
    policy_growth = training_flops(config, 0, longer, 0) - 2 * training_flops(config, 0, lengths, 0)
    reference_growth = reference_flops(config, longer, 0) - 2 * reference_flops(config, lengths, 0)
    assert reference_growth > 0 and reference_growth == pytest.approx(policy_growth / 3)


def test_loss_gaps_need_the_same_steps():
    assert step_gaps([1.0, 0.5], [1.0, 0.4]) == pytest.approx([0.0, 0.25])
    with pytest.raises(ValueError, match="did not train the same steps"):
        step_gaps([1.0], [1.0, 0.4])


def test_batch_counter_counts_preference_batches():
    import torch

    class Trainer:
        state = SimpleNamespace(global_step=0)

        def training_step(self, model, inputs):
            return "trained"

    counter = batch_counter(Trainer)
    trainer = Trainer()
    # DPO's collated batch: chosen rows first, then rejected, right padded; no labels, a completion mask
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    completion = torch.tensor([[0, 0, 1, 1, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 1], [0, 1, 0, 0, 0]])
    assert trainer.training_step(None, {"input_ids": torch.zeros(4, 5, dtype=torch.long), "attention_mask": mask, "completion_mask": completion}) == "trained"
    trainer.state.global_step = 1
    trainer.training_step(
        None,
        {
            "input_ids": torch.zeros(2, 3, dtype=torch.long),
            "attention_mask": torch.ones(2, 3, dtype=torch.long),
            "completion_mask": torch.ones(2, 3, dtype=torch.long),
        },
    )
    assert counter.since(step=0) == ([4, 3, 5, 2, 3, 3], 8 + 4)
    assert counter.since(step=1) == ([3, 3], 4) and counter.positions_since(step=1) == 6 and counter.positions_since(step=0) == 26
