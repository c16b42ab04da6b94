"""`pretrain`: packed blocks score each document as if it ran alone; the stage trains, measures held-out perplexity,
saves a model vanilla peft loads, and `plan` counts the corpus (estimated from a sample until it is cached)."""

from __future__ import annotations

import json

import pytest
import torch

from tunesmith.data import corpus

WORDS = "the ship sails north across grey water while gulls cry above and the crew hauls rope at dawn".split()


def _text(seed: int, words: int) -> str:
    import random

    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words))


@pytest.fixture
def text_corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "log.jsonl").write_text("".join(json.dumps({"text": _text(i, 5 + 7 * (i % 4))}) + "\n" for i in range(60)))
    (folder / "story.txt").write_text(_text(1000, 300))
    return folder


def _loss_sum(model, inputs) -> tuple[float, int]:
    from tunesmith.train.loss import causal_lm_loss

    with torch.no_grad():
        loss, stats = causal_lm_loss(model, inputs)
    return float(loss) * int(stats.tokens), int(stats.tokens)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_a_packed_block_scores_each_document_as_if_it_ran_alone(tiny_model_dir, smol_tokenizer, text_corpus, cache_root, attention):
    from transformers import AutoModelForCausalLM

    from tunesmith.train.stages.pretrain import BlockCollator

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attention).eval()
    cache = corpus.tokenize_corpus(corpus.corpus_files(str(text_corpus)), smol_tokenizer)
    blocks = corpus.load_blocks(corpus.make_blocks(cache, 128, eval_blocks=0).train)
    row = next(r for r in blocks if len(r["seq_lengths"]) >= 4)  # a block holding several documents
    last = blocks[len(blocks) - 1]
    assert len(last["input_ids"]) < 128  # the corpus's shorter last block: padded in a batch with a whole one
    collate = BlockCollator(smol_tokenizer.pad_token_id)
    packed, packed_tokens = _loss_sum(model, collate([row]))
    both, both_tokens = _loss_sum(model, collate([last, row]))
    last_alone, last_tokens = _loss_sum(model, collate([last]))
    assert both_tokens == packed_tokens + last_tokens and both == pytest.approx(packed + last_alone, rel=1e-5)

    alone, alone_tokens, start = 0.0, 0, 0
    for length in row["seq_lengths"]:
        ids = torch.tensor([row["input_ids"][start : start + length]])
        s, n = _loss_sum(model, {"input_ids": ids, "labels": ids.clone()})
        alone, alone_tokens, start = alone + s, alone_tokens + n, start + length
    assert packed_tokens == alone_tokens == 128 - len(row["seq_lengths"])  # each document's first token has no context
    assert packed == pytest.approx(alone, rel=1e-5)

    # the same tokens packed without the document lengths attend across documents: a different loss
    naive = {"input_ids": torch.tensor([row["input_ids"]]), "labels": torch.tensor([row["input_ids"]])}
    crossing, _ = _loss_sum(model, naive)
    assert abs(crossing / 127 - packed / packed_tokens) > 1e-3


@pytest.fixture
def pretrain_recipe(tiny_model_dir, text_corpus, tmp_path):
    from tunesmith.recipes import load_recipe

    def make(**overrides):
        base = {
            "stage": "pretrain",
            "model.name": tiny_model_dir,
            "model.precision": "fp32",
            "data.dataset": str(text_corpus),
            "data.max_length": 64,
            "pretrain.eval_blocks": 4,
            "sample.prompts": ["the ship"],
            "sample.max_new_tokens": 4,
            "output_dir": str(tmp_path / "run"),
            "training.per_device_train_batch_size": 4,
            "training.gradient_accumulation_steps": 1,
            "training.learning_rate": 3e-3,
            "training.logging_steps": 2,
        }
        base.update(overrides)
        return load_recipe(None, base)

    return make


def test_pretrain_trains_on_the_blocks_and_lowers_held_out_perplexity(pretrain_recipe, cache_root):
    from peft import AutoPeftModelForCausalLM

    from tunesmith.train.plan import make_plan
    from tunesmith.train.scaffold import run_stage

    recipe = pretrain_recipe()
    estimated = make_plan(recipe)
    assert "estimated from a" in estimated.data_summary and not list(cache_root.glob("*/complete.json"))  # nothing tokenised
    result = run_stage(recipe, live=False)
    exact = make_plan(recipe)
    assert "estimated" not in exact.data_summary
    assert result.steps == exact.schedule.total_steps  # the plan's steps are what ran: one epoch over the blocks
    assert abs(estimated.schedule.total_steps - exact.schedule.total_steps) <= max(1, exact.schedule.total_steps // 5)
    perplexity = next(c for c in result.changes if c.metric.startswith("held-out perplexity"))
    assert perplexity.after < perplexity.before
    assert result.before and result.after  # raw-text continuations before and after
    model = AutoPeftModelForCausalLM.from_pretrained(str(result.model_dir))
    assert model(torch.tensor([[1, 2, 3]])).logits.shape[-1] == model.config.vocab_size


def test_train_embeddings_trains_the_tied_embeddings_beside_the_adapter(pretrain_recipe, cache_root):
    from tunesmith.train.plan import make_plan
    from tunesmith.train.scaffold import run_stage

    recipe = pretrain_recipe(**{"lora.train_embeddings": True, "training.max_steps": 2})
    planned = make_plan(recipe).trainable_parameters
    result = run_stage(recipe, live=False)
    assert result.trainable_parameters == planned
    from safetensors.torch import load_file

    saved = load_file(str(result.model_dir / "adapter_model.safetensors"))
    assert any("embed_tokens" in k for k in saved)


@pytest.mark.slow  # three short runs (~7 s); SFT's resume test stays in the fast suite, on the same scaffold
def test_a_stopped_pretrain_run_resumes_on_the_same_curve(pretrain_recipe, cache_root, tmp_path):
    from recorders import StopAt

    from tunesmith.train.scaffold import run_stage

    common = {"training.max_steps": 4, "training.save_strategy": "steps", "training.save_steps": 2, "training.logging_steps": 1}
    straight = run_stage(pretrain_recipe(**common, output_dir=str(tmp_path / "a")), live=False)
    run_stage(pretrain_recipe(**common, output_dir=str(tmp_path / "b")), live=False, callbacks=[StopAt(2)])
    resumed = run_stage(resume=str(tmp_path / "b"), stage_name="pretrain", live=False)

    def losses(run):
        return {m["step"]: m["loss"] for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in m}

    a, b = losses(straight.run_dir), losses(resumed.run_dir)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4] and len(set(a.values())) > 1
    assert all(b[s] == pytest.approx(a[s], rel=1e-5) for s in a), (a, b)
    flat = lambda result: [v for c in result.changes for v in (c.before, c.after)]  # noqa: E731
    assert flat(resumed) == pytest.approx(flat(straight), rel=1e-4)  # the "before" perplexity was kept in the run
