"""`tunesmith studio`'s JSON API over real run directories of the tiny model: every endpoint, its errors and its guards.

The runs folder holds two finished tiny runs (LoRA with eval and sample prompts; full with a checkpoint), a copy of
the second cut off before its summary (resumable), a run with no checkpoint that stopped (failed) and that one again
inside a pipeline folder. Launch, stop and resume go through the real CLI (`tunesmith train ...`, its parsing, its
recipe checks and its Ctrl-C handling) with the training itself stood in by a fake that writes a run like the
scaffold does, so a launch takes a second, not a model load.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from tunesmith.studio import create_studio_app  # noqa: E402
from tunesmith.studio.launch import Launcher  # noqa: E402

OLD = time.time() - 3600  # an hour ago: not "running" by the age of its metrics


def chats(path: Path) -> str:
    rows = [
        {"messages": [{"role": "user", "content": f"Say hello {i} times."}, {"role": "assistant", "content": "Arr, " + "matey " * (1 + i % 4) + f"{i}."}]}
        for i in range(12)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def make_runs(folder: Path, tiny_model_dir: str) -> Path:
    """Two tiny finished runs plus a resumable, a failed and a nested (pipeline) one, under `folder`."""
    from rich.console import Console

    from tunesmith.recipes import load_recipe
    from tunesmith.train.scaffold import run_stage

    folder.mkdir(parents=True, exist_ok=True)
    data = chats(folder.parent / "chats.jsonl")
    common = {
        "model.name": tiny_model_dir,
        "model.precision": "fp32",
        "data.dataset": data,
        "data.max_length": 48,
        "training.per_device_train_batch_size": 2,
        "training.logging_steps": 1,
        "training.learning_rate": 1e-3,
    }
    quiet = Console(quiet=True)
    run_stage(
        load_recipe(
            None,
            {
                **common,
                "output_dir": str(folder / "sft-lora"),
                "training.max_steps": 4,
                "training.save_strategy": "no",
                "data.eval_dataset": data,
                "training.eval_strategy": "steps",
                "training.eval_steps": 2,
                "sample.prompts": ["hello"],
                "sample.max_new_tokens": 4,
            },
        ),
        console=quiet,
        live=False,
    )
    run_stage(
        load_recipe(
            None,
            {
                **common,
                "output_dir": str(folder / "sft-full"),
                "method": "full",
                "training.max_steps": 3,
                "training.save_strategy": "steps",
                "training.save_steps": 2,
                "training.learning_rate": 3e-3,
                "sample.prompts": [],
            },
        ),
        console=quiet,
        live=False,
    )
    # newest first: sft-full after sft-lora; the copies below are made "older" by their recipe's mtime
    shutil.copytree(folder / "sft-full", folder / "cut-resumable", ignore=shutil.ignore_patterns("model", "summary.json", "README.md"))
    failed = folder / "cut-failed"
    failed.mkdir()
    shutil.copy(folder / "sft-full" / "recipe.yaml", failed / "recipe.yaml")
    rows = (folder / "sft-full" / "metrics.jsonl").read_text().splitlines()[:1]
    (failed / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    shutil.copytree(failed, folder / "pipeline-x" / "stage-a")
    (folder / ".studio-scratch").mkdir()  # dot folders are not runs
    for i, path in enumerate([folder / "cut-resumable", failed, folder / "pipeline-x" / "stage-a"]):
        for file in [path / "recipe.yaml", path / "metrics.jsonl"]:
            os.utime(file, (OLD - i * 60, OLD - i * 60))
    return folder


_MADE: dict[str, Path] = {}


def shared_runs(tmp_path_factory, tiny_model_dir: str) -> Path:
    """The runs folder, made once per session (the browser test reads the same one)."""
    if tiny_model_dir not in _MADE:
        _MADE[tiny_model_dir] = make_runs(tmp_path_factory.mktemp("studio") / "runs", tiny_model_dir)
    return _MADE[tiny_model_dir]


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory, tiny_model_dir, one_thread):
    return shared_runs(tmp_path_factory, tiny_model_dir)


@pytest.fixture(scope="module")
def client(runs_folder):
    with TestClient(create_studio_app(runs_folder)) as c:
        yield c


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- runs, one run, metrics, compare, plots


def test_runs_lists_every_run_with_status_newest_first(client, runs_folder, tiny_model_dir):
    data = client.get("/studio/api/runs").json()
    assert data["root"] == str(runs_folder.resolve())
    by_id = {r["id"]: r for r in data["runs"]}
    assert set(by_id) == {"sft-lora", "sft-full", "cut-resumable", "cut-failed", "pipeline-x/stage-a"}
    assert [r["id"] for r in data["runs"]][:2] == ["sft-full", "sft-lora"]
    assert [by_id[i]["status"] for i in ("sft-lora", "sft-full", "cut-resumable", "cut-failed", "pipeline-x/stage-a")] == [
        "finished",
        "finished",
        "resumable",
        "failed",
        "failed",
    ]
    lora = by_id["sft-lora"]
    summary = json.loads((runs_folder / "sft-lora" / "summary.json").read_text())
    assert lora["stage"] == "sft" and lora["method"] == "lora" and lora["model"] == tiny_model_dir and lora["dataset"].endswith("chats.jsonl")
    assert lora["seconds"] == summary["seconds"] and lora["step"] == 4
    assert lora["metrics"]["train_loss"] == summary["train_loss"] and lora["metrics"]["eval_loss"] == summary["eval_loss"]
    starts = [r["started_ts"] for r in data["runs"]]
    assert starts == sorted(starts, reverse=True)


def test_one_run_has_recipe_answers_diagnostics_and_lineage(client, runs_folder):
    info = client.get("/studio/api/run", params={"id": "sft-lora"}).json()
    assert info["recipe"] == (runs_folder / "sft-lora" / "recipe.yaml").read_text()
    assert [a["prompt"] for a in info["answers"]] == ["hello"] and all("before" in a and "after" in a for a in info["answers"])
    diagnostics = json.loads((runs_folder / "sft-lora" / "diagnostics.json").read_text())["diagnostics"]
    assert info["diagnostics"] == diagnostics and all(d["verdict"] in ("fine", "watch", "bad", "info") for d in info["diagnostics"])
    assert info["lineage"][0]["kind"] == "train" and info["lineage"][-1]["kind"] == "base"
    assert "loss.png" in info["plots"] and info["has_model"]
    assert client.get("/studio/api/run", params={"id": "sft-full"}).json()["checkpoints"] == [2, 3]
    assert client.get("/studio/api/run", params={"id": "cut-resumable"}).json()["status"] == "resumable"


def test_a_run_with_fresh_metrics_and_no_summary_is_running(client, runs_folder):
    metrics = runs_folder / "cut-resumable" / "metrics.jsonl"
    os.utime(metrics)  # written just now: a process outside the studio is training it
    try:
        assert client.get("/studio/api/run", params={"id": "cut-resumable"}).json()["status"] == "running"
        refused = client.post("/studio/api/resume", json={"id": "cut-resumable"})
        assert refused.status_code == 400 and "did not start" in refused.json()["error"]["message"]
    finally:
        os.utime(metrics, (OLD, OLD))
    assert client.get("/studio/api/run", params={"id": "cut-resumable"}).json()["status"] == "resumable"
    nothing = client.post("/studio/api/resume", json={"id": "cut-failed"})  # the CLI's own check and message
    assert nothing.status_code == 400 and "has no complete checkpoint" in nothing.json()["error"]["message"]
    assert client.post("/studio/api/resume", json={"id": "sft-lora"}).status_code == 400  # finished
    assert "only runs launched or resumed from the studio" in client.post("/studio/api/stop", json={"id": "sft-lora"}).json()["error"]["message"]


@pytest.mark.parametrize("bad", ["nope", "../runs", "/etc", "sft-lora/model", ".studio-scratch", ""])
def test_unknown_or_outside_runs_are_404(client, bad):
    for path in ("run", "metrics"):
        resp = client.get(f"/studio/api/{path}", params={"id": bad})
        assert resp.status_code == 404 and "no run" in resp.json()["error"]["message"]


def test_metrics_since_row_n_and_reset_after_a_rewrite(client, runs_folder):
    file = runs_folder / "sft-lora" / "metrics.jsonl"
    whole = client.get("/studio/api/metrics", params={"id": "sft-lora"}).json()
    assert whole["rows"] == rows_of(file) and whole["next"] == len(whole["rows"]) and not whole["reset"]
    assert whole["keys"][:3] == ["loss", "eval_loss", "learning_rate"]
    tail = client.get("/studio/api/metrics", params={"id": "sft-lora", "since": 3, "token": whole["token"]}).json()
    assert tail["rows"] == whole["rows"][3:] and not tail["reset"]
    # a growing file: a line still being written is not a row yet
    run = runs_folder / "cut-failed"
    path = run / "metrics.jsonl"
    before = client.get("/studio/api/metrics", params={"id": "cut-failed"}).json()
    with open(path, "a") as fh:
        fh.write('{"step": 2, "loss": 1.5')
    half = client.get("/studio/api/metrics", params={"id": "cut-failed", "since": before["next"], "token": before["token"]}).json()
    assert half["rows"] == [] and half["next"] == before["next"]
    with open(path, "a") as fh:
        fh.write("}\n")
    grown = client.get("/studio/api/metrics", params={"id": "cut-failed", "since": before["next"], "token": before["token"]}).json()
    assert grown["rows"] == [{"step": 2, "loss": 1.5}] and not grown["reset"]
    # a resume rewrites the file (tmp + rename): a new token, and all rows again
    tmp = path.with_name(".m.tmp")
    tmp.write_text(path.read_text().splitlines()[0] + "\n")
    os.replace(tmp, path)
    again = client.get("/studio/api/metrics", params={"id": "cut-failed", "since": grown["next"], "token": grown["token"]}).json()
    assert again["reset"] and again["rows"] == rows_of(path) and again["token"] != grown["token"]
    os.utime(path, (OLD, OLD))


def test_compare_gives_each_runs_curves_and_metrics(client, runs_folder):
    data = client.get("/studio/api/compare", params=[("id", "sft-lora"), ("id", "sft-full")]).json()
    assert [r["id"] for r in data["runs"]] == ["sft-lora", "sft-full"] and "loss" in data["keys"]
    for run in data["runs"]:
        rows = rows_of(runs_folder / run["id"] / "metrics.jsonl")
        assert run["series"]["loss"] == [[r["step"], r["loss"]] for r in rows if "loss" in r and not r.get("final")]
        assert run["metrics"]["steps"] == json.loads((runs_folder / run["id"] / "summary.json").read_text())["steps"]
    assert "perplexity" in data["runs"][0]["metrics"]  # key_metrics: the diagnostics that matter
    assert client.get("/studio/api/compare", params={"id": "sft-lora"}).status_code == 400
    assert client.get("/studio/api/compare", params=[("id", "sft-lora"), ("id", "nope")]).status_code == 404


def test_plots_and_the_page(client):
    png = client.get("/studio/api/plot", params={"id": "sft-lora", "name": "loss.png"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    for name in ("recipe.yaml", "../sft-full/loss.png", "none.png"):
        assert client.get("/studio/api/plot", params={"id": "sft-lora", "name": name}).status_code == 404
    page = client.get("/studio")
    assert page.status_code == 200 and "studio.js" in page.text and 'id="runs-table"' in page.text
    for asset in ("studio.js", "studio.css"):
        assert client.get(f"/studio/static/{asset}").status_code == 200
    assert client.get("/", follow_redirects=False).headers["location"] == "/studio"


# ---------------------------------------------------------------- chat


def events(resp) -> list[dict]:
    return [json.loads(line.removeprefix("data: ")) for line in resp.text.split("\n\n") if line.strip()]


def test_chat_streams_the_reply_tunesmith_chat_gives(client, runs_folder):
    from tunesmith.infer.chat import ChatSession
    from tunesmith.infer.sampling import SamplingParams
    from tunesmith.models import load_pretrained

    body = {
        "id": "sft-lora",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Arr"}, {"role": "user", "content": "hello"}],
        "temperature": 0.9,
        "top_k": 20,
        "top_p": 0.9,
        "max_tokens": 8,
        "seed": 3,
    }
    resp = client.post("/studio/api/chat", json=body)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
    got = events(resp)
    assert got[-1]["done"] and got[-1]["text"] and len(got) > 2 and "".join(e["delta"] for e in got[:-1]) == got[-1]["text"]
    loaded = load_pretrained(str(runs_folder / "sft-lora"), precision="auto")
    session = ChatSession(loaded.model, loaded.tokenizer, SamplingParams(temperature=0.9, top_k=20, top_p=0.9), 8, None, history=body["messages"][:2], seed=3)
    assert got[-1]["text"] == session.reply("hello")


def test_chat_refuses_bad_settings_and_says_why(client):
    resp = client.post("/studio/api/chat", json={"id": "sft-lora", "messages": [{"role": "user", "content": "x"}], "top_p": 0})
    assert resp.status_code == 400 and "top_p" in resp.json()["error"]["message"]
    assert client.post("/studio/api/chat", json={"id": "nope", "messages": [{"role": "user", "content": "x"}]}).status_code == 404
    assert client.post("/studio/api/chat", json={"id": "sft-lora", "messages": []}).status_code == 400
    last = events(client.post("/studio/api/chat", json={"id": "sft-lora", "messages": [{"role": "assistant", "content": "x"}]}))
    assert "user" in last[-1]["error"]
    nomodel = events(client.post("/studio/api/chat", json={"id": "cut-failed", "messages": [{"role": "user", "content": "x"}]}))
    assert "error" in nomodel[-1]


# ---------------------------------------------------------------- guards: API key, JSON bodies, other sites, Host


def test_api_key_guards_the_api_not_the_page(runs_folder):
    with TestClient(create_studio_app(runs_folder, api_key="sekret")) as c:
        assert c.get("/studio/api/runs").status_code == 401
        assert c.get("/studio/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/studio/api/runs", headers={"Authorization": "Bearer sekret"}).status_code == 200
        assert c.get("/studio").status_code == 200


def test_posts_must_be_json_from_this_site_on_this_host(client, runs_folder):
    assert client.post("/studio/api/validate", content="recipe: x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert client.post("/studio/api/validate", json={"recipe": "stage: sft\n"}, headers={"Origin": "http://evil.example"}).status_code == 403
    assert client.post("/studio/api/validate", content="{", headers={"Content-Type": "application/json"}).status_code == 400
    with TestClient(create_studio_app(runs_folder, host="127.0.0.1"), base_url="http://127.0.0.1:8200") as local:
        assert local.get("/studio/api/runs").status_code == 200
        assert local.get("/studio/api/runs", headers={"Host": "rebound.example:8200"}).status_code == 403


# ---------------------------------------------------------------- validate, launch, stop, resume


def test_validate_gives_the_clis_message(client, runs_folder):
    from tunesmith.errors import RecipeError
    from tunesmith.recipes import load_recipe

    ok = client.post("/studio/api/validate", json={"recipe": "stage: dpo\nmethod: lora\n"}).json()
    assert ok["ok"] and ok["stage"] == "dpo"
    bad = "stage: sft\ntraining:\n  learning_rate: fast\n"
    resp = client.post("/studio/api/validate", json={"recipe": bad})
    assert resp.status_code == 400
    file = runs_folder / ".studio" / "recipes" / "recipe.yaml"
    with pytest.raises(RecipeError) as exc:
        load_recipe(file)
    assert resp.json()["error"]["message"] == exc.value.format() and f"{file}:3" in exc.value.format()
    broken = client.post("/studio/api/validate", json={"recipe": "stage: sft\n  training: [\n"}).json()["error"]["message"]
    assert "not valid YAML" in broken and "recipe.yaml:" in broken


STAND_IN = textwrap.dedent('''
    """The real CLI (`tunesmith train ...`) with the training stood in: a run written as the scaffold writes it."""
    import json, os, sys, time, types

    def run_stage(recipe=None, *, resume=None, stage_name=None, console=None, **kw):
        from tunesmith.recipes import dump_recipe, load_recipe
        from tunesmith.runs.rundir import RunDir, find_resume_point

        if resume:
            run, checkpoint = find_resume_point(resume)
            start, last = int(checkpoint.name.split("-")[1]), int(checkpoint.name.split("-")[1]) + 3
            kept = [l for l in run.metrics_file.read_text().splitlines() if json.loads(l)["step"] <= start]
            tmp = run.path / ".metrics.tmp"
            tmp.write_text("".join(l + "\\n" for l in kept))
            os.replace(tmp, run.metrics_file)
        else:
            run = RunDir.new(recipe.output_dir, recipe.stage)
            run.write_text("recipe.yaml", dump_recipe(recipe))
            start, last = 0, 10**6
        for step in range(start + 1, last + 1):
            with open(run.metrics_file, "a") as fh:
                fh.write(json.dumps({"step": step, "loss": 2.0 / step, "learning_rate": 1e-3}) + "\\n")
            if step == 3:
                (run.path / "checkpoint-3").mkdir()
                (run.path / "checkpoint-3" / "trainer_state.json").write_text("{}")
            time.sleep(0.05)
        run.write_text("summary.json", json.dumps({"stage": "sft", "steps": last, "train_loss": 2.0 / last, "eval_loss": None, "seconds": 1.0}))
        raise SystemExit(0)

    sys.modules["tunesmith.train.scaffold"] = types.SimpleNamespace(run_stage=run_stage)
    from tunesmith.cli.main import run
    sys.exit(run(sys.argv[1:]))
''')


def wait_for(check, timeout=60.0):  # generous: a busy 2-core machine starts the stand-in slowly
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_launch_stop_resume_through_the_cli(tmp_path, tiny_model_dir):
    folder = tmp_path / "runs"
    folder.mkdir()
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    launcher = Launcher(folder, command=[sys.executable, str(script)])
    recipe = f"stage: sft\nmodel:\n  name: {tiny_model_dir}\ntraining:\n  max_steps: 5\n"
    # a studio started in the background by a script runs with SIGINT ignored, and its children inherit that: stop
    # must still reach the run (so must it under a test runner started that way)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with TestClient(create_studio_app(folder, launcher=launcher)) as c:
            bad = c.post("/studio/api/launch", json={"recipe": "stage: sft\nmethod: sideways\n"})
            assert bad.status_code == 400 and "method" in bad.json()["error"]["message"]
            assert c.post("/studio/api/launch", json={"recipe": recipe, "name": "../escape"}).status_code == 400
            job = c.post("/studio/api/launch", json={"recipe": recipe, "name": "first"}).json()
            assert job["run"] == "first" and job["alive"]
            assert json.loads((folder / ".studio.json").read_text())["jobs"][0]["pid"] == job["pid"]

            def status():
                return next((r for r in c.get("/studio/api/runs").json()["runs"] if r["id"] == "first"), {})

            wait_for(lambda: status().get("status") == "running" and status().get("step", 0) >= 4)
            assert c.post("/studio/api/resume", json={"id": "first"}).status_code == 400  # running: stop it first
            assert c.post("/studio/api/launch", json={"recipe": recipe, "name": "first"}).status_code == 400  # the folder is in use
            assert c.post("/studio/api/stop", json={"id": "first"}).json()["pid"] == job["pid"]
            wait_for(lambda: not c.get("/studio/api/jobs").json()["jobs"][0]["alive"])
            wait_for(lambda: c.get("/studio/api/jobs").json()["jobs"][0]["returncode"] is not None)
            ended = c.get("/studio/api/jobs").json()["jobs"][0]
            assert ended["returncode"] == 130, ended  # the CLI's exit status for Ctrl-C
            assert status()["status"] == "resumable"  # stopped by us: not "running" though its metrics are fresh
            assert c.post("/studio/api/stop", json={"id": "first"}).status_code == 400
            steps_before = [r["step"] for r in rows_of(folder / "first" / "metrics.jsonl")]
            assert steps_before[-1] >= 4
            resumed = c.post("/studio/api/resume", json={"id": "first"}).json()
            assert resumed["action"] == "resume" and resumed["pid"] != job["pid"]
            wait_for(lambda: status().get("status") == "finished")
            assert [r["step"] for r in rows_of(folder / "first" / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
            assert c.post("/studio/api/resume", json={"id": "first"}).status_code == 400  # finished
            wait_for(lambda: c.get("/studio/api/run", params={"id": "first"}).json()["job"]["returncode"] is not None)
            info = c.get("/studio/api/run", params={"id": "first"}).json()
            assert info["job"]["action"] == "resume" and info["job"]["returncode"] == 0
            # a studio started again knows the jobs from .studio.json
            assert [j["run"] for j in Launcher(folder).jobs()] == ["first"]
    finally:
        launcher.stop_all()
        signal.signal(signal.SIGINT, previous)


@pytest.mark.slow  # a training subprocess (~10 s); the fast suite keeps launch, stop and resume through the CLI
def test_a_real_launch_trains_a_tiny_run(tmp_path, tiny_model_dir, monkeypatch):
    """The studio's own command line, not a stand-in: `tunesmith train -c ... --set output_dir=...` trains and finishes."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the child's torch: one thread on a busy machine
    folder = tmp_path / "runs"
    data = chats(tmp_path / "chats.jsonl")
    recipe = textwrap.dedent(f"""\
        stage: sft
        model:
          name: {tiny_model_dir}
          precision: fp32
        data:
          dataset: {data}
          max_length: 48
        sample:
          prompts: []
        training:
          max_steps: 2
          logging_steps: 1
          save_strategy: "no"
          per_device_train_batch_size: 2
        """)
    app = create_studio_app(folder)
    with TestClient(app) as c:
        job = c.post("/studio/api/launch", json={"recipe": recipe}).json()
        assert job["run"].startswith("sft-") and job["alive"]
        wait_for(lambda: c.get("/studio/api/jobs").json()["jobs"][0]["returncode"] is not None, timeout=90)
        ended = c.get("/studio/api/jobs").json()["jobs"][0]
        assert ended["returncode"] == 0, ended["log"]
        assert "done in" in ended["log"]
        run = next(r for r in c.get("/studio/api/runs").json()["runs"] if r["id"] == job["run"])
        assert run["status"] == "finished" and run["step"] == 2
        rows = c.get("/studio/api/metrics", params={"id": job["run"]}).json()["rows"]
        assert rows == rows_of(folder / job["run"] / "metrics.jsonl") and [r["step"] for r in rows if "loss" in r] == [1, 2]
        launched = app.state.studio_launcher.jobs()[0]["command"]
        assert launched[1:5] == ["-m", "tunesmith", "train", "-c"] and launched[-2:] == ["--set", f"output_dir={folder.resolve() / job['run']}"]


