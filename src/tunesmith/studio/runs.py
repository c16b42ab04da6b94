"""What the studio shows, read from run directories (never written here).

    scan(root)                 -> [run summary, ...] newest first: the run directories under `root` (and one level
                                  deeper: a pipeline's stages), each with its kind, stage, model, dataset, status,
                                  wall time and final metrics
    details(root, run_id)      -> one run: the summary plus recipe text, before/after answers, what changed,
                                  diagnostics, lineage
    metrics_since(root, run_id, since, token)
                               -> metrics.jsonl rows from row `since` on, and the token to send next time (a resumed
                                  run rewrites the file: a new token says "start again")

A run's id is its path relative to `root` (posix slashes). Status of a training run:
    finished   summary.json is there (written last)
    running    a live process the studio launched writes it, or metrics.jsonl changed in the last RUNNING_SECONDS
    resumable  not finished, not running, and it has a complete checkpoint
    failed     none of the above
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import yaml

from tunesmith.errors import TunesmithError
from tunesmith.runs.rundir import RunDir, metric_rows

RUNNING_SECONDS = 60
MARKERS = (("recipe.yaml", "train"), ("merge.json", "merge"), ("export.json", "export"), ("eval.json", "eval"))
# the logged numbers worth a curve (runtime, throughput and counters are left out)
CURVE = re.compile(r"loss|learning_rate|grad_norm|reward|kl|margin|clip|accurac|entropy|logps|logits|value|explained_variance|advantage", re.I)
# train_*: transformers' end-of-training summary row (the mean loss of the whole run, its runtime), not a curve
NOT_CURVE = re.compile(r"runtime|per_second|tokens_per|num_tokens|num_input_tokens|^epoch$|^step$|total_flos|^train_", re.I)


class NotFound(TunesmithError):
    """No such run under the studio's folder."""


def kind_of(path: Path) -> str | None:
    for marker, kind in MARKERS:
        if (path / marker).is_file():
            return kind
    return None


def resolve(root: str | Path, run_id: str) -> Path:
    """The run directory `run_id` names, refused unless it lies inside `root` and is a run."""
    root = Path(root).resolve()
    if not run_id or run_id.startswith("/") or "\\" in run_id:
        raise NotFound(f"no run '{run_id}' under {root}")
    path = (root / run_id).resolve()
    if root not in path.parents or kind_of(path) is None:
        raise NotFound(f"no run '{run_id}' under {root}", hint="GET /studio/api/runs lists the runs")
    return path


