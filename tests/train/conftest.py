import json

import pytest

QUESTIONS = ["What is {a} plus {b}?", "Name a colour like {a}.", "Count from {a} to {b}.", "Say hello {a} times."]


@pytest.fixture(scope="session")
def chat_jsonl(tmp_path_factory):
    """37 short chats of varied length (so batches pad and packing has something to do)."""
    path = tmp_path_factory.mktemp("data") / "chats.jsonl"
    rows = []
    for i in range(37):
        q = QUESTIONS[i % 4].format(a=i, b=i + 3)
        a = "Arr, " + " ".join(["matey"] * (1 + i % 9)) + f" {i}."
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def tiny_recipe(tiny_model_dir, chat_jsonl, tmp_path):
    """A recipe for the tiny model that trains in about a second per few steps."""
    from tunesmith.recipes import load_recipe

    def make(**overrides):
        base = {
            "model.name": tiny_model_dir,
            "model.precision": "fp32",
            "data.dataset": chat_jsonl,
            "data.max_length": 64,
            "sample.prompts": [],
            "output_dir": str(tmp_path / "run"),
            "training.per_device_train_batch_size": 2,
            "training.gradient_accumulation_steps": 3,
            "training.num_train_epochs": 2,
            "training.logging_steps": 3,
            "training.save_strategy": "steps",
            "training.save_steps": 4,
            "training.save_total_limit": 2,
            "training.learning_rate": 1e-3,
        }
        base.update(overrides)
        return load_recipe(None, base)

    return make