def test_the_studio_command(tmp_path, monkeypatch, capsys):
    import uvicorn

    from tunesmith.cli.main import run

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    assert run(["studio", "--runs", str(tmp_path / "r"), "--port", "8299"]) == 0
    assert served["host"] == "127.0.0.1" and served["port"] == 8299 and (tmp_path / "r").is_dir()
    out = capsys.readouterr()
    assert "http://127.0.0.1:8299/studio" in out.out and "warning" not in out.err
    assert run(["studio", "--runs", str(tmp_path / "r"), "--host", "0.0.0.0"]) == 0
    assert "without --api-key" in capsys.readouterr().err
    assert run(["studio", "--runs", str(tmp_path / "r"), "--host", "0.0.0.0", "--api-key", "k"]) == 0
    assert "API key required" in capsys.readouterr().out
    with TestClient(served["app"]) as c:
        assert c.get("/studio/api/runs").status_code == 401


def test_the_studio_rides_on_the_serve_app(runs_folder):
    """One process: the studio's routes added to `tunesmith serve`'s OpenAI-compatible app, each keeping its own guard."""
    import types

    from tunesmith.serve import create_app
    from tunesmith.studio import add_studio

    engine = types.SimpleNamespace(name="tiny", created=0)
    app = add_studio(create_app(engine, api_key="k"), runs_folder, api_key="k")
    with TestClient(app) as c:
        assert c.get("/v1/models").status_code == 401 and c.get("/studio/api/runs").status_code == 401
        auth = {"Authorization": "Bearer k"}
        assert c.get("/v1/models", headers=auth).json()["data"][0]["id"] == "tiny"
        assert len(c.get("/studio/api/runs", headers=auth).json()["runs"]) == 5