def run_ids(root: str | Path) -> list[Path]:
    """Run directories under `root`: its children, and the children of a child that is not a run (a pipeline)."""
    root = Path(root)
    found = []
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if child.name.startswith(".") or not child.is_dir():
            continue
        if kind_of(child):
            found.append(child)
            continue
        for grandchild in sorted(child.iterdir()):
            if not grandchild.name.startswith(".") and grandchild.is_dir() and kind_of(grandchild):
                found.append(grandchild)
    return found


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _recipe(path: Path) -> dict:
    try:
        data = yaml.safe_load((path / "recipe.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def curve_keys(rows: list[dict]) -> list[str]:
    """The numeric keys worth a curve, in the order they first appear (loss first, then eval_loss, learning_rate)."""
    keys: dict[str, None] = {}
    for row in rows:
        if row.get("final"):
            continue
        for key, value in row.items():
            if _number(value) and CURVE.search(key) and not NOT_CURVE.search(key):
                keys.setdefault(key)
    first = [k for k in ("loss", "eval_loss", "learning_rate") if k in keys]
    return first + [k for k in keys if k not in first]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def series(rows: list[dict], key: str) -> list[list[float]]:
    """[[step, value], ...] of `key`, the training-time rows only (the end-of-run eval row is not a point of the curve)."""
    return [[row["step"], row[key]] for row in rows if not row.get("final") and "step" in row and _number(row.get(key))]


def status(path: Path, kind: str, alive: bool | None = None, now: float | None = None) -> str:
    """`alive`: whether the studio's process for this run lives (None: the studio did not start one, so the age
    of metrics.jsonl decides)."""
    if kind != "train":
        return "finished"
    if (path / "summary.json").is_file():
        return "finished"
    if alive:
        return "running"
    metrics = path / "metrics.jsonl"
    now = time.time() if now is None else now
    if alive is None and metrics.is_file() and now - metrics.stat().st_mtime < RUNNING_SECONDS:
        return "running"
    if RunDir(path).checkpoints():
        return "resumable"
    return "failed"


def summary(root: str | Path, path: Path, jobs: dict[str, bool] | None = None) -> dict:
    """One row of the runs list. `jobs`: run id -> whether the studio's process for it lives."""
    root = Path(root).resolve()
    path = path.resolve()
    run_id = path.relative_to(root).as_posix()
    kind = kind_of(path) or "train"
    info: dict = {"id": run_id, "name": path.name, "kind": kind, "path": str(path)}
    environment = _json(path / "environment.json") or {}
    started_mtime = (path / "recipe.yaml").stat().st_mtime if (path / "recipe.yaml").is_file() else path.stat().st_mtime
    info["started"] = environment.get("started") or time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_mtime))
    info["started_ts"] = started_mtime
    info["status"] = status(path, kind, (jobs or {}).get(run_id))
    final: dict = {}
    if kind == "train":
        recipe = _recipe(path)
        info.update(
            stage=recipe.get("stage", "sft"),
            method=recipe.get("method"),
            model=(recipe.get("model") or {}).get("name"),
            dataset=(recipe.get("data") or {}).get("dataset"),
            max_steps=(recipe.get("training") or {}).get("max_steps"),
        )
        rows = metric_rows(path / "metrics.jsonl")
        steps = [r["step"] for r in rows if isinstance(r.get("step"), (int, float))]
        info["step"] = max(steps) if steps else 0
        for key in ("loss", "eval_loss", "learning_rate"):
            last = next((r[key] for r in reversed(rows) if _number(r.get(key))), None)
            if last is not None:
                final[key] = last
        done = _json(path / "summary.json") or {}
        for key in ("steps", "train_loss", "eval_loss", "seconds"):
            if done.get(key) is not None:
                final[key] = done[key]
        if done.get("seconds") is not None:
            info["seconds"] = done["seconds"]
        else:
            last_write = (path / "metrics.jsonl").stat().st_mtime if (path / "metrics.jsonl").is_file() else started_mtime
            end = time.time() if info["status"] == "running" else last_write
            info["seconds"] = round(max(0.0, end - started_mtime), 1)
    elif kind == "merge":
        merge = _json(path / "merge.json") or {}
        info.update(
            stage="merge",
            method=merge.get("method"),
            seconds=merge.get("seconds"),
            model=", ".join(str(i.get("spec", i.get("resolved")) if isinstance(i, dict) else i) for i in merge.get("inputs", [])),
        )
    elif kind == "export":
        export = _json(path / "export.json") or {}
        info.update(stage="export", model=export.get("source"), method=", ".join(export.get("formats") or []))
    else:
        info.update(stage="eval")
    info["metrics"] = final
    return info


def scan(root: str | Path, jobs: dict[str, bool] | None = None) -> list[dict]:
    """Every run under `root`, newest first."""
    runs = []
    for path in run_ids(root):
        try:
            runs.append(summary(root, path, jobs))
        except OSError:  # removed while being read
            continue
    return sorted(runs, key=lambda r: r["started_ts"], reverse=True)


README_ROW = re.compile(r"^\| (.*) \| (.*) \| (.*) \|$")


def before_after(path: Path) -> list[dict]:
    """The sample prompts' answers before and after training, from the model card's table (the run keeps them there)."""
    readme = path / "README.md"
    if not readme.is_file():
        return []
    lines = readme.read_text(encoding="utf-8", errors="replace").splitlines()
    try:
        start = lines.index("| prompt | before | after |") + 2
    except ValueError:
        return []
    out = []
    for line in lines[start:]:
        match = README_ROW.match(line)
        if not match:
            break
        cells = [c.replace("\\|", "|") for c in re.split(r"(?<!\\) \| ", line[2:-2])]
        if len(cells) == 3:
            out.append({"prompt": cells[0], "before": cells[1], "after": cells[2]})
    return out


