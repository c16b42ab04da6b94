"""The preference stages (reward, dpo, kto, orpo) end to end on the tiny random model.

Each stage trains, checkpoints, saves a model that loads back (vanilla peft for reward models) and
writes its model card and before/after measurements; DPO and reward runs resume exactly; the DPO
loss TRL computes equals the closed form from our own log-probabilities; an SFT adapter chains
into DPO; the plan is what the DPO trainer does.
"""

import json
import math

import pytest
from recorders import Recorder, StopAt, assert_run_followed_plan  # tests/train/recorders.py

from tunesmith.errors import DataError
from tunesmith.evaluate.preference import Pairs, pairwise_accuracy, response_logprobs, reward_scores
from tunesmith.runs.rundir import RunDir
from tunesmith.train.scaffold import run_stage

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def losses(run_dir):
    return {m["step"]: m["loss"] for m in RunDir(run_dir).read_metrics() if "loss" in m and "final" not in m}


def eval_pairs(path) -> Pairs:
    return Pairs.from_examples([json.loads(line) for line in open(path)])


def change(run_dir, metric) -> dict:
    changes = json.loads((run_dir / "changes.json").read_text())["changes"]
    return next(c for c in changes if c["metric"] == metric)


# ---------------------------------------------------------------- 1. every stage trains and writes a standard result


@pytest.mark.parametrize(
    "stage, method",
    [
        ("reward", "lora"),
        ("dpo", "lora"),
        ("kto", "lora"),
        ("orpo", "lora"),
        pytest.param("dpo", "full", marks=pytest.mark.slow),  # full fine-tuning of every stage: make test-slow (the fast suite's 4-minute budget)
        pytest.param("reward", "full", marks=pytest.mark.slow),
    ],
    ids=["reward-lora", "dpo-lora", "kto-lora", "orpo-lora", "dpo-full", "reward-full"],
)
def test_stage_trains_and_saves_a_loadable_model(stage_recipe, stage, method, pairs_eval_jsonl, unpaired_eval_jsonl):
    eval_file = unpaired_eval_jsonl if stage == "kto" else pairs_eval_jsonl
    recipe = stage_recipe(stage, method=method, **{"training.max_steps": 2, "data.eval_dataset": eval_file})
    result = run_stage(recipe, live=False)
    run = result.run_dir

    assert result.stage == stage and result.steps == 2
    curve = losses(run)
    assert sorted(curve) == [1, 2] and all(math.isfinite(v) for v in curve.values()), curve
    assert result.eval_loss is not None and math.isfinite(result.eval_loss)
    assert (run / "checkpoint-2" / "trainer_state.json").is_file()
    card = (run / "README.md").read_text()
    assert f"(stage `{stage}`)" in card
    changes = json.loads((run / "changes.json").read_text())
    assert changes["changes"] and all({"metric", "before", "after"} <= set(c) for c in changes["changes"])
    assert any(c["before"] is not None and c["after"] is not None for c in changes["changes"])

    # the saved model loads back and is the trained one: it reproduces the "after" measurement of changes.json
    from tunesmith.models.load import load_tokenizer

    tokenizer = load_tokenizer(str(result.model_dir))
    pairs = eval_pairs(eval_file)
    assert len(pairs) == 4
    if stage == "reward":
        if method == "lora":
            assert (result.model_dir / "adapter_config.json").is_file()
            from peft import AutoPeftModelForSequenceClassification

            # vanilla peft, as the model card says (the base's config has no one-score head, so num_labels=1)
            assert "num_labels=1" in (run / "README.md").read_text()
            model = AutoPeftModelForSequenceClassification.from_pretrained(str(result.model_dir), num_labels=1)
        else:
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(str(result.model_dir))
        assert model.config.num_labels == 1 and model.config.pad_token_id == tokenizer.pad_token_id
        scores = reward_scores(model, tokenizer, pairs.prompts, pairs.chosen)
        assert all(math.isfinite(s) for s in scores)
        assert sum(scores) / len(scores) == pytest.approx(change(run, "score of chosen, mean")["after"], rel=1e-4, abs=1e-5)
    else:
        from tunesmith.models.load import load_model

        assert (result.model_dir / "adapter_config.json").is_file() == (method == "lora")
        model = load_model(str(run))
        logps = response_logprobs(model, tokenizer, pairs.prompts, pairs.chosen)
        assert sum(logps) / len(logps) == pytest.approx(change(run, "log p(chosen), mean")["after"], rel=1e-4)


# ---------------------------------------------------------------- 2. resume equals uninterrupted


