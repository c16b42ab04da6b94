"""SFT end to end on the tiny model: it learns, it resumes exactly, it writes a standard result."""

import json
import math

import pytest
from recorders import StopAt
from transformers import TrainerCallback

from tunesmith.errors import TrainingError, TunesmithError
from tunesmith.runs.rundir import RunDir
from tunesmith.train.sft import run_sft


def losses(run_dir):
    return {m["step"]: m["loss"] for m in RunDir(run_dir).read_metrics() if "loss" in m}


def test_loss_goes_down_on_memorizable_data(tiny_recipe):
    recipe = tiny_recipe(
        **{
            "method": "full",
            "training.learning_rate": 3e-3,
            "training.num_train_epochs": 2,
            "training.gradient_accumulation_steps": 1,  # 2 epochs of single micro-batch steps: as many updates as 6 epochs of 3
            "training.logging_steps": 1,
            "training.save_strategy": "no",
            "training.warmup_ratio": 0.0,
        }
    )
    result = run_sft(recipe, live=False)
    curve = losses(result.run_dir)
    first, last = curve[min(curve)], curve[max(curve)]
    assert last < 0.5 * first, curve
    assert all(math.isfinite(v) for v in curve.values())
    # a full model directory that transformers loads, with the chat template
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(result.model_dir)
    assert AutoTokenizer.from_pretrained(result.model_dir).chat_template


def test_lora_result_is_a_vanilla_peft_adapter_and_merges(tiny_recipe):
    import torch
    from peft import AutoPeftModelForCausalLM

    recipe = tiny_recipe(**{"training.max_steps": 3, "training.save_strategy": "no", "merge": True, "lora.lora_dropout": 0.0})
    result = run_sft(recipe, live=False)
    assert (result.model_dir / "adapter_config.json").is_file()
    peft_model = AutoPeftModelForCausalLM.from_pretrained(result.model_dir)  # vanilla peft, base found by path
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        assert torch.allclose(peft_model(ids).logits, merged(ids).logits, atol=1e-4)
    for name in ("recipe.yaml", "environment.json", "metrics.jsonl", "README.md", "loss.png"):
        assert (result.run_dir / name).is_file(), name


def test_resume_reproduces_uninterrupted_curve(tiny_recipe, tmp_path):
    common = {"training.max_steps": 8, "training.save_steps": 4, "training.logging_steps": 1, "lora.lora_dropout": 0.1, "training.save_total_limit": None}
    straight = run_sft(tiny_recipe(**common, output_dir=str(tmp_path / "a")), live=False)
    interrupted = run_sft(tiny_recipe(**common, output_dir=str(tmp_path / "b")), live=False, callbacks=[StopAt(4)])
    assert interrupted.steps == 4
    resumed = run_sft(resume=str(tmp_path / "b"), live=False)
    assert resumed.steps == 8
    a, b = losses(straight.run_dir), losses(resumed.run_dir)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5), step


@pytest.mark.slow  # resuming is in the fast suite (test_resume_reproduces_uninterrupted_curve); this names the checkpoint
def test_resume_from_a_given_checkpoint(tiny_recipe, tmp_path):
    recipe = tiny_recipe(**{"training.max_steps": 6, "training.save_steps": 2, "training.save_total_limit": None, "training.logging_steps": 1})
    first = run_sft(recipe, live=False)
    again = run_sft(resume=str(first.run_dir / "checkpoint-2"), live=False)
    assert again.steps == 6
    assert sorted(losses(first.run_dir)) == list(range(1, 7))


def test_existing_run_dir_is_not_overwritten(tiny_recipe):
    recipe = tiny_recipe(**{"training.max_steps": 1, "training.save_strategy": "no"})
    run_sft(recipe, live=False)
    with pytest.raises(TunesmithError, match="already exists.*"):
        run_sft(recipe, live=False)


class Overflow(TrainerCallback):
    """Simulate an fp16-style overflow: the weights become inf after step 2."""

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step == 2:
            import torch

            with torch.no_grad():
                next(p for p in model.parameters() if p.requires_grad).fill_(float("inf"))


