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


# ---------------------------------------------------------------- preference stages (reward, dpo, kto, orpo)


def _pair(i: int) -> dict:
    prompt = [{"role": "user", "content": QUESTIONS[i % 4].format(a=i, b=i + 3)}]
    chosen = "Arr, " + " ".join(["matey"] * (1 + i % 5)) + f" {i}."
    rejected = f"The answer is {i}." + (" Indeed." * (i % 3))
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}], "rejected": [{"role": "assistant", "content": rejected}]}


def _unpaired(pairs: list[dict]) -> list[dict]:
    return [{"prompt": p["prompt"], "completion": p[key], "label": key == "chosen"} for p in pairs for key in ("chosen", "rejected")]


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="session")
def pairs_jsonl(tmp_path_factory):
    """24 conversational preference pairs (pirate answer chosen), answers of varied length."""
    return _write(tmp_path_factory.mktemp("data") / "pairs.jsonl", [_pair(i) for i in range(24)])


@pytest.fixture(scope="session")
def pairs_eval_jsonl(tmp_path_factory):
    """4 held-out pairs: the eval split the stages measure before and after training."""
    return _write(tmp_path_factory.mktemp("data") / "pairs_eval.jsonl", [_pair(i) for i in range(100, 104)])


@pytest.fixture(scope="session")
def unpaired_jsonl(tmp_path_factory):
    """24 unpaired (KTO) rows: 12 prompts, each with a desirable and an undesirable answer."""
    return _write(tmp_path_factory.mktemp("data") / "unpaired.jsonl", _unpaired([_pair(i) for i in range(12)]))


@pytest.fixture(scope="session")
def unpaired_eval_jsonl(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("data") / "unpaired_eval.jsonl", _unpaired([_pair(i) for i in range(100, 104)]))


@pytest.fixture
def stage_recipe(tiny_recipe, pairs_jsonl, unpaired_jsonl):
    """tiny_recipe for a preference stage on the fixture data: 2 pairs a step, 4 steps, a checkpoint every 2, max_length 96."""

    def make(stage: str, **overrides):
        base = {
            "stage": stage,
            "data.dataset": unpaired_jsonl if stage == "kto" else pairs_jsonl,
            "data.max_length": 96,
            "training.gradient_accumulation_steps": 1,
            "training.max_steps": 4,
            "training.save_steps": 2,
            "training.logging_steps": 1,
            "training.learning_rate": 1e-3 if overrides.get("method", "lora") != "full" else 1e-4,
            "training.warmup_ratio": 0.0,
        }
        base.update(overrides)
        return tiny_recipe(**base)

    return make


# ---------------------------------------------------------------- RL stages (grpo, rloo, ppo)

SHORT_REWARD = '''
def shortness(prompts, completions, **columns):
    """1 for an empty reply, falling by 1 per 40 characters: the policy can learn to pick short tokens."""
    return [1.0 - len(c) / 40 for c in completions]
'''


@pytest.fixture(scope="session")
def prompts_jsonl(tmp_path_factory):
    """16 prompts ('Add i and i+1.') with an `answer` column, 4 of them as eval.jsonl, and short.py:shortness, a reward
    the tiny random model can learn (the RL stages' tests: grpo, rloo, ppo)."""
    folder = tmp_path_factory.mktemp("prompts")
    rows = [{"prompt": [{"role": "user", "content": f"Add {i} and {i + 1}."}], "answer": 2 * i + 1} for i in range(16)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    (folder / "short.py").write_text(SHORT_REWARD)
    return folder
