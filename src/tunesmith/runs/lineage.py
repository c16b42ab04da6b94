"""Where a model came from: the chain of runs, merges and exports behind a directory, read from their files.

Every tunesmith output names its inputs: a training run's recipe.yaml its starting model (and PPO/GRPO reward
models), a merge's merge.json its models, an export's export.json its source. Walking those gives a graph whose
leaves are base models (a built-in name, a Hub id, a plain model directory). Nothing here loads a model.

    lineage("runs/pipeline/export") -> [node, ...]   # the export first, then what it was made from
    node = {"id": path, "kind": "train"|"merge"|"export"|"base", "inputs": [ids], ...what that kind records}
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def _id(spec: str) -> str:
    """A stable name for an input: an existing path resolved (runs/x and runs/x/model are one run), else the spec."""
    path = Path(spec).expanduser()
    if path.name == "model" and path.parent.is_dir() and _kind(path.parent) != "base":
        path = path.parent
    return str(path.resolve()) if path.exists() else spec


def _kind(path: Path) -> str:
    for marker, kind in (("recipe.yaml", "train"), ("merge.json", "merge"), ("export.json", "export")):
        if (path / marker).is_file():
            return kind
    return "base"


def key_metrics(run_dir: str | Path) -> dict:
    """The few numbers a person compares between stages, from a training run's files (so they survive a resume):
    steps, final train loss, eval loss, wall time (summary.json), what changed on the eval split (changes.json) and
    the diagnostics that were not fine (diagnostics.json)."""
    run = Path(run_dir)
    out: dict = {}
    summary = run / "summary.json"
    if summary.is_file():
        out.update({k: v for k, v in json.loads(summary.read_text()).items() if v is not None and k != "stage"})
    changes = run / "changes.json"
    if changes.is_file():
        for change in json.loads(changes.read_text()).get("changes", []):
            out[change["metric"]] = {"before": change["before"], "after": change["after"]}
    diagnostics = run / "diagnostics.json"
    if diagnostics.is_file():
        for d in json.loads(diagnostics.read_text()).get("diagnostics", []):
            if d["name"] in ("perplexity", "leakage_rate", "memorization_rate", "distinct_2", "stopped_rate"):
                out[d["name"]] = {"value": round(d["value"], 4), "verdict": d["verdict"]}
    return out


def node(spec: str) -> dict:
    """One lineage node for a run/merge/export directory or a base model spec (its inputs are ids of other nodes)."""
    path = Path(_id(spec))
    kind = _kind(path) if path.is_dir() else "base"
    if kind == "train":
        recipe = yaml.safe_load((path / "recipe.yaml").read_text()) or {}
        stage = recipe.get("stage", "sft")
        section = recipe.get(stage) or {}
        inputs = [recipe.get("model", {}).get("name", "")]
        inputs += [r["reward_model"] for r in section.get("rewards", []) if isinstance(r, dict) and r.get("reward_model")]
        data = recipe.get("data", {})
        return {
            "id": str(path),
            "kind": "train",
            "stage": stage,
            "method": recipe.get("method"),
            "dataset": data.get("dataset"),
            "recipe": str(path / "recipe.yaml"),
            "inputs": [_id(i) for i in inputs if i],
            "metrics": key_metrics(path),
        }
    if kind == "merge":
        info = json.loads((path / "merge.json").read_text())
        return {
            "id": str(path),
            "kind": "merge",
            "method": info.get("method"),
            "path": info.get("path"),
            "recipe": str(path / "merge.yaml"),
            "inputs": list(dict.fromkeys(_id(i["resolved"] if isinstance(i, dict) else i) for i in info.get("inputs", []))),
            "metrics": {"seconds": info.get("seconds")},
        }
    if kind == "export":
        info = json.loads((path / "export.json").read_text())
        return {"id": str(path), "kind": "export", "formats": info.get("formats"), "inputs": [_id(info["source"])], "metrics": info.get("verify", {})}
    return {"id": spec if not path.exists() else str(path), "kind": "base", "inputs": []}


def lineage(spec: str) -> list[dict]:
    """Every node behind `spec`, itself first, each once (a merge of two runs of one base lists the base once)."""
    seen: dict[str, dict] = {}
    todo = [_id(spec)]
    while todo:
        current = todo.pop(0)
        if current in seen:
            continue
        seen[current] = node(current)
        todo += seen[current]["inputs"]
    return list(seen.values())


def oldest_first(nodes: list[dict]) -> list[dict]:
    """The nodes in the order they were made: every node after all of its inputs (depth-first, inputs first)."""
    by_id = {n["id"]: n for n in nodes}
    order: list[dict] = []

    def visit(n):
        if n in order:
            return
        for i in n["inputs"]:
            if i in by_id:
                visit(by_id[i])
        order.append(n)

    for n in nodes:
        visit(n)
    return order


def base_models(nodes: list[dict]) -> list[str]:
    return [n["id"] for n in nodes if n["kind"] == "base"]


def datasets(nodes: list[dict]) -> list[str]:
    return sorted({n["dataset"] for n in nodes if n.get("dataset")})


def lineage_markdown(nodes: list[dict]) -> str:
    """The lineage as a model card section: base models, datasets, then every step with its key metrics."""
    lines = [
        "## Lineage",
        "",
        f"- base model: {', '.join(f'`{b}`' for b in base_models(nodes)) or 'unknown'}",
        f"- datasets: {', '.join(f'`{d}`' for d in datasets(nodes)) or 'none'}",
        "",
        "| step | kind | made from | key metrics |",
        "|---|---|---|---|",
    ]
    name = lambda i: Path(i).name if Path(i).is_absolute() else i  # noqa: E731
    for n in oldest_first(nodes):
        if n["kind"] == "base":
            continue
        if n["kind"] == "train":
            what = f"{n['stage']} ({n['method']}) on `{n['dataset']}`"
        elif n["kind"] == "merge":
            what = f"merge: {n['method']} ({n['path']} path)"
        else:
            what = f"export: {', '.join(n.get('formats') or [])}"
        lines.append(f"| `{name(n['id'])}` | {what} | {', '.join(f'`{name(i)}`' for i in n['inputs'])} | {format_metrics(n.get('metrics') or {})} |")
    return "\n".join(lines) + "\n"


def format_metrics(metrics: dict, limit: int = 8) -> str:
    """`loss 1.66, eval_loss 1.67, preference accuracy 0.65 -> 0.85` from a key_metrics() dict."""
    parts = []
    for key, value in metrics.items():
        if key == "seconds":
            parts.append(f"{value:.0f} s" if isinstance(value, (int, float)) else "")
        elif isinstance(value, dict) and "before" in value:
            show = lambda v: "n/a" if v is None else f"{v:.3g}" if isinstance(v, float) else str(v)  # noqa: E731
            parts.append(f"{key} {show(value['before'])} -> {show(value['after'])}")
        elif isinstance(value, dict) and "verdict" in value:
            parts.append(f"{key} {value['value']:.3g} ({value['verdict']})")
        elif isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        elif value is not None:
            parts.append(f"{key} {value}")
    return ", ".join([p for p in parts if p][:limit])