@pytest.mark.parametrize(
    "stage, extra",
    [  # three runs each (~5 s): SFT's resume stays in the fast suite (test_sft.py)
        pytest.param("dpo", {}, marks=pytest.mark.slow),
        pytest.param("dpo", {"dpo.precompute_ref_log_probs": True}, marks=pytest.mark.slow),
        pytest.param("reward", {}, marks=pytest.mark.slow),
    ],
    ids=["dpo", "dpo-precomputed-reference", "reward"],
)
def test_resume_reproduces_uninterrupted_curve(stage_recipe, tmp_path, stage, extra):
    common = {
        "training.max_steps": 4,
        "training.save_steps": 2,
        "training.save_total_limit": None,
        "lora.lora_dropout": 0.1,
        "training.learning_rate": 5e-3,
        **extra,
    }
    straight = run_stage(stage_recipe(stage, **common, output_dir=str(tmp_path / "a")), live=False)
    interrupted = run_stage(stage_recipe(stage, **common, output_dir=str(tmp_path / "b")), live=False, callbacks=[StopAt(2)])
    assert interrupted.steps == 2
    resumed = run_stage(resume=str(tmp_path / "b"), stage_name=stage, live=False)
    assert resumed.steps == 4 and resumed.stage == stage
    a, b = losses(straight.run_dir), losses(resumed.run_dir)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert len(set(a.values())) > 1  # the loss moves, so equality means something
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5), (step, a, b)
    # what training changed is still reported after a resume: the "before" measurement was kept in the run
    assert [c.metric for c in resumed.changes] == [c.metric for c in straight.changes]
    for ours, theirs in zip(resumed.changes, straight.changes):
        assert (ours.before, ours.after) == pytest.approx((theirs.before, theirs.after), rel=1e-4, abs=1e-6), ours.metric


# ---------------------------------------------------------------- 3. the DPO loss is the closed form


def _dpo_trainer(recipe, tmp_path):
    """The DPO trainer exactly as run_stage builds it (same loading, adapter, reference, arguments), not trained."""
    from tunesmith.models.load import load_tokenizer
    from tunesmith.models.precision import resolve_precision
    from tunesmith.train.scaffold import common_arguments, load_for_training, lora_config, reference_model
    from tunesmith.train.speed import speed_settings
    from tunesmith.train.stages import get_stage

    stage = get_stage("dpo")
    precision = resolve_precision(recipe.model.precision)
    tokenizer = load_tokenizer(recipe.model.name)
    data = stage.prepare_data(recipe, tokenizer)
    speed = speed_settings(recipe, precision, data.longest)
    _, model = load_for_training(recipe, precision, speed.attention, stage.head)
    ref_model = reference_model(stage, recipe, model, None)  # no schedule: the reference runs in every step
    args = stage.config(recipe, common_arguments(recipe, RunDir(tmp_path), precision, False, speed))
    trainer = stage.trainer(
        model=model, ref_model=ref_model, args=args, data=data, tokenizer=tokenizer, callbacks=[], peft_config=lora_config(recipe, model, stage.head)
    )
    return trainer, tokenizer, data


@pytest.mark.parametrize("method, beta", [("lora", 0.5), ("full", 0.1)])
def test_dpo_loss_equals_the_closed_form(stage_recipe, pairs_jsonl, tmp_path, method, beta):
    import torch
    import torch.nn.functional as F

    four = tmp_path / "four.jsonl"  # one batch is the whole dataset: the mean loss does not depend on the shuffle
    four.write_text("".join(open(pairs_jsonl).readlines()[:4]))
    recipe = stage_recipe(
        "dpo", method=method, **{"data.dataset": str(four), "dpo.beta": beta, "training.per_device_train_batch_size": 4, "output_dir": str(tmp_path / "run")}
    )
    trainer, tokenizer, data = _dpo_trainer(recipe, tmp_path / "run")
    model = trainer.model
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move the policy away from the reference
        for name, p in model.named_parameters():
            if method == "full" or "lora_B" in name:
                p.add_(torch.randn(p.shape, generator=gen) * (0.3 if method == "lora" else 0.02))
    model.eval()
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 8  # 4 chosen + 4 rejected
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch).item()

    pairs = Pairs.from_examples(data.train.to_list())  # the canonical rows the trainer takes
    policy_c = torch.tensor(response_logprobs(model, tokenizer, pairs.prompts, pairs.chosen))
    policy_r = torch.tensor(response_logprobs(model, tokenizer, pairs.prompts, pairs.rejected))
    if method == "lora":
        assert trainer.ref_model is None
        with model.disable_adapter():
            ref_c = torch.tensor(response_logprobs(model, tokenizer, pairs.prompts, pairs.chosen))
            ref_r = torch.tensor(response_logprobs(model, tokenizer, pairs.prompts, pairs.rejected))
    else:
        ref_c = torch.tensor(response_logprobs(trainer.ref_model, tokenizer, pairs.prompts, pairs.chosen))
        ref_r = torch.tensor(response_logprobs(trainer.ref_model, tokenizer, pairs.prompts, pairs.rejected))
    margin = (policy_c - ref_c) - (policy_r - ref_r)
    assert margin.abs().max() > 0.5, margin  # the policy really differs from the reference
    expected = (-F.logsigmoid(beta * margin)).mean().item()
    assert loss == pytest.approx(expected, rel=1e-4)
    assert abs(expected - math.log(2)) > 1e-3  # not the trivial loss of an unchanged policy