def test_nan_loss_stops_with_a_hint(tiny_recipe):
    recipe = tiny_recipe(**{"method": "full", "training.logging_steps": 1, "training.max_steps": 30, "training.save_strategy": "no"})
    with pytest.raises(TrainingError, match=r"inf/NaN at step 3") as exc:
        run_sft(recipe, live=False, callbacks=[Overflow()])
    assert "learning_rate" in exc.value.hint


def test_qlora_on_cpu_says_so(tiny_recipe):
    with pytest.raises(TunesmithError, match="QLoRA needs a CUDA GPU"):
        run_sft(tiny_recipe(method="qlora"), live=False)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.attn_implementation": "flash_attention_2"}, "flash_attention_2, which runs on CUDA GPUs only"),
        ({"training.use_liger_kernel": True}, "Liger's kernels are Triton GPU kernels and this machine has no CUDA GPU"),
    ],
)
def test_gpu_kernels_on_cpu_say_so(tiny_recipe, tmp_path, overrides, message):
    with pytest.raises(TunesmithError, match=message):
        run_sft(tiny_recipe(**overrides), live=False)
    assert not (tmp_path / "run").exists()


def test_end_of_run_diagnostics_on_the_eval_split(tiny_recipe, chat_jsonl):
    recipe = tiny_recipe(**{"training.max_steps": 2, "training.save_strategy": "no", "data.eval_dataset": chat_jsonl, "sample.max_new_tokens": 4})
    result = run_sft(recipe, live=False)
    report = json.loads((result.run_dir / "diagnostics.json").read_text())
    names = {d["name"] for d in report["diagnostics"]}
    assert {"perplexity", "leakage_rate", "memorization_rate", "stopped_rate"} <= names
    assert result.eval_loss is not None and result.diagnostics["perplexity"].value > 1


def test_missing_metric_sink_is_explained_before_the_run(tiny_recipe, tmp_path):
    import importlib.util

    if importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb installed")
    with pytest.raises(TunesmithError, match="report_to asks for wandb, but the package 'wandb' is not installed"):
        run_sft(tiny_recipe(**{"training.report_to": ["wandb"]}), live=False)
    assert not (tmp_path / "run").exists()


def test_the_decode_loops_packed_weights_do_not_ride_along_into_training(tiny_recipe):
    """The before-training samples decode from packed bf16 weights (infer/packed.py); training starts without them."""
    from transformers import TrainerCallback

    from tunesmith.train.sft import run_sft

    seen = {}

    class Look(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):
            seen["packed"] = sum("_tunesmith_packed" in m.__dict__ for m in model.modules())

    recipe = tiny_recipe(
        **{"model.precision": "bf16", "sample.prompts": ["hello"], "sample.max_new_tokens": 4, "training.max_steps": 1, "training.num_train_epochs": 1}
    )
    run_sft(recipe, callbacks=[Look()], live=False)
    assert seen["packed"] == 0


@pytest.mark.slow  # a run with epoch evals (~3.5 s): a regression test for one edge of the schedule
def test_an_epoch_eval_at_the_last_step_is_not_run_twice(tiny_recipe, chat_jsonl, monkeypatch):
    """With eval_strategy epoch the last epoch's eval is the final one: reused, not measured (and printed) again."""
    from transformers import Trainer

    calls = []
    real = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate", lambda self, *a, **k: calls.append(self.state.global_step) or real(self, *a, **k))
    recipe = tiny_recipe(
        **{
            "training.num_train_epochs": 2,
            "training.save_strategy": "no",
            "training.eval_strategy": "epoch",
            "data.eval_dataset": chat_jsonl,
            "sample.diagnostics": False,
        }
    )
    result = run_sft(recipe, live=False)
    rows = [m for m in RunDir(result.run_dir).read_metrics() if "eval_loss" in m]
    assert len(calls) == 2 and calls[-1] == rows[-1]["step"]  # one eval per epoch, none after
    assert rows[-1]["final"] and rows[-1]["eval_loss"] == rows[-2]["eval_loss"] == result.eval_loss