def details(root: str | Path, run_id: str, jobs: dict[str, bool] | None = None) -> dict:
    """Everything the run view shows (curves come from metrics_since)."""
    from tunesmith.runs.lineage import key_metrics, lineage

    path = resolve(root, run_id)
    info = summary(root, path, jobs)
    files = {}
    for name in ("recipe.yaml", "merge.yaml"):
        if (path / name).is_file():
            files["recipe"] = (path / name).read_text(encoding="utf-8", errors="replace")
            break
    info.update(files)
    info["recipe"] = info.get("recipe", "")
    info["answers"] = before_after(path)
    changes = _json(path / "changes.json") or {}
    info["changes"] = changes.get("changes", [])
    info["examples"] = changes.get("examples", [])
    diagnostics = _json(path / "diagnostics.json") or {}
    info["diagnostics"] = diagnostics.get("diagnostics", [])
    info["checkpoints"] = [n for n, _ in RunDir(path).checkpoints()] if info["kind"] == "train" else []
    info["plots"] = sorted(p.name for p in path.glob("*.png"))
    info["has_model"] = (path / "model").is_dir() or info["kind"] in ("merge",)
    try:
        info["key_metrics"] = key_metrics(path) if info["kind"] == "train" else {}
        info["lineage"] = lineage(str(path))
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):  # a half-written input: show the rest
        info.setdefault("key_metrics", {})
        info["lineage"] = []
    return info


def token_of(path: Path) -> str:
    """Changes when metrics.jsonl is replaced (a resume rewrites it through a rename): its device and inode."""
    try:
        st = path.stat()
    except OSError:
        return ""
    return f"{st.st_dev}-{st.st_ino}"


def metrics_since(root: str | Path, run_id: str, since: int = 0, token: str | None = None) -> dict:
    """Rows from `since` on. `reset` is true (and all rows come) when the file was replaced since `token`, or shrank."""
    path = resolve(root, run_id) / "metrics.jsonl"
    rows = metric_rows(path)
    now = token_of(path)
    reset = (token is not None and token != now) or since > len(rows) or since < 0
    start = 0 if reset else since
    return {"rows": rows[start:], "next": len(rows), "token": now, "reset": reset, "keys": curve_keys(rows)}


def compare(root: str | Path, run_ids_: list[str], jobs: dict[str, bool] | None = None) -> dict:
    """Two or more runs: each one's curves and final metrics, and the keys they share (or not)."""
    from tunesmith.runs.lineage import key_metrics

    out = []
    keys: dict[str, None] = {}
    for run_id in run_ids_:
        path = resolve(root, run_id)
        info = summary(root, path, jobs)
        rows = metric_rows(path / "metrics.jsonl")
        run_keys = curve_keys(rows)
        for k in run_keys:
            keys.setdefault(k)
        metrics = dict(info["metrics"])
        if info["kind"] == "train":
            for name, value in key_metrics(path).items():
                metrics.setdefault(name, value)
        out.append(
            {
                "id": run_id,
                "name": info["name"],
                "stage": info.get("stage"),
                "status": info["status"],
                "metrics": metrics,
                "series": {k: series(rows, k) for k in run_keys},
            }
        )
    return {"runs": out, "keys": list(keys)}


def rollouts(root, run_id: str, step: int | None = None) -> dict:
    """The record of <run>/rollouts.jsonl for `step` (the newest when None), and the steps there are."""
    path = resolve(root, run_id) / "rollouts.jsonl"
    if not path.is_file():
        raise NotFound(f"'{run_id}' has no rollouts.jsonl (only GRPO, RLOO and PPO runs sample rollouts)", hint="pick an RL run")
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            continue
    if not records:
        raise NotFound(f"'{run_id}' has no rollout batch yet", hint="wait for the first step")
    steps = [r.get("step") for r in records]
    chosen = records[-1] if step is None else next((r for r in records if r.get("step") == step), None)
    if chosen is None:
        raise NotFound(f"'{run_id}' has no rollout batch for step {step}", hint=f"steps: {steps[0]}..{steps[-1]}")
    return {"steps": steps, "record": chosen}
