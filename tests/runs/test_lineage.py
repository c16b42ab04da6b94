"""Lineage is read from the files every output writes: run -> its starting model, merge -> its inputs, export -> its source."""

import json

import yaml

from tunesmith.runs.lineage import format_metrics, lineage, lineage_markdown


def _run(path, stage, model, dataset, **files):
    path.mkdir(parents=True)
    (path / "model").mkdir()
    (path / "recipe.yaml").write_text(yaml.safe_dump({"stage": stage, "method": "lora", "model": {"name": str(model)}, "data": {"dataset": dataset}}))
    for name, content in files.items():
        (path / f"{name}.json").write_text(json.dumps(content))
    return path


def test_a_chain_of_runs_a_merge_and_an_export(tmp_path):
    sft = _run(
        tmp_path / "sft",
        "sft",
        "smollm2-135m-instruct",
        "pirate",
        summary={"steps": 48, "train_loss": 1.66, "eval_loss": 1.67, "seconds": 180.0},
        diagnostics={"diagnostics": [{"name": "leakage_rate", "value": 0.0, "verdict": "fine"}, {"name": "distinct_1", "value": 0.5, "verdict": "info"}]},
    )
    dpo = _run(
        tmp_path / "dpo",
        "dpo",
        sft / "model",
        "pirate-pairs",
        summary={"steps": 48, "train_loss": 0.5, "eval_loss": None, "seconds": 400.0},
        changes={"changes": [{"metric": "preference accuracy", "before": 0.65, "after": 0.85}]},
    )
    merged = tmp_path / "merged"
    (merged / "model").mkdir(parents=True)
    (merged / "merge.json").write_text(json.dumps({"method": "slerp", "path": "full", "inputs": [str(sft), str(dpo)], "seconds": 9.0}))
    export = tmp_path / "export"
    (export / "model").mkdir(parents=True)
    (export / "export.json").write_text(json.dumps({"source": str(merged), "formats": ["gguf", "ollama"]}))

    nodes = lineage(str(export))
    assert [n["kind"] for n in nodes] == ["export", "merge", "train", "train", "base"]
    assert [n["id"] for n in nodes[2:4]] == [str(sft), str(dpo)]
    assert nodes[3]["inputs"] == [str(sft)]  # runs/sft/model is the run runs/sft
    assert [n["id"] for n in nodes if n["kind"] == "base"] == ["smollm2-135m-instruct"]  # listed once, though both runs stem from it
    assert nodes[3]["metrics"]["preference accuracy"] == {"before": 0.65, "after": 0.85}
    assert nodes[2]["metrics"]["leakage_rate"] == {"value": 0.0, "verdict": "fine"} and "distinct_1" not in nodes[2]["metrics"]

    card = lineage_markdown(nodes)
    assert "- base model: `smollm2-135m-instruct`" in card and "- datasets: `pirate`, `pirate-pairs`" in card
    rows = [line for line in card.splitlines() if line.startswith("| `")]
    assert [r.split("|")[1].strip() for r in rows] == ["`sft`", "`dpo`", "`merged`", "`export`"]  # oldest first
    assert "preference accuracy 0.65 -> 0.85" in rows[1] and "merge: slerp (full path)" in rows[2]


def test_format_metrics():
    text = format_metrics(
        {"steps": 48, "train_loss": 1.6612, "seconds": 181.4, "acc": {"before": 0.5, "after": None}, "ppl": {"value": 5.38, "verdict": "fine"}}
    )
    assert text == "steps 48, train_loss 1.661, 181 s, acc 0.5 -> n/a, ppl 5.38 (fine)"
