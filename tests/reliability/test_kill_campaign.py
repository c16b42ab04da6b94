"""A kill -9 campaign: training is SIGKILLed from outside at chosen and random points, resumed, and must end exactly
where an uninterrupted run of the same recipe ends.

Each case runs `python -m tunesmith <stage>` as a subprocess on the tiny random Llama (fp32, CPU, one thread) and kills
it either at a fault point (TUNESMITH_FAULT, src/tunesmith/runs/faults.py: the process SIGKILLs itself at that exact
place: mid-checkpoint, mid-final-model, ...) or from this process after a seeded random delay once training has
started. After every kill it checks what a crash must never do:

- choose an incomplete checkpoint: `find_resume_point` takes only a complete one (every file written, trainer state
  a JSON object), and every checkpoint counted complete holds the same weights as the reference run's;
- lose an earlier result: recipe.yaml, before.json, the metrics rows written so far (equal to the reference's) and any
  model/ already there survive (model/ is either absent or the complete final model);

then resumes with `--resume RUN_DIR` (or, killed before the first checkpoint, gets the sentence saying there is nothing
to resume and starts again) and compares the end with the reference: every weight tensor in model/ (max |difference|
<= TOLERANCE), the final train loss in summary.json and the per-step losses in metrics.jsonl (each step once), and no
incomplete checkpoint left behind. The measured differences are printed (run with -s) and quoted in the README.

One kill case (and four in-process checks of the pieces) run in the fast suite; the whole campaign (15 fault points
over LoRA SFT, full SFT and LoRA DPO, a double and a triple kill among them, and 6 seeded random delays) is marked slow: pytest tests/reliability/test_kill_campaign.py -m "slow or not slow".
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tunesmith.runs.rundir import RunDir, find_resume_point

TOLERANCE = 1e-6  # max |a - b| over every weight; fp32 on CPU with the same data order and RNG state measures 0.0
SEED = 20240611  # the random kill delays (printed with each case)
TIMEOUT = 240  # one subprocess

QUESTIONS = ["What is {a} plus {b}?", "Name a colour like {a}.", "Count from {a} to {b}.", "Say hello {a} times."]


def _chat(i: int) -> dict:
    answer = "Arr, " + " ".join(["matey"] * (1 + i % 5)) + f" {i}."
    return {"messages": [{"role": "user", "content": QUESTIONS[i % 4].format(a=i, b=i + 3)}, {"role": "assistant", "content": answer}]}


def _pair(i: int) -> dict:
    prompt = [{"role": "user", "content": QUESTIONS[i % 4].format(a=i, b=i + 3)}]
    chosen = "Arr, " + " ".join(["matey"] * (1 + i % 5)) + f" {i}."
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}], "rejected": [{"role": "assistant", "content": f"The answer is {i}."}]}


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ------------------------------------------------------------------ the recipes (each run: ~10 s here, mostly start-up)


def recipes(tiny: str, data: Path) -> dict[str, dict]:
    chats, chats_eval = _jsonl(data / "chats.jsonl", [_chat(i) for i in range(16)]), _jsonl(data / "chats_eval.jsonl", [_chat(i) for i in range(100, 102)])
    pairs, pairs_eval = _jsonl(data / "pairs.jsonl", [_pair(i) for i in range(12)]), _jsonl(data / "pairs_eval.jsonl", [_pair(i) for i in range(100, 102)])
    training = {
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_steps": 2,
        "warmup_ratio": 0.0,
        "seed": 7,
    }
    common = {"model": {"name": tiny, "precision": "fp32"}, "sample": {"prompts": [], "diagnostics": False}}
    return {
        # LoRA with dropout (the RNG state must come back), 3 checkpoints of which 2 are kept (rotation), an eval split
        # (a final eval row in metrics.jsonl)
        "sft-lora": {
            "stage": "sft",
            "method": "lora",
            **common,
            "lora": {"lora_dropout": 0.1},
            "data": {"dataset": chats, "eval_dataset": chats_eval, "max_length": 40},
            "training": {**training, "max_steps": 6, "save_total_limit": 2, "learning_rate": 5e-3},
        },
        "sft-full": {
            "stage": "sft",
            "method": "full",
            **common,
            "data": {"dataset": chats, "eval_dataset": "none", "max_length": 40},
            "training": {**training, "max_steps": 4, "save_total_limit": None, "learning_rate": 1e-3},
        },
        # the eval split is measured before training (before.json, kept for resume) and after (changes.json)
        "dpo-lora": {
            "stage": "dpo",
            "method": "lora",
            **common,
            "lora": {"lora_dropout": 0.1},
            "data": {"dataset": pairs, "eval_dataset": pairs_eval, "max_length": 64},
            "training": {**training, "max_steps": 4, "save_total_limit": None, "learning_rate": 5e-3},
        },
    }


def env(fault: str | None = None) -> dict:
    e = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    e.pop("TUNESMITH_FAULT", None)
    if fault:
        e["TUNESMITH_FAULT"] = fault
    return e


@dataclass
class Ended:
    rc: int
    out: str
    killed: bool = field(init=False)

    def __post_init__(self):
        self.killed = self.rc == -signal.SIGKILL


def tunesmith(args: list[str], log: Path, fault: str | None = None, kill_after: float | None = None, started: Path | None = None) -> Ended:
    """Run one command; with `kill_after`, SIGKILL it that many seconds after `started` (a file) appears."""
    with open(log, "a") as fh:
        fh.write(f"\n$ TUNESMITH_FAULT={fault or ''} tunesmith {' '.join(args)}\n")
        fh.flush()
        proc = subprocess.Popen([sys.executable, "-m", "tunesmith", *args], stdout=fh, stderr=subprocess.STDOUT, env=env(fault), cwd=log.parent)
        if kill_after is not None:
            deadline = time.monotonic() + TIMEOUT
            while proc.poll() is None and not started.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            if proc.poll() is None:
                time.sleep(kill_after)
                proc.send_signal(signal.SIGKILL)
        try:
            rc = proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    return Ended(rc, log.read_text())


def squeeze(text: str) -> str:
    """Without whitespace: the console wraps long lines anywhere."""
    return "".join(text.split())


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update({f"{f.name}:{k}": v for k, v in load_file(f).items()})
    assert tensors, f"no weights in {folder}"
    return tensors


def max_difference(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert sorted(wa) == sorted(wb)
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


def step_losses(run: Path) -> list[tuple[int, float]]:
    return [(m["step"], m["loss"]) for m in RunDir(run).read_metrics() if "loss" in m and not m.get("final")]


TRAINER_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json")


# ------------------------------------------------------------------ the reference runs (uninterrupted), once per module


class Campaign:
    def __init__(self, root: Path, tiny: str):
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        self.recipes = recipes(tiny, root / "data")
        self.refs: dict[str, Path] = {}
        self.figures: list[dict] = []

    def recipe_file(self, name: str) -> Path:
        path = self.root / f"{name}.yaml"
        if not path.exists():
            path.write_text(yaml.safe_dump(self.recipes[name], sort_keys=False))
        return path

    def start_args(self, name: str, run: Path) -> list[str]:
        return [self.recipes[name]["stage"], "-c", str(self.recipe_file(name)), "--output-dir", str(run)]

    def reference(self, name: str) -> Path:
        if name not in self.refs:
            run = self.root / f"ref-{name}"
            t0 = time.perf_counter()
            ended = tunesmith(self.start_args(name, run), self.root / f"ref-{name}.log")
            assert ended.rc == 0, ended.out[-3000:]
            self.refs[name] = run
            self.ref_seconds = time.perf_counter() - t0
            assert len(set(loss for _, loss in step_losses(run))) > 1  # the loss moves: equality means something
        return self.refs[name]


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, tiny_model_dir):
    c = Campaign(tmp_path_factory.mktemp("kill-campaign"), tiny_model_dir)
    yield c
    if c.figures:
        print("\nkill campaign:", *(json.dumps(f) for f in c.figures), sep="\n  ")


# ------------------------------------------------------------------ what a kill may and may not leave


def check_after_kill(c: Campaign, name: str, run: Path, ref: Path) -> None:
    """Nothing written before the kill is lost or damaged, and no incomplete checkpoint would be chosen."""
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    assert recipe["output_dir"] == str(run)
    assert {k: v for k, v in recipe.items() if k != "output_dir"} == {
        k: v for k, v in yaml.safe_load((ref / "recipe.yaml").read_text()).items() if k != "output_dir"
    }
    # the metrics rows so far: each step once, in order, equal to the reference's (a torn last line may follow)
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            assert line == (run / "metrics.jsonl").read_text().splitlines()[-1], "only the last line may be torn"
    got = [(m["step"], m["loss"]) for m in rows if "loss" in m and not m.get("final")]
    assert got == step_losses(ref)[: len(got)], (got, step_losses(ref))
    if (ref / "before.json").exists() and (run / "before.json").exists():
        assert (run / "before.json").read_text() == (ref / "before.json").read_text()
    if (run / "model").exists():  # a final model is all there, or not there
        assert max_difference(run / "model", ref / "model") <= TOLERANCE
    elif (run / ".model.old").exists():  # killed while replacing model/: the old one is kept aside, whole
        assert max_difference(run / ".model.old", ref / "model") <= TOLERANCE
    # every checkpoint counted complete is complete, and the one --resume would take is the newest of them
    complete = RunDir(run).checkpoints()
    for step, folder in complete:
        assert all((folder / f).is_file() for f in TRAINER_FILES), sorted(p.name for p in folder.iterdir())
        assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == step
        if (ref / folder.name).exists():
            assert max_difference(folder, ref / folder.name) <= TOLERANCE, folder.name
    if complete:
        assert find_resume_point(str(run))[1] == complete[-1][1]


def resume_to_end(c: Campaign, name: str, run: Path, log: Path, kills: list[str]) -> Path:
    """Resume (as often as the case's later faults say) and return the run that completed."""
    for fault in kills:
        ended = tunesmith([c.recipes[name]["stage"], "--resume", str(run)], log, fault=fault)
        assert ended.killed, f"{fault} did not fire:\n{ended.out[-3000:]}"
        check_after_kill(c, name, run, c.reference(name))
    if (run / "summary.json").exists():
        return run  # the run had finished before the kill landed
    if not RunDir(run).checkpoints():
        # killed before its first complete checkpoint: --resume says there is nothing to resume, and a new run the same
        # directory says how to start again
        ended = tunesmith([c.recipes[name]["stage"], "--resume", str(run)], log)
        assert ended.rc == 2 and all(s in squeeze(ended.out) for s in ("nocompletecheckpoint", "startanewrun")), ended.out[-2000:]
        ended = tunesmith(c.start_args(name, run), log)
        assert ended.rc == 2 and squeeze("stopped before its first complete checkpoint") in squeeze(ended.out), ended.out[-2000:]
        shutil.rmtree(run)
        ended = tunesmith(c.start_args(name, run), log)
    else:
        ended = tunesmith([c.recipes[name]["stage"], "--resume", str(run)], log)
    assert ended.rc == 0, ended.out[-3000:]
    return run


def landed(run: Path) -> str:
    """Where a kill landed, from what it left."""
    if (run / "summary.json").exists():
        return "after the end (the run had finished)"
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []:
        try:
            rows += [json.loads(line)["step"]] if '"loss"' in line else []
        except json.JSONDecodeError:
            pass  # a torn last row
    complete = [n for n, _ in RunDir(run).checkpoints()]
    incomplete = [p.name for p in RunDir(run).incomplete_checkpoints()]
    final = "model/ written" if (run / "model").exists() else ".model.tmp partly written" if (run / ".model.tmp").exists() else "no model/"
    return f"{len(rows)} steps logged, complete checkpoints {complete}, incomplete {incomplete}, {final}"


def compare_with_reference(c: Campaign, name: str, run: Path, ref: Path, label: str, seconds: float, where: str = "") -> None:
    diff = max_difference(run / "model", ref / "model")
    summary, ref_summary = json.loads((run / "summary.json").read_text()), json.loads((ref / "summary.json").read_text())
    got, want = step_losses(run), step_losses(ref)
    c.figures.append(
        {
            "case": label,
            "landed": where,
            "max_weight_diff": diff,
            "max_step_loss_diff": max(abs(a - b) for (_, a), (_, b) in zip(got, want)),
            "train_loss": summary["train_loss"],
            "reference_train_loss": ref_summary["train_loss"],
            "seconds": round(seconds, 1),
        }
    )
    assert diff <= TOLERANCE, (label, diff)
    assert abs(summary["train_loss"] - ref_summary["train_loss"]) <= TOLERANCE, (summary, ref_summary)
    assert summary["steps"] == ref_summary["steps"]
    assert [s for s, _ in got] == [s for s, _ in want] == sorted({s for s, _ in want})  # each step once
    assert max(abs(a - b) for (_, a), (_, b) in zip(got, want)) <= TOLERANCE, (got, want)
    finals = [m for m in RunDir(run).read_metrics() if m.get("final")]
    assert len(finals) == len([m for m in RunDir(ref).read_metrics() if m.get("final")])  # the end-of-run eval row once
    if "eval_loss" in ref_summary and ref_summary["eval_loss"] is not None:
        assert abs(summary["eval_loss"] - ref_summary["eval_loss"]) <= TOLERANCE
    for kept in ("before.json", "changes.json"):
        if (ref / kept).exists():
            assert (run / kept).exists(), kept
    if (ref / "before.json").exists():
        assert (run / "before.json").read_text() == (ref / "before.json").read_text()
    assert not RunDir(run).incomplete_checkpoints(), RunDir(run).incomplete_checkpoints()
    # the reference's checkpoints, all complete (a run resumed from its last checkpoint rotates nothing, so it may keep one more)
    assert {f.name for _, f in RunDir(ref).checkpoints()} <= {f.name for _, f in RunDir(run).checkpoints()}
    assert not any((run / n).exists() for n in (".model.tmp", ".model.old", ".metrics.jsonl.tmp"))


def run_case(c: Campaign, name: str, label: str, first: str | None, later: tuple[str, ...] = (), delay: float | None = None) -> None:
    ref = c.reference(name)
    t0 = time.perf_counter()
    run, log = c.root / label, c.root / f"{label}.log"
    ended = tunesmith(c.start_args(name, run), log, fault=first, kill_after=delay, started=run / "metrics.jsonl")
    if delay is None:
        assert ended.killed, f"{first} did not fire:\n{ended.out[-3000:]}"
    else:
        assert ended.killed or ended.rc == 0, ended.out[-3000:]  # a late random kill may find the run finished
    where = landed(run)
    if ended.killed:
        check_after_kill(c, name, run, ref)
    resume_to_end(c, name, run, log, list(later))
    compare_with_reference(c, name, run, ref, label, time.perf_counter() - t0, where)


# ------------------------------------------------------------------ the fast case


@pytest.mark.slow  # three runs in subprocesses (~30 s); the fast suite keeps the atomic writes' own tests (test_rundir)
def test_kill_mid_checkpoint_write_then_resume_equals_uninterrupted(campaign):
    """SIGKILL while checkpoint-4 is half written (weights there, optimizer/RNG/trainer state not): resume takes
    checkpoint-2, removes the half one, and ends bit for bit where the uninterrupted run ends."""
    run_case(campaign, "sft-lora", "fast-sft-lora-mid-checkpoint", "checkpoint-weights:2")
    assert squeeze("removed checkpoint-4: it was cut off while being saved") in squeeze((campaign.root / "fast-sft-lora-mid-checkpoint.log").read_text())


# ------------------------------------------------------------------ the pieces, in-process (what each kill point relies on)


def _run_dir(tmp_path: Path, steps=(2, 4)) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    (run.path / "recipe.yaml").write_text("stage: sft\n")
    for step in steps:
        (run.path / f"checkpoint-{step}").mkdir()
        (run.path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return run


def test_a_checkpoint_still_being_saved_is_never_chosen(tmp_path):
    run = _run_dir(tmp_path)
    run.begin_checkpoint(run.path / "checkpoint-6")  # as the guard does before transformers writes anything
    (run.path / "checkpoint-6" / "trainer_state.json").write_text('{"global_step": 6, "log_hi')  # torn by the kill
    assert [n for n, _ in run.checkpoints()] == [2, 4]
    assert find_resume_point(str(run.path))[1].name == "checkpoint-4"
    from rich.console import Console

    from tunesmith.errors import TunesmithError
    from tunesmith.train.scaffold import open_run

    # named by hand: a marked checkpoint is refused even when its trainer_state.json happens to be whole
    (run.path / "checkpoint-6" / "trainer_state.json").write_text('{"global_step": 6}')
    with pytest.raises(TunesmithError, match="cut off while being saved"):
        open_run(None, str(run.path / "checkpoint-6"), "sft", Console(quiet=True))
    assert run.drop_incomplete_checkpoints() == [run.path / "checkpoint-6"]
    # a save into a step's leftover starts clean; once ended, it counts
    (run.path / "checkpoint-8").mkdir()
    (run.path / "checkpoint-8" / "stale").write_text("x")
    run.begin_checkpoint(run.path / "checkpoint-8")
    assert not (run.path / "checkpoint-8" / "stale").exists()
    (run.path / "checkpoint-8" / "trainer_state.json").write_text("{}")
    assert 8 not in [n for n, _ in run.checkpoints()]
    run.end_checkpoint(run.path / "checkpoint-8")
    assert [n for n, _ in run.checkpoints()] == [2, 4, 8]


def test_a_kill_between_the_final_renames_loses_nothing(tmp_path):
    run = RunDir(tmp_path)
    run.save_final("model", lambda p: (p.mkdir(), (p / "weights").write_text("v1")))
    # killed after the old model/ was moved aside and before the new one went in
    os.replace(tmp_path / "model", tmp_path / ".model.old")
    (tmp_path / ".model.tmp").mkdir()
    seen = []
    run.save_final("model", lambda p: (seen.append((tmp_path / "model" / "weights").read_text()), p.mkdir(), (p / "weights").write_text("v2")))
    assert seen == ["v1"]  # put back before the new save started
    assert (tmp_path / "model" / "weights").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_metrics_on_resume_drop_a_torn_row_and_the_killed_runs_final_row(tmp_path):
    from tunesmith.train.callbacks import MetricsLog

    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "eval_loss": 2.5, "final": True}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 3, "lo')
    MetricsLog(path, resume_step=2)
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows[:2]
    assert not (tmp_path / ".metrics.jsonl.tmp").exists()


def test_a_new_run_in_a_directory_killed_before_its_first_checkpoint_says_how_to_start_again(tmp_path):
    from tunesmith.errors import TunesmithError

    run = _run_dir(tmp_path, steps=())
    (run.path / "checkpoint-2").mkdir()  # cut off mid-save
    with pytest.raises(TunesmithError) as exc:
        RunDir.new(str(run.path), "sft")
    assert "rm -r" in exc.value.hint and "--resume" not in exc.value.hint
    (run.path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    with pytest.raises(TunesmithError) as exc:
        RunDir.new(str(run.path), "sft")
    assert "--resume" in exc.value.hint


# ------------------------------------------------------------------ the campaign

_rng = random.Random(SEED)
RANDOM = [(name, round(_rng.uniform(0.0, 0.6), 2)) for name in ("sft-lora", "sft-lora", "sft-lora", "sft-full", "dpo-lora", "dpo-lora")]

KILLS = [
    # (recipe, first fault, faults of the resumed runs that are killed again)
    ("sft-lora", "step:1", ()),  # before the first checkpoint: nothing to resume, the sentence says so; start again
    ("sft-lora", "checkpoint-weights:1", ()),  # the first checkpoint half written: still nothing to resume
    ("sft-lora", "checkpoint-rng:2", ()),  # checkpoint-4 has weights and optimizer, no RNG state or trainer state
    ("sft-lora", "checkpoint-state:2", ()),  # checkpoint-4's trainer_state.json torn half way
    ("sft-lora", "checkpoint-saved:3", ()),  # checkpoint-6 complete, checkpoint-2 not yet rotated away
    ("sft-lora", "metrics-line:5", ()),  # a torn last row in metrics.jsonl
    ("sft-lora", "final-model", ()),  # the final model half written (.model.tmp: weights, no tokenizer)
    ("sft-lora", "final-rename", ()),  # .model.tmp complete, not renamed to model/
    ("sft-lora", "summary", ("final-swap",)),  # model/ there, summary.json not; the resume killed while replacing model/
    ("sft-lora", "step:5", ("metrics-rewrite", "checkpoint-weights:1")),  # a triple kill: the resume's metrics rewrite, then its first save
    ("sft-full", "checkpoint-weights:2", ()),
    ("sft-full", "final-model", ()),
    ("dpo-lora", "checkpoint-rng:2", ()),
    ("dpo-lora", "step:3", ("final-model",)),  # a double kill
    ("dpo-lora", "summary", ()),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, first, later", KILLS, ids=[f"{n}-{f.replace(':', '')}" + "".join(f"-then-{x.replace(':', '')}" for x in later) for n, f, later in KILLS]
)
def test_kill_point(campaign, name, first, later):
    run_case(campaign, name, f"{name}-{first.replace(':', '')}-{len(later)}", first, later)


@pytest.mark.slow
@pytest.mark.parametrize("name, delay", RANDOM, ids=[f"{n}-seed{SEED}-{i}-after{d}s" for i, (n, d) in enumerate(RANDOM)])
def test_random_kill(campaign, name, delay, request):
    """SIGKILL from outside `delay` s (seeded) after the first metrics row appeared, wherever that lands."""
    run_case(campaign, name, f"random-{request.node.callspec.id}", None, delay=delay)
