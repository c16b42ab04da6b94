"""Two processes on this CPU (gloo), launched the way users launch them: `tunesmith launch -n 2 -- <stage> ...`.

For SFT and DPO: the run trains; its steps, checkpoints and logging are the plan's for 2 processes; one run
directory and one set of checkpoints are written; the result loads; the loss at every step equals a
single-process run with the same effective batch (2 per process x 2 processes = 2 x 2 accumulation), within
1e-4 relative (LoRA dropout off: its random masks are drawn per process); a run resumed under 2 processes
continues with the losses the uninterrupted run logged.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tunesmith.runs.rundir import RunDir

TOLERANCE = 1e-4  # relative, per logged step: the same arithmetic summed in another order


def launch(args: list[str], cwd, processes: int = 2) -> subprocess.CompletedProcess:
    """`tunesmith launch -n 2 -- ARGS` (or the plain command for 1 process), one intra-op thread per process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tunesmith", *(["launch", "-n", str(processes), "--"] if processes > 1 else []), *args]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def losses(run) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in RunDir(run).read_metrics() if "loss" in m}


def write_recipe(path, **sections) -> str:
    path.write_text(yaml.safe_dump(sections))
    return str(path)


def check_two_process_run(tmp_path, recipe_file: str, stage: str):
    """Run the recipe on 2 processes and on 1 with twice the accumulation; compare; return the 2-process run."""
    from tunesmith.recipes import load_recipe
    from tunesmith.train.plan import make_plan

    two, one = tmp_path / "runs" / "two", tmp_path / "one"
    shown = launch([stage, "-c", recipe_file, "--output-dir", str(two)], tmp_path)
    assert "processes: 2 (accelerate launch, ddp)" in shown.stdout
    assert shown.stdout.count("done in") == 1, shown.stdout  # one process reports
    launch([stage, "-c", recipe_file, "--output-dir", str(one), "--gradient-accumulation-steps", "2"], tmp_path, processes=1)

    plan = make_plan(load_recipe(recipe_file), world_size=2)
    s = plan.schedule
    assert sorted(os.listdir(two.parent)) == ["two"]  # one run directory, named by the main process
    metrics = RunDir(two).read_metrics()
    assert max(m["step"] for m in metrics) == s.total_steps
    assert [m["step"] for m in metrics if "loss" in m] == s.logging_steps  # one writer: no line twice
    assert sorted(int(p.name.split("-")[1]) for p in two.glob("checkpoint-*")) == s.kept_checkpoints
    a, b = losses(two), losses(one)
    assert a.keys() == b.keys()
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=TOLERANCE), (step, a, b)
    return two, a


@pytest.fixture
def sft_recipe(tmp_path, tiny_model_dir, chat_jsonl):
    return write_recipe(
        tmp_path / "sft.yaml",
        stage="sft",
        model={"name": tiny_model_dir, "precision": "fp32"},
        lora={"lora_dropout": 0.0},
        data={"dataset": chat_jsonl, "max_length": 64},
        sample={"prompts": [], "diagnostics": False},
        training={
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "max_steps": 6,
            "logging_steps": 1,
            "save_strategy": "steps",
            "save_steps": 3,
            "save_total_limit": 2,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
        },
    )


@pytest.mark.slow  # two processes of the tiny model: ~55 s on the 2-core EPYC; the fast suite keeps launch's config and plan (below)
def test_sft_on_two_processes_matches_one_and_resumes(tmp_path, sft_recipe):
    from tunesmith.models.load import load_model

    two, logged = check_two_process_run(tmp_path, sft_recipe, "sft")
    assert load_model(str(two)) is not None  # the adapter and its base load as any run's do
    resume_and_compare(tmp_path, "sft", two, logged, last=6)


