"""Start, stop and resume training runs from the studio, through the CLI itself (never by writing a run directory).

    launcher = Launcher(root)
    launcher.validate(text)            -> the Recipe, or RecipeError with the CLI's message (file:line)
    launcher.launch(text, name=None)   -> job: `tunesmith train -c <recipe> --set output_dir=<root>/<name>`
    launcher.stop(run_id)              -> SIGINT, as Ctrl-C in a terminal (the CLI keeps the checkpoints written so far)
    launcher.resume(run_id)            -> job: `tunesmith train --resume <root>/<run_id>`

The studio's own files live beside the runs, never inside one: <root>/.studio.json (the jobs: pid, run, command)
and <root>/.studio/ (the recipes as launched and each job's console log). A studio started again later still
knows the runs its predecessor launched (and whether their processes live).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from tunesmith.errors import RecipeError, TunesmithError

STATE = ".studio.json"
FOLDER = ".studio"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped by a parent that is gone) is not alive
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


class Launcher:
    """The jobs the studio started. `command`: how to call the CLI (tests put a stand-in here)."""

    def __init__(self, root: str | Path, command: list[str] | None = None):
        self.root = Path(root).resolve()
        self.command = list(command or [sys.executable, "-m", "tunesmith"])
        self.procs: dict[int, subprocess.Popen] = {}
        self.lock = threading.Lock()

    # ------------------------------------------------------------ state

    @property
    def state_file(self) -> Path:
        return self.root / STATE

    def jobs(self) -> list[dict]:
        try:
            jobs = json.loads(self.state_file.read_text())["jobs"]
        except (OSError, ValueError, KeyError, TypeError):
            return []
        for job in jobs:
            job["alive"] = self._alive(job)
            if not job["alive"] and job.get("returncode") is None and job["pid"] in self.procs:
                job["returncode"] = self.procs[job["pid"]].returncode
        return jobs

    def _alive(self, job: dict) -> bool:
        proc = self.procs.get(job["pid"])
        if proc is not None:
            return proc.poll() is None
        return pid_alive(job["pid"]) and job.get("returncode") is None

    def _save(self, jobs: list[dict]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        keep = [{k: v for k, v in j.items() if k != "alive"} for j in jobs][-200:]
        tmp = self.state_file.with_name(f".{STATE}.tmp")
        tmp.write_text(json.dumps({"jobs": keep}, indent=2) + "\n")
        os.replace(tmp, self.state_file)

    def run_states(self) -> dict[str, bool]:
        """Run id -> whether a job of ours lives for it (the newest job of each run)."""
        return {j["run"]: j["alive"] for j in sorted(self.jobs(), key=lambda j: j["started"])}

    def log_tail(self, job: dict, chars: int = 4000) -> str:
        try:
            return Path(job["log"]).read_text(encoding="utf-8", errors="replace")[-chars:]
        except (OSError, KeyError):
            return ""

    # ------------------------------------------------------------ actions

    def validate(self, text: str, name: str = "recipe.yaml"):
        """The recipe as `tunesmith train -c` would read it: the same checks, the same messages (file:line)."""
        from tunesmith.recipes import load_recipe

        folder = self.root / FOLDER / "recipes"
        folder.mkdir(parents=True, exist_ok=True)
        file = folder / name
        file.write_text(text, encoding="utf-8")
        return load_recipe(file), file

    def _start(self, args: list[str], run_id: str, action: str, recipe_file: Path | None = None) -> dict:
        logs = self.root / FOLDER / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{run_id.replace('/', '__')}-{action}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(log, "ab") as out:
            # a session of its own: a Ctrl-C meant for the studio does not stop the training (stop sends it one); and
            # Ctrl-C's default action restored, since a studio started in the background (`tunesmith studio &` in a
            # script) runs with SIGINT ignored, which its children inherit: stop would then never reach the run
            proc = subprocess.Popen(
                [*self.command, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                env=env,
                start_new_session=True,
                preexec_fn=_interruptible,
            )
        self.procs[proc.pid] = proc
        job = {
            "pid": proc.pid,
            "run": run_id,
            "action": action,
            "command": [*self.command, *args],
            "log": str(log),
            "recipe": str(recipe_file) if recipe_file else None,
            "started": time.time(),
            "returncode": None,
        }
        jobs = [j for j in self.jobs() if not (j["run"] == run_id and not j["alive"])]
        self._save([*jobs, job])
        threading.Thread(target=self._reap, args=(proc, run_id), daemon=True).start()
        return {**job, "alive": True}

    def _reap(self, proc: subprocess.Popen, run_id: str) -> None:
        code = proc.wait()
        with self.lock:
            jobs = self.jobs()
            for job in jobs:
                if job["pid"] == proc.pid:
                    job["returncode"] = code
            self._save(jobs)

    def launch(self, text: str, name: str | None = None) -> dict:
        """Validate `text`, then train it into <root>/<name> (default <stage>-<time>) with the CLI."""
        with self.lock:
            if name is not None and not NAME.match(name):
                raise RecipeError(f"the run name '{name}' is not a plain folder name", hint="letters, digits, '.', '_' and '-'")
            recipe, _ = self.validate(text)
            taken = {j["run"] for j in self.jobs() if j["alive"]}  # a launch still loading has no directory yet
            if name is None:
                stem = f"{recipe.stage}-{time.strftime('%Y%m%d-%H%M%S')}"
                name = next(n for n in (stem, *(f"{stem}-{i}" for i in range(2, 1000))) if n not in taken and not (self.root / n).exists())
            target = self.root / name
            if name in taken or (target.exists() and any(target.iterdir())):
                raise TunesmithError(
                    f"the run directory '{target}' already exists and is not empty"
                    if name not in taken
                    else f"a run is already being launched into '{target}'",
                    hint="choose another name, or resume that run",
                )
            _, file = self.validate(text, f"{name}.yaml")  # the file the CLI reads, one per run
            return self._start(["train", "-c", str(file), "--set", f"output_dir={target}"], name, "launch", file)

    def _job_of(self, run_id: str) -> dict | None:
        return next((j for j in reversed(self.jobs()) if j["run"] == run_id and j["alive"]), None)

    def stop(self, run_id: str) -> dict:
        """Ctrl-C for the run's process: the CLI stops and keeps its checkpoints (resume later)."""
        with self.lock:
            job = self._job_of(run_id)
            if job is None:
                raise TunesmithError(
                    f"no running job of this studio writes '{run_id}'", hint="only runs launched or resumed from the studio can be stopped here"
                )
            os.kill(job["pid"], signal.SIGINT)
            return job

    def resume(self, run_id: str) -> dict:
        """`tunesmith train --resume <run>`: refused while it runs, or when it has nothing to resume (the CLI's message)."""
        from tunesmith.runs.rundir import find_resume_point
        from tunesmith.studio.runs import RUNNING_SECONDS, resolve, status

        with self.lock:
            path = resolve(self.root, run_id)
            if self._job_of(run_id) is not None:
                raise TunesmithError(f"'{run_id}' is running", hint="stop it first")
            if not any(j["run"] == run_id for j in self.jobs()) and status(path, "train") == "running":
                raise TunesmithError(
                    f"'{run_id}' is being written by a process this studio did not start (its metrics.jsonl changed in the last {RUNNING_SECONDS} s)",
                    hint="stop that process first (Ctrl-C where it runs), then resume",
                )
            if (path / "summary.json").is_file():
                raise TunesmithError(f"'{run_id}' is finished; there is nothing to resume", hint="launch a new run from its recipe")
            find_resume_point(str(path))  # the CLI's own checks and messages, before a process starts
            return self._start(["train", "--resume", str(path)], run_id, "resume")

    def stop_all(self, timeout: float = 10.0) -> None:
        """Interrupt the jobs this process started (tests; a studio exiting leaves its runs to finish)."""
        for proc in list(self.procs.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        deadline = time.time() + timeout
        for proc in list(self.procs.values()):
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()


def _interruptible() -> None:
    """In a launched child before it runs the CLI: SIGINT back to its default, so Python raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
