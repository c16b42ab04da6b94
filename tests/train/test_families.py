"""Every stage on every model family: tiny random models of each (tests/families.py) through real optimiser steps,
merges, generation, serving and eval, each output loaded back by vanilla transformers/peft.

The fast suite runs LoRA SFT and generation on the families with a quirk (qwen2, gemma2, phi3); the other families,
every other stage x family cell (~2-4 s each), the merges, serving and eval are `make test-slow`.
"""

from __future__ import annotations

import math

import pytest
from families import FAMILIES

from tunesmith.runs.rundir import RunDir
from tunesmith.train.scaffold import run_stage

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


@pytest.fixture
def family_recipe(family_model, chat_jsonl, pairs_jsonl, unpaired_jsonl, prompts_jsonl, work):
    """recipe(family, stage, **overrides): 2 real optimiser steps of `stage` on the family's tiny model."""
    from tunesmith.recipes import load_recipe

    data = {"sft": chat_jsonl, "reward": pairs_jsonl, "dpo": pairs_jsonl, "orpo": pairs_jsonl, "kto": unpaired_jsonl}

    def make(family: str, stage: str, name: str | None = None, **overrides):
        base = {
            "stage": stage,
            "model.name": family_model(family),
            "model.precision": "fp32",
            "data.dataset": data.get(stage, str(prompts_jsonl / "train.jsonl")),
            "data.max_length": 96,
            "sample.prompts": [],
            "output_dir": str(work / f"{family}-{name or stage}"),
            "training.per_device_train_batch_size": 2,
            "training.gradient_accumulation_steps": 1,
            "training.max_steps": 2,
            "training.save_strategy": "no",
            "training.logging_steps": 1,
            "training.warmup_ratio": 0.0,
            "training.learning_rate": 1e-3,
        }
        if stage == "grpo":
            base |= {"training.per_device_train_batch_size": 4, "grpo.num_generations": 2, "grpo.max_completion_length": 6}
            base["grpo.rewards"] = [{"function": f"{prompts_jsonl / 'short.py'}:shortness"}]
        if stage == "ppo":
            base |= {"ppo.ppo_epochs": 1, "ppo.num_mini_batches": 1, "ppo.max_completion_length": 6, "ppo.sample_every": 0}
            base["ppo.rewards"] = [{"function": f"{prompts_jsonl / 'short.py'}:shortness"}]
        base.update(overrides)
        return load_recipe(None, base)

    return make


def trained_losses(run_dir) -> list[float]:
    rows = [m for m in RunDir(run_dir).read_metrics() if "final" not in m]
    return [m[k] for m in rows for k in ("loss", "reward") if k in m]


