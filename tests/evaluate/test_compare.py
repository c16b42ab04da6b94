"""Side by side: where the model under test stands among its sources, and a real comparison on the tiny model."""

import json

import pytest

from tunesmith.evaluate.compare import Comparison, compare_models


def comparison(values):
    c = Comparison(list(values))
    c.values = values
    c.verdicts = {m: {} for m in values}
    return c


def test_standing_follows_each_measures_direction():
    c = comparison(
        {
            "merged": {"eval_loss": 1.7, "preference_accuracy": 0.9, "leakage_rate": 0.2, "mean_length_tokens": 30.0},
            "sft": {"eval_loss": 1.6, "preference_accuracy": 0.6, "leakage_rate": 0.0, "mean_length_tokens": 20.0},
            "dpo": {"eval_loss": 1.8, "preference_accuracy": 0.9, "leakage_rate": 0.1, "mean_length_tokens": 40.0},
        }
    )
    assert c.standing("eval_loss") == "between"  # lower is better: 1.6 < 1.7 < 1.8
    assert c.standing("preference_accuracy") == "best"  # ties the best source
    assert c.standing("leakage_rate") == "worst"  # higher is bad
    assert c.standing("mean_length_tokens") == ""  # no direction: shown, not judged
    assert c.to_json()["standing"] == {"eval_loss": "between", "preference_accuracy": "best", "leakage_rate": "worst", "mean_length_tokens": ""}


def test_same_values_are_same():
    assert comparison({"a": {"eval_loss": 1.0}, "b": {"eval_loss": 1.0}}).standing("eval_loss") == "same"


@pytest.fixture
def tiny_pairs(tmp_path):
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Say {i}."}],
            "chosen": [{"role": "assistant", "content": f"Arr {i}."}],
            "rejected": [{"role": "assistant", "content": f"{i}."}],
        }
        for i in range(4)
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": r["prompt"] + r["chosen"]}) + "\n" for r in rows))
    return str(chats), str(path)


def test_compare_two_models_on_the_tiny_model(tiny_model_dir, tiny_pairs, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    other = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(0.5)
    other.save_pretrained(tmp_path / "other")
    from tunesmith.models import load_tokenizer

    load_tokenizer(tiny_model_dir).save_pretrained(tmp_path / "other")
    chats, pairs = tiny_pairs
    lines = []
    c = compare_models({"a": tiny_model_dir, "b": str(tmp_path / "other")}, data=chats, pairs=pairs, max_prompts=2, max_new_tokens=3, log=lines.append)
    assert c.models == ["a", "b"] and len(lines) == 2
    for name in ("a", "b"):
        assert {"eval_loss", "perplexity", "preference_accuracy", "preference_margin", "leakage_rate"} <= set(c.values[name])
    assert c.values["a"]["eval_loss"] != c.values["b"]["eval_loss"]
    assert [set(row) for row in c.samples] == [{"prompt", "a", "b"}] * 2
    from rich.console import Console

    console = Console(record=True, width=160)
    c.render(console)
    text = " ".join(console.export_text().split())  # the caption wraps at the table's width
    assert "standing: where a (under test)" in text and "judged measures" in text


def test_models_are_labelled_by_folder_and_never_dropped():
    from tunesmith.evaluate.compare import model_labels

    assert model_labels(["runs/a/sft", "runs/b/sft/", "smollm2-135m-instruct"]) == {
        "sft": "runs/a/sft",
        "runs/b/sft/": "runs/b/sft/",
        "smollm2-135m-instruct": "smollm2-135m-instruct",
    }