def resume_and_compare(tmp_path, stage: str, run, logged: dict, last: int) -> None:
    """Drop the last checkpoint and the final model, resume under 2 processes from the one before: the steps after it
    are trained again and log the same losses."""
    shutil.rmtree(run / f"checkpoint-{last}")
    shutil.rmtree(run / "model")
    launch([stage, "--resume", str(run)], tmp_path)
    resumed = losses(run)
    assert resumed.keys() == logged.keys()
    for step in resumed:
        assert resumed[step] == pytest.approx(logged[step], rel=TOLERANCE), (step, resumed, logged)
    assert (run / "model" / "adapter_model.safetensors").is_file()


@pytest.mark.slow  # ~60 s / ~25 s on the 2-core AMX CPU: the fast suite passed 8 min there; SFT and PPO keep the 2-process path in it
def test_dpo_on_two_processes_matches_one(tmp_path, tiny_model_dir, pairs_jsonl):
    recipe = write_recipe(
        tmp_path / "dpo.yaml",
        stage="dpo",
        model={"name": tiny_model_dir, "precision": "fp32"},
        lora={"lora_dropout": 0.0},
        data={"dataset": pairs_jsonl, "eval_dataset": "none", "max_length": 96},
        sample={"prompts": []},
        training={
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 1,
            "max_steps": 4,
            "logging_steps": 1,
            "save_strategy": "steps",
            "save_steps": 2,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
        },
    )
    two, logged = check_two_process_run(tmp_path, recipe, "dpo")
    from tunesmith.models.load import load_model

    assert json.loads((two / "model" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert load_model(str(two)) is not None
    resume_and_compare(tmp_path, "dpo", two, logged, last=4)


def rl_recipe(tmp_path, tiny_model_dir, prompts_jsonl, stage: str, **section) -> str:
    return write_recipe(
        tmp_path / f"{stage}.yaml",
        stage=stage,
        model={"name": tiny_model_dir, "precision": "fp32"},
        lora={"lora_dropout": 0.0},
        data={"dataset": str(prompts_jsonl / "train.jsonl"), "eval_dataset": str(prompts_jsonl / "eval.jsonl"), "max_length": 64},
        sample={"prompts": []},
        training={
            "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 2,
            "max_steps": 4,
            "logging_steps": 1,
            "save_strategy": "steps",
            "save_steps": 2,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
        },
        **{stage: {"max_completion_length": 8, "rewards": [{"function": f"{prompts_jsonl / 'short.py'}:shortness"}], **section}},
    )


@pytest.mark.slow  # two processes of the tiny model: ~55 s on the 2-core EPYC; the fast suite keeps launch's config and plan (below)
def test_ppo_on_two_processes_trains_and_resumes_inside_a_rollout_batch(tmp_path, tiny_model_dir, prompts_jsonl):
    """Each process samples its own rollout batch (4 prompts) and trains it 4 times (steps 1-4). Checkpoint 2 falls inside
    the batch: resumed there, each process must train on its own saved rollouts (ppo_state_<rank>.pt)."""
    from tunesmith.recipes import load_recipe
    from tunesmith.train.plan import make_plan

    recipe = rl_recipe(tmp_path, tiny_model_dir, prompts_jsonl, "ppo", ppo_epochs=4, sample_every=0)
    run = tmp_path / "runs" / "ppo"
    launch(["ppo", "-c", recipe, "--output-dir", str(run)], tmp_path)
    plan = make_plan(load_recipe(recipe), world_size=2)
    assert max(m["step"] for m in RunDir(run).read_metrics()) == plan.schedule.total_steps == 4
    assert sorted(p.name for p in (run / "checkpoint-2").glob("ppo_state_*.pt")) == ["ppo_state_0.pt", "ppo_state_1.pt"]
    logged = losses(run)
    shutil.rmtree(run / "checkpoint-4")
    shutil.rmtree(run / "model")
    launch(["ppo", "--resume", str(run)], tmp_path)
    resumed = losses(run)
    for step in logged:
        assert resumed[step] == pytest.approx(logged[step], rel=TOLERANCE, abs=1e-6), (step, resumed, logged)


@pytest.mark.slow  # ~60 s / ~25 s on the 2-core AMX CPU: the fast suite passed 8 min there; SFT and PPO keep the 2-process path in it
def test_grpo_on_two_processes_trains_as_planned(tmp_path, tiny_model_dir, prompts_jsonl):
    from tunesmith.recipes import load_recipe
    from tunesmith.train.plan import make_plan

    recipe = rl_recipe(tmp_path, tiny_model_dir, prompts_jsonl, "grpo", num_generations=4)
    run = tmp_path / "runs" / "grpo"
    launch(["grpo", "-c", recipe, "--output-dir", str(run)], tmp_path)
    plan = make_plan(load_recipe(recipe), world_size=2)
    assert max(m["step"] for m in RunDir(run).read_metrics()) == plan.schedule.total_steps
    assert (run / "model" / "adapter_model.safetensors").is_file() and (run / "rollouts.jsonl").is_file()


# ---------------------------------------------------------------- the plan and the checks (no processes started)


def test_plan_divides_memory_per_process_by_strategy(tiny_recipe):
    from tunesmith.train.plan import make_plan

    recipe = tiny_recipe(**{"method": "full"})
    one = make_plan(recipe, num_examples=64)
    ddp = make_plan(recipe, num_examples=64, world_size=2)
    assert ddp.schedule.effective_batch_size == 2 * one.schedule.effective_batch_size
    # 64 sequences, 2 per micro-batch, 3 micro-batches a step, 2 epochs: one process 32 micro-batches -> 11 steps an epoch;
    # two processes 16 micro-batches each -> 6 steps an epoch (the Trainer's rounding, per process)
    assert (one.schedule.total_steps, ddp.schedule.total_steps) == (22, 12)
    assert ddp.memory_bytes["weights"] == one.memory_bytes["weights"]  # every process holds the whole model
    assert any("ddp: every process holds the whole model" in n for n in ddp.notes)
    # FSDP on a CPU: accelerate runs it as DDP, and the plan says so instead of promising sharded memory
    fsdp_cpu = make_plan(tiny_recipe(**{"method": "full", "distributed.strategy": "fsdp"}), num_examples=64, world_size=2)
    assert fsdp_cpu.memory_bytes == ddp.memory_bytes
    assert any("on CPUs it runs as DDP" in n for n in fsdp_cpu.notes)


def test_per_process_memory_under_sharding():
    from tunesmith.recipes import load_recipe
    from tunesmith.train.distributed import per_process_memory

    memory = {"weights": 400, "gradients": 400, "optimizer": 800, "activations": 100}
    fsdp = load_recipe(None, {"distributed.strategy": "fsdp"})
    assert per_process_memory(memory, fsdp, 4, "cuda")[0] == {"weights": 100, "gradients": 100, "optimizer": 200, "activations": 100}
    zero2 = load_recipe(None, {"distributed.strategy": "deepspeed", "distributed.zero_stage": 2, "distributed.offload": True})
    assert per_process_memory(memory, zero2, 4, "cuda")[0] == {"weights": 400, "gradients": 100, "optimizer": 0, "activations": 100}


def test_strategies_that_cannot_run_are_refused_in_a_sentence(tiny_recipe):
    import importlib.util

    from tunesmith.errors import RecipeError
    from tunesmith.train.distributed import check_distributed, strategy_arguments

    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(RecipeError, match="deepspeed package is not installed"):
            check_distributed(tiny_recipe(**{"distributed.strategy": "deepspeed"}), "cuda", 2)
    with pytest.raises(RecipeError, match="QLoRA's 4-bit weights cannot be sharded by fsdp"):
        check_distributed(tiny_recipe(**{"method": "qlora", "distributed.strategy": "fsdp"}), "cuda", 2)
    with pytest.raises(RecipeError, match="PPO runs under ddp only"):
        check_distributed(tiny_recipe(**{"stage": "ppo", "distributed.strategy": "fsdp"}), "cuda", 2)
    fsdp = strategy_arguments(tiny_recipe(**{"distributed.strategy": "fsdp"}), 2, "cuda")
    assert fsdp["fsdp"] is True and fsdp["fsdp_config"]["reshard_after_forward"] is True
    assert strategy_arguments(tiny_recipe(**{"distributed.strategy": "fsdp"}), 2, "cpu") == {}
    assert strategy_arguments(tiny_recipe(**{"distributed.strategy": "fsdp"}), 1, "cuda") == {}


def test_launch_writes_the_accelerate_config_and_says_what_it_runs(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from tunesmith.cli.main import _register, app

    _register()
    monkeypatch.chdir(tmp_path)
    shown = CliRunner().invoke(app, ["launch", "-n", "2", "--fsdp", "--dry-run", "--", "sft", "-c", "r.yaml"])
    assert shown.exit_code == 0, shown.output
    config = yaml.safe_load((tmp_path / ".tunesmith" / "accelerate-2p-fsdp-cpu.yaml").read_text())
    assert config["num_processes"] == 2 and config["num_machines"] == 1 and config["mixed_precision"] == "no"
    assert "-m tunesmith sft -c r.yaml --set distributed.strategy=fsdp" in shown.output
    two = CliRunner().invoke(
        app, ["launch", "-n", "4", "--num-machines", "2", "--machine-rank", "1", "--main-process-ip", "10.0.0.1", "--dry-run", "--", "dpo"]
    )
    multi = yaml.safe_load((tmp_path / ".tunesmith" / "accelerate-8p-cpu.yaml").read_text())
    assert two.exit_code == 0 and (multi["num_processes"], multi["machine_rank"], multi["main_process_ip"]) == (8, 1, "10.0.0.1")
    for args, message in (
        (["launch", "--fsdp", "--deepspeed", "zero2", "--", "sft"], "choose one"),
        (["launch", "--deepspeed", "zero1", "--", "sft"], "zero2 or zero3"),
        (["launch", "--num-machines", "2", "--", "sft"], "--main-process-ip"),
        (["launch", "-n", "2"], "needs the command to run after --"),
    ):
        refused = CliRunner().invoke(app, args)
        assert refused.exit_code != 0 and message in str(refused.exception), (args, refused.output, refused.exception)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["reward", "kto", "orpo", "cpo", "rloo"])
def test_every_other_stage_trains_on_two_processes(tmp_path, stage, tiny_model_dir, pairs_jsonl, unpaired_jsonl, prompts_jsonl):
    """The stages the fast tests above do not launch: each trains on 2 processes for the plan's steps and saves a model."""
    from tunesmith.recipes import load_recipe
    from tunesmith.train.plan import make_plan

    if stage == "rloo":
        recipe = rl_recipe(tmp_path, tiny_model_dir, prompts_jsonl, "rloo", num_generations=2)
    else:
        recipe = write_recipe(
            tmp_path / f"{stage}.yaml",
            stage=stage,
            model={"name": tiny_model_dir, "precision": "fp32"},
            data={"dataset": unpaired_jsonl if stage == "kto" else pairs_jsonl, "eval_dataset": "none", "max_length": 96},
            sample={"prompts": []},
            training={
                "per_device_train_batch_size": 2,
                "gradient_accumulation_steps": 1,
                "max_steps": 4,
                "logging_steps": 1,
                "save_strategy": "steps",
                "save_steps": 2,
                "learning_rate": 1e-3,
                "warmup_ratio": 0.0,
            },
        )
    run = tmp_path / "runs" / stage
    launch([stage, "-c", recipe, "--output-dir", str(run)], tmp_path)
    plan = make_plan(load_recipe(recipe), world_size=2)
    assert max(m["step"] for m in RunDir(run).read_metrics()) == plan.schedule.total_steps
    assert (run / "model" / "adapter_model.safetensors").is_file()
