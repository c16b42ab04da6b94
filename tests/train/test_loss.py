"""The compact loss is the usual causal-LM loss: same value, same gradients, same training curve as TRL's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunesmith.train.loss import causal_lm_loss, linear_cross_entropy


@pytest.mark.parametrize("chunk", [5, 1024])
def test_linear_cross_entropy_matches_full_logits(chunk):
    torch.manual_seed(0)
    hidden = torch.randn(13, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    targets = torch.randint(0, 50, (13,))

    total, stats = linear_cross_entropy(hidden, weight, targets, chunk=chunk)
    (2.5 * total).backward()
    got = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    logits = hidden @ weight.t()
    expected = F.cross_entropy(logits, targets, reduction="sum")
    (2.5 * expected).backward()

    assert torch.allclose(total, expected, rtol=1e-6)
    assert torch.allclose(got[0], hidden.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(got[1], weight.grad, rtol=1e-5, atol=1e-6)
    probs = logits.detach().softmax(-1)
    assert int(stats.tokens) == 13
    assert int(stats.correct) == int((logits.argmax(-1) == targets).sum())
    assert stats.entropy.item() == pytest.approx(-(probs * probs.log()).sum().item(), rel=1e-5)


def test_frozen_head_gets_no_gradient():
    hidden = torch.randn(4, 8, requires_grad=True)
    weight = torch.randn(20, 8)
    total, _ = linear_cross_entropy(hidden, weight, torch.tensor([1, 2, 3, 4]))
    total.backward()
    assert hidden.grad is not None and weight.grad is None


def _batch(tokenizer):
    rows = [tokenizer("Arr, matey, the sea be calm today.")["input_ids"], tokenizer("Ahoy!")["input_ids"]]
    width = max(map(len, rows))
    ids = torch.full((2, width), tokenizer.pad_token_id)
    mask = torch.zeros((2, width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[:, :2] = -100  # a "prompt" that is not scored
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("adapter", [False, True])
def test_causal_lm_loss_equals_the_models_own(tiny_model_dir, smol_tokenizer, adapter):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    if adapter:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    params = [p for p in model.parameters() if p.requires_grad]
    batch = _batch(smol_tokenizer)

    ours, stats = causal_lm_loss(model, batch)
    ours.backward()
    ours_grads = [p.grad.clone() for p in params]
    model.zero_grad()

    theirs = model(**batch).loss
    theirs.backward()

    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    assert int(stats.tokens) == int((batch["labels"][:, 1:] != -100).sum())
    for a, p in zip(ours_grads, params):
        assert torch.allclose(a, p.grad, rtol=1e-3, atol=1e-6)  # fp32 sums in another order


@pytest.mark.slow  # two trainings (~6 s); the fast suite keeps the loss and gradients against the model's own
def test_trainer_curve_equals_trls(tiny_model_dir, smol_tokenizer, chat_jsonl, tmp_path):
    """Same model, data and seed: CompactLossSFTTrainer logs the losses and accuracies SFTTrainer logs."""
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from tunesmith.train.trainer import CompactLossSFTTrainer

    data = load_dataset("json", data_files=chat_jsonl, split="train")

    def curve(cls):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        args = SFTConfig(
            output_dir=str(tmp_path / cls.__name__),
            max_steps=4,
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            learning_rate=1e-2,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            bf16=False,
            use_cpu=True,
            max_length=64,
            gradient_checkpointing=False,
            seed=0,
            data_seed=0,
        )
        trainer = cls(
            model=model,
            args=args,
            train_dataset=data,
            processing_class=smol_tokenizer,
            peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
        )
        trainer.train()
        return [h for h in trainer.state.log_history if "loss" in h]

    ours, theirs = curve(CompactLossSFTTrainer), curve(SFTTrainer)
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["mean_token_accuracy"] == pytest.approx(b["mean_token_accuracy"], abs=1e-6)
        assert a["entropy"] == pytest.approx(b["entropy"], rel=1e-3)
        assert a["num_tokens"] == b["num_tokens"]


def test_under_autocast_the_head_runs_in_bf16_and_fp32_weights_get_gradients(tiny_model_dir, smol_tokenizer):
    """Full fine-tuning: fp32 master weights, bf16 autocast (the tied head/embedding is trained too)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    batch = _batch(smol_tokenizer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, _ = causal_lm_loss(model, batch)
    ours.backward()
    head = model.get_output_embeddings().weight
    ours_grad = head.grad.clone()
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theirs = model(**batch).loss
    theirs.backward()
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-2)
    assert torch.nn.functional.cosine_similarity(ours_grad.flatten(), head.grad.flatten(), dim=0) > 0.99


