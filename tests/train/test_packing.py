"""Packed (padding-free) batches give each example the loss it has alone, with the CPU attention kernels we use."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunesmith.train.loss import causal_lm_loss


def _token_losses(logits, labels):
    return F.cross_entropy(logits[0, :-1].float(), labels[0, 1:], ignore_index=-100, reduction="none")


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_packed_loss_equals_unpacked_per_example(tiny_model_dir, smol_tokenizer, attention):
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from tunesmith.data.tokenize import tokenize_example

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attention).eval()
    chats = [
        [{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "Arr, five it be."}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Ahoy, matey! What brings ye aboard today?"}],
        [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue as the deep sea."}],
    ]
    examples = [tokenize_example({"messages": m}, smol_tokenizer) for m in chats]
    collate = DataCollatorForLanguageModeling(pad_token_id=smol_tokenizer.pad_token_id)
    packed = DataCollatorForLanguageModeling(pad_token_id=smol_tokenizer.pad_token_id, padding_free=True)(examples)
    assert "attention_mask" not in packed and packed["input_ids"].shape[0] == 1

    with torch.no_grad():
        alone = []
        for example in examples:
            single = collate([example])
            alone.append(_token_losses(model(**{k: v for k, v in single.items() if k != "labels"}).logits, single["labels"]))
        # transformers finds the packed boundaries in position_ids only without a KV cache (training calls are
        # use_cache=False, ours and TRL's); with a cache the row would be one long sequence
        row = _token_losses(model(**{k: v for k, v in packed.items() if k != "labels"}, use_cache=False).logits, packed["labels"])
        ours_packed, stats = causal_lm_loss(model, packed)

    # position j of the packed row predicts token j+1: example k (starting at s, n tokens) owns j = s .. s+n-2
    start = 0
    for example, single in zip(examples, alone):
        n = len(example["input_ids"])
        assert torch.allclose(row[start : start + n - 1], single, atol=1e-5)
        start += n
    total_alone = sum(s.sum() for s in alone)
    scored_alone = sum(int((collate([e])["labels"][0, 1:] != -100).sum()) for e in examples)
    assert int(stats.tokens) == scored_alone
    assert ours_packed.item() == pytest.approx((total_alone / scored_alone).item(), rel=1e-5)