# ---------------------------------------------------------------- plan, inspector, rollouts


def test_plan_is_what_tunesmith_plan_gives_for_the_run(client, runs_folder):
    from tunesmith.recipes import load_recipe
    from tunesmith.train.plan import make_plan

    shown = client.get("/studio/api/plan", params={"id": "sft-lora"}).json()
    assert shown == json.loads(json.dumps(make_plan(load_recipe(runs_folder / "sft-lora" / "recipe.yaml")).to_json()))
    assert client.get("/studio/api/plan", params={"id": "nope"}).status_code == 404


def test_inspect_is_the_inspectors_walk_on_the_runs_model(client, runs_folder):
    from tunesmith.infer.inspect import walk
    from tunesmith.infer.sampling import SamplingParams
    from tunesmith.models import load_pretrained

    body = {"id": "sft-lora", "prompt": "hello", "temperature": 0.8, "top_k": 20, "top_p": 0.9, "rows": 5}
    shown = client.post("/studio/api/inspect", json=body, headers={"Origin": "http://testserver"})
    assert shown.status_code == 200, shown.text
    loaded = load_pretrained(str(runs_folder / "sft-lora"), precision="auto")
    expected = walk(loaded.model, loaded.tokenizer, "hello", SamplingParams(temperature=0.8, top_k=20, top_p=0.9), steps=1, rows=5, chat=True, seed=0)
    assert shown.json()["steps"] == json.loads(json.dumps(expected))
    bad = client.post("/studio/api/inspect", json={**body, "top_p": 0}, headers={"Origin": "http://testserver"})
    assert bad.status_code == 400 and "top_p" in bad.json()["error"]["message"]


def test_rollouts_of_an_rl_run_by_step(client, runs_folder):
    run = runs_folder / "sft-lora"
    record = {
        "step": 3,
        "weights": {"r": 1.0},
        "groups": [{"prompt": "2+2?", "mean": 0.5, "std": 0.7, "completions": [{"completion": "4", "rewards": {"r": 1.0}, "reward": 1.0, "advantage": 0.7}]}],
    }
    (run / "rollouts.jsonl").write_text(json.dumps({**record, "step": 1}) + "\n" + json.dumps(record) + "\n" + '{"step": 5, "gro')  # the last line half written
    try:
        newest = client.get("/studio/api/rollouts", params={"id": "sft-lora"}).json()
        assert newest == {"steps": [1, 3], "record": record}
        assert client.get("/studio/api/rollouts", params={"id": "sft-lora", "step": 1}).json()["record"]["step"] == 1
        missing = client.get("/studio/api/rollouts", params={"id": "sft-lora", "step": 9})
        assert missing.status_code == 404 and "step 9" in missing.json()["error"]["message"]
    finally:
        (run / "rollouts.jsonl").unlink()
    assert client.get("/studio/api/rollouts", params={"id": "sft-full"}).status_code == 404