def loads_in_vanilla_libraries(model_dir, reward: bool = False):
    """The saved model loads with transformers (a full model) or peft (an adapter) alone, and gives finite logits/scores."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    adapter = (model_dir / "adapter_config.json").is_file()
    if adapter:
        from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

        model = (AutoPeftModelForSequenceClassification if reward else AutoPeftModelForCausalLM).from_pretrained(
            str(model_dir), **({"num_labels": 1} if reward else {})
        )
    else:
        model = (AutoModelForSequenceClassification if reward else AutoModelForCausalLM).from_pretrained(str(model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Add 2 and 3."}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model(input_ids=ids["input_ids"])
    assert torch.isfinite(out.logits).all()
    return model


# the families with a quirk in the fast suite (qwen2: biases, pad != eos; gemma2: eager attention, system folded; phi3:
# fused projections); the others in test-slow, as is every other stage on every family
@pytest.mark.parametrize("family", [pytest.param(f, marks=() if f in ("qwen2", "gemma2", "phi3") else pytest.mark.slow) for f in FAMILIES])
def test_lora_sft_trains_generates_and_chats_on_every_family(family, family_recipe):
    from tunesmith.models import load_pretrained

    result = run_stage(family_recipe(family, "sft"), live=False)
    losses = trained_losses(result.run_dir)
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    loads_in_vanilla_libraries(result.model_dir)
    loaded = load_pretrained(str(result.run_dir))
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add 1 and 2."}]
    from tunesmith.infer import SamplingParams
    from tunesmith.infer.generate import complete

    replies = complete(loaded.model, loaded.tokenizer, ["Add 1 and 2.", system], SamplingParams(temperature=0.0), max_new_tokens=4)
    assert len(replies) == 2 and all(r.completion_tokens >= 1 for r in replies)
    from tunesmith.infer.chat import ChatSession

    chat = ChatSession(loaded.model, loaded.tokenizer, SamplingParams(temperature=0.0), max_new_tokens=3, system="Be brief.")
    for line in ("Hi", "And again?"):  # two turns: the history (with the system prompt) is rendered by the family's template
        kind, _ = chat.handle(line)
        assert kind == "reply"
    assert [m["role"] for m in chat.history] == ["user", "assistant", "user", "assistant"]


# ---------------------------------------------------------------- every stage on every family (slow)

STAGE_CELLS = ["sft-full", "reward", "dpo", "kto", "orpo", "grpo", "ppo"]


@pytest.mark.slow
@pytest.mark.parametrize("cell", STAGE_CELLS)
@pytest.mark.parametrize("family", FAMILIES)
def test_every_stage_trains_on_every_family(family, cell, family_recipe):
    stage, _, method = cell.partition("-")
    recipe = family_recipe(family, stage, name=cell, method=method or "lora", **({"training.learning_rate": 1e-4} if method == "full" else {}))
    result = run_stage(recipe, live=False)
    values = trained_losses(result.run_dir)
    assert values and all(math.isfinite(v) for v in values), values
    loads_in_vanilla_libraries(result.model_dir, reward=stage == "reward")


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_merges_serving_and_eval_on_every_family(family, family_model, family_recipe, work, serve_in_thread):
    """SLERP and TIES of two fine-tunes (mergekit), a merge of two LoRA adapters (peft), then the merged model
    served (OpenAI chat completions) and evaluated side by side with its base."""
    import httpx

    from tunesmith.evaluate.compare import compare_models
    from tunesmith.merge import MergeRecipe, run_merge, slerp_recipe

    base = family_model(family)
    a = run_stage(family_recipe(family, "sft", name="merge-a", method="full", **{"training.learning_rate": 1e-3}), live=False)
    b = run_stage(family_recipe(family, "sft", name="merge-b", method="full", **{"training.learning_rate": 1e-3, "training.seed": 7}), live=False)
    quiet = {"log": lambda *_: None}
    slerped = run_merge(slerp_recipe(str(a.run_dir), str(b.run_dir), 0.5), work / f"{family}-slerp", **quiet)
    loads_in_vanilla_libraries(slerped.model_dir)
    ties = MergeRecipe(
        {
            "merge_method": "ties",
            "base_model": base,
            "models": [
                {"model": str(a.run_dir), "parameters": {"weight": 0.5, "density": 0.5}},
                {"model": str(b.run_dir), "parameters": {"weight": 0.5, "density": 0.5}},
            ],
        }
    )
    tied = run_merge(ties, work / f"{family}-ties", **quiet)
    loads_in_vanilla_libraries(tied.model_dir)
    la = run_stage(family_recipe(family, "sft", name="lora-a"), live=False)
    lb = run_stage(family_recipe(family, "sft", name="lora-b", **{"training.seed": 7}), live=False)
    linear = MergeRecipe(
        {"merge_method": "linear", "models": [{"model": str(la.run_dir), "parameters": {"weight": 1}}, {"model": str(lb.run_dir), "parameters": {"weight": 1}}]}
    )
    adapters = run_merge(linear, work / f"{family}-adapters", **quiet)
    assert adapters.path == "adapter"
    loads_in_vanilla_libraries(adapters.model_dir)

    from tunesmith.serve import Engine, create_app

    with serve_in_thread(create_app(Engine(str(slerped.output_dir), name="merged", max_prompt_tokens=256))) as port:
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={
                "model": "merged",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                "max_tokens": 4,
                "temperature": 0,
            },
            timeout=60,
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] >= 1

    report = compare_models({"merged": str(slerped.output_dir), "base": base}, max_prompts=2, max_new_tokens=4, log=lambda *_: None)
    assert all(math.isfinite(report.values[label]["eval_loss"]) for label in ("merged", "base")), report.values