# ---------------------------------------------------------------- 4. reward scores and pairwise accuracy


def test_pairwise_accuracy_counts_ties_as_wrong():
    assert pairwise_accuracy([1.0, 2.0, 3.0, 0.5], [0.0, 2.0, 4.0, -1.0]) == 0.5
    assert pairwise_accuracy([1.0], [1.0]) == 0.0
    assert math.isnan(pairwise_accuracy([], []))


def test_reward_scores_read_the_last_real_token_in_padded_batches(tiny_model_dir, smol_tokenizer):
    import torch
    from transformers import AutoModelForSequenceClassification

    from tunesmith.evaluate.preference import encode

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    model.config.pad_token_id = smol_tokenizer.pad_token_id
    prompts = [[{"role": "user", "content": q}] for q in ("Hi?", "What is the capital of France, and why is it so famous?", "2+2?")]
    responses = [[{"role": "assistant", "content": a}] for a in ("Arr.", "Paris, matey, for its food and its long, long history.", "Four")]
    batched = reward_scores(model, smol_tokenizer, prompts, responses, batch_size=8)
    one_by_one = [reward_scores(model, smol_tokenizer, [p], [r], batch_size=1)[0] for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(one_by_one, abs=1e-5)
    assert len(set(round(s, 4) for s in batched)) == 3  # distinct rows, so order mistakes would show
    # one row alone, unpadded: the score at its last token
    ids, _ = encode(smol_tokenizer, prompts[0], responses[0])
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits
    assert batched[0] == pytest.approx(logits[0, 0].item(), abs=1e-5)


# ---------------------------------------------------------------- 5. Pairs from preference and unpaired rows


def test_pairs_from_preference_rows():
    rows = [{"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(3)]
    pairs = Pairs.from_examples(rows)
    assert len(pairs) == 3
    assert (pairs.prompts, pairs.chosen, pairs.rejected) == (["q0", "q1", "q2"], ["good 0", "good 1", "good 2"], ["bad 0", "bad 1", "bad 2"])
    assert len(Pairs.from_examples([])) == 0


def test_pairs_from_unpaired_rows_match_desirable_and_undesirable_per_prompt():
    user = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    rows = [
        {"prompt": user("a"), "completion": "a good", "label": True},
        {"prompt": user("b"), "completion": "b good", "label": True},  # no undesirable answer: left out
        {"prompt": user("c"), "completion": "c bad", "label": False},
        {"prompt": user("a"), "completion": "a bad", "label": False},
        {"prompt": user("c"), "completion": "c good", "label": True},
        {"prompt": user("a"), "completion": "a good too", "label": True},  # the first of each is used
        {"prompt": user("d"), "completion": "d bad", "label": False},  # no desirable answer: left out
    ]
    pairs = Pairs.from_examples(rows)
    assert pairs.prompts == [user("a"), user("c")]
    assert pairs.chosen == ["a good", "c good"]
    assert pairs.rejected == ["a bad", "c bad"]


# ---------------------------------------------------------------- 6. the wrong kind of data stops before a run exists


@pytest.mark.parametrize("stage", ["dpo", "kto", "reward"])
def test_sft_data_for_a_preference_stage_fails_before_the_run_directory(stage_recipe, chat_jsonl, tmp_path, stage):
    recipe = stage_recipe(stage, **{"data.dataset": chat_jsonl, "output_dir": str(tmp_path / "run")})
    with pytest.raises(DataError, match=r"this looks like SFT data \(messages\)"):
        run_stage(recipe, live=False)
    out = tmp_path / "run"
    assert not out.exists() or not any(out.iterdir())


# ---------------------------------------------------------------- 7. sft -> dpo: one adapter on the SFT model


def test_sft_then_dpo_trains_one_adapter_on_the_sft_model(tiny_recipe, stage_recipe, tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    from tunesmith.models.load import load_model

    sft = run_stage(
        tiny_recipe(
            **{
                "training.max_steps": 2,
                "training.save_strategy": "no",
                "training.learning_rate": 1e-2,
                "lora.lora_dropout": 0.0,
                "output_dir": str(tmp_path / "sft"),
            }
        ),
        live=False,
    )
    recorder = Recorder()
    recipe = stage_recipe(
        "dpo",
        **{
            "model.name": str(sft.run_dir),
            "training.max_steps": 2,
            "training.save_strategy": "no",
            "training.learning_rate": 1e-2,
            "output_dir": str(tmp_path / "dpo"),
        },
    )
    dpo = run_stage(recipe, live=False, callbacks=[recorder])

    policy = recorder.model
    assert isinstance(policy, PeftModel)
    assert list(policy.peft_config) == ["default"]
    assert not isinstance(policy.get_base_model(), PeftModel)
    lora_layers = [m for m in policy.modules() if isinstance(m, LoraLayer)]
    assert lora_layers and all(set(m.lora_A) == {"default"} for m in lora_layers)

    ids = torch.tensor([[1, 504, 3458, 314, 260, 1789, 28, 2, 198, 17, 18, 19]])
    policy.eval()
    with torch.no_grad():
        trained = policy(ids).logits
        with policy.disable_adapter():
            reference = policy(ids).logits
        sft_merged = load_model(str(sft.run_dir), merge_adapter=True)(ids).logits
        base = load_model(tiny_model_dir)(ids).logits
    assert not torch.allclose(sft_merged, base, atol=1e-4)  # the SFT adapter changed the model
    assert torch.allclose(reference, sft_merged, atol=1e-5)  # DPO's reference is the SFT model
    assert not torch.allclose(trained, reference, atol=1e-4)  # DPO changed it again

    # the DPO result loads back as the trained policy: base + SFT adapter (merged) + DPO adapter
    with torch.no_grad():
        loaded = load_model(str(dpo.run_dir))(ids).logits
    assert torch.allclose(loaded, trained, atol=1e-5)


# ---------------------------------------------------------------- 8. plan equals trainer for dpo


def test_plan_equals_training_for_dpo(stage_recipe):
    from tunesmith.train.plan import make_plan

    recipe = stage_recipe(
        "dpo",
        **{
            "training.max_steps": 5,
            "training.save_steps": 2,
            "training.logging_steps": 2,
            "training.lr_scheduler_type": "linear",
            "training.warmup_ratio": 0.3,
        },
    )
    plan = make_plan(recipe)
    s = plan.schedule
    recorder = Recorder()
    result = run_stage(recipe, callbacks=[recorder], live=False)

    assert plan.num_examples == 24 and s.num_sequences == 24
    assert result.steps == s.total_steps == 5
    assert_run_followed_plan(plan, recorder, result)


def test_reference_is_precomputed_when_training_passes_over_the_data_twice():
    from tunesmith.recipes import load_recipe
    from tunesmith.train.schedule import compute_schedule
    from tunesmith.train.stages import get_stage
    from tunesmith.train.stages.pairs import precompute_reference

    dpo = get_stage("dpo")
    for epochs, expected in ((1, False), (2, True), (3, True)):
        recipe = load_recipe(None, {"stage": "dpo", "training.num_train_epochs": epochs})
        assert precompute_reference(recipe, dpo, compute_schedule(recipe.training, 250)) is expected
    forced = load_recipe(None, {"stage": "dpo", "dpo.precompute_ref_log_probs": False})
    assert precompute_reference(forced, dpo, compute_schedule(forced.training, 250)) is False
    orpo = load_recipe(None, {"stage": "orpo"})
    assert precompute_reference(orpo, get_stage("orpo"), compute_schedule(orpo.training, 250)) is False  # no reference at all


def test_orpo_and_cpo_see_fp32_logits_over_a_bf16_base(tiny_model_dir):
    """Their trainers log-softmax the logits in the model's dtype: on a bf16 base that would round every log-prob."""
    import torch

    from tunesmith.models.load import load_model
    from tunesmith.train.stages.pairs import logits_in_fp32

    model = logits_in_fp32(load_model(tiny_model_dir, dtype=torch.bfloat16))
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.dtype == torch.float32
    assert next(model.model.parameters()).dtype == torch.bfloat16  # the body stays bf16