@pytest.mark.parametrize("chunk,temperature", [(5, 1.0), (1024, 0.7)])
def test_token_log_probs_match_full_logits(chunk, temperature):
    """Per-token log-probabilities, the logged figures and the hidden states' gradient under any upstream gradient."""
    from tunesmith.train.loss import token_log_probs

    torch.manual_seed(0)
    hidden = torch.randn(13, 16, requires_grad=True)
    weight = torch.randn(50, 16)
    targets = torch.randint(0, 50, (13,))
    upstream = torch.randn(13)

    got = token_log_probs(hidden, weight, targets, temperature=temperature, chunk=chunk)
    (got.log_probs * upstream).sum().backward()
    ours = hidden.grad.clone()
    hidden.grad = None

    logits = (hidden @ weight.t()) / temperature
    logp = logits.log_softmax(-1)
    expected = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    (expected * upstream).sum().backward()

    p = logp.detach().exp()
    assert torch.allclose(got.log_probs, expected, atol=1e-5)
    assert torch.allclose(ours, hidden.grad, rtol=1e-4, atol=1e-6)
    assert torch.allclose(got.entropy, -(p * logp.detach()).sum(-1), atol=1e-5)
    assert torch.allclose(got.mean_logits, logits.detach().mean(-1), atol=1e-5)
    assert torch.allclose(got.log_sum_sq_probs, (p * p).sum(-1).log(), atol=1e-5)
    assert torch.equal(got.is_top1, logits.argmax(-1) == targets)
    with pytest.raises(NotImplementedError, match="entropy"):  # no gradient through the entropy: an error, not a silent zero
        token_log_probs(hidden, weight, targets).entropy.sum().backward()


def test_chunk_buffers_are_kept_per_thread_and_calls_in_between_change_no_result():
    """A CPU call reuses the thread's last chunk buffers (no fresh vocabulary-sized block to page-fault in); calls with
    another dtype, vocabulary, chunk size or length in between, or on another thread, leave every result exact."""
    import threading

    from tunesmith.train import loss
    from tunesmith.train.loss import token_log_probs

    torch.manual_seed(0)
    hidden, weight, targets = torch.randn(13, 16), torch.randn(50, 16), torch.randint(0, 50, (13,))
    first = loss._chunk_buffers(8, 13, 50, hidden)
    assert loss._chunk_buffers(8, 3, 50, hidden)[0] is first[0]  # a shorter call: the same blocks
    assert loss._chunk_buffers(8, 13, 60, hidden)[0] is not first[0]  # another vocabulary: new ones
    expected = token_log_probs(hidden, weight, targets, chunk=8).log_probs
    in_between = [
        lambda: token_log_probs(hidden.bfloat16(), weight.bfloat16(), targets, chunk=8),
        lambda: token_log_probs(torch.randn(3, 16), torch.randn(70, 16), torch.randint(0, 70, (3,)), chunk=5),
        lambda: linear_cross_entropy(torch.randn(40, 16), weight, torch.randint(0, 50, (40,)), chunk=8),
    ]
    for call in in_between:
        call()
        assert torch.equal(token_log_probs(hidden, weight, targets, chunk=8).log_probs, expected)
    seen = []
    other = threading.Thread(target=lambda: seen.append(loss._chunk_buffers(8, 13, 50, hidden)[0]))
    other.start()
    other.join()
    assert seen[0] is not loss._chunk_buffers(8, 13, 50, hidden)[0]  # each thread its own: a server's threads never share


def test_token_log_probs_refuse_a_trainable_head():
    from tunesmith.train.loss import token_log_probs

    with pytest.raises(ValueError, match="must not require"):
        token_log_probs(torch.randn(2, 4), torch.randn(10, 4, requires_grad=True), torch.tensor([1, 2]))


@pytest.mark.parametrize("temperature", [1.0, 0.9])
def test_replaced_fused_head_gives_what_trls_gives(tiny_model_dir, smol_tokenizer, temperature):
    """The head DPO/KTO/GRPO/RLOO call: same outputs and same adapter gradients as TRL's `add_fused_lm_head`,
    scoring only the labelled positions; calls without `fused_lm_head` are the model's own."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from tunesmith.train.loss import replace_fused_head

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    add_fused_lm_head(model, temperature=temperature, outputs=("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1"))
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    params = [p for p in model.parameters() if p.requires_grad]
    batch = _batch(smol_tokenizer)
    upstream = torch.randn(batch["labels"].shape[0], batch["labels"].shape[1] - 1)

    def run():
        out = model(**batch, fused_lm_head=True)
        ((out.log_probs * upstream).sum() + out.loss).backward()
        grads = [p.grad.clone() for p in params]
        model.zero_grad()
        return out, grads

    theirs, their_grads = run()
    assert replace_fused_head(model, temperature)
    ours, our_grads = run()

    for field in ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits"):
        assert torch.allclose(getattr(ours, field), getattr(theirs, field), atol=1e-5), field
    assert torch.equal(ours.is_top1, theirs.is_top1) and torch.equal(ours.label_mask, theirs.label_mask)
    assert ours.loss.item() == pytest.approx(theirs.loss.item(), rel=1e-6)
    for a, b in zip(our_grads, their_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    plain = model(**{k: v for k, v in batch.items() if k != "labels"})
    assert plain.logits.shape[-1] == model.config.vocab_size  # the model's own forward, untouched


def test_trainable_head_keeps_trls(tiny_model_dir, smol_tokenizer):
    """Full fine-tuning trains the head: TRL's head runs (it gives the head's gradient)."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from tunesmith.train.loss import replace_fused_head

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    add_fused_lm_head(model)
    assert replace_fused_head(model, 1.0)
    out = model(**_batch(smol_tokenizer), fused_lm_head=True)
    out.loss.backward()
    assert model.get_output_embeddings().weight.grad is not None
