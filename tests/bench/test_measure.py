"""The benchmark's FLOP count is the work a step really does, checked against torch's own FLOP counter."""

from __future__ import annotations

import pytest
import torch

from tunesmith.bench.generate import compare_outputs
from tunesmith.bench.measure import training_flops
from tunesmith.train.loss import causal_lm_loss


def test_training_flops_match_torchs_counter(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="eager")
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    B, L = 3, 20  # no padding: every position is real
    ids = torch.randint(0, 1000, (B, L))
    labels = ids.clone()
    labels[:, :8] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    scored = int((labels[:, 1:] != -100).sum())

    with FlopCounterMode(display=False) as counter:
        loss, _ = causal_lm_loss(model, batch)
        loss.backward()
    counted = counter.get_total_flops()

    c = model.config
    h, kv_width = c.hidden_size, c.num_key_value_heads * (c.hidden_size // c.num_attention_heads)
    expected = training_flops(c, lora, [L] * B, scored)
    # what kernels do beyond the work itself: eager attention also multiplies the masked (future) half of
    # each L x L product; and what they skip: layer 0's input gradients (embeddings are frozen, nothing needs them)
    attention_masked_half = B * 6 * c.num_hidden_layers * h * L * L
    layer0_input_grads = B * L * 2 * (h * h + 2 * h * kv_width) + B * L * 2 * 2 * 4 * h  # q, k, v and both LoRA A's
    assert counted == pytest.approx(expected + attention_masked_half - layer0_input_grads, rel=0.01)


def test_output_comparison_reports_where_replies_part():
    ref = {"side": "hf", "token_ids": [[1, 2, 3], [4, 5]], "texts": ["a b c", "d e"]}
    other = {"side": "ours", "token_ids": [[1, 2, 3], [4, 6, 7]], "texts": ["a b c", "d f g"]}
    result = compare_outputs(ref, other, ["p1", "p2"])
    assert (result["identical"], result["of"], result["share_identical"]) == (1, 2, 0.5)
    assert result["differences"] == [{"prompt": "p2", "first_difference_at_token": 1, "hf": "d e", "ours": "d f g"}]


def test_rl_step_flops_count_a_rollout_as_torchs_counter_does(tiny_model_dir):
    """A prompt prefilled once, then each completion token but the last fed back through a KV cache: the count
    equals torch's FLOP counter, less what eager attention does beyond causal work (the prefill's masked half)."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM, DynamicCache

    from tunesmith.bench.measure import attention_forward_flops, decoder_weights, reference_flops, rl_step_flops

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    prompt, completion = 12, 9
    ids = torch.randint(0, 1000, (1, prompt))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        cache = DynamicCache(config=model.config)
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        for _ in range(completion - 1):
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            out = model(input_ids=token, past_key_values=cache, use_cache=True)
    c = model.config
    rollout = rl_step_flops(c, 0, 1, 1, prompt, completion, reference=False) - training_flops(c, 0, [prompt + completion], completion)
    assert counter.get_total_flops() == pytest.approx(rollout + attention_forward_flops(c, [prompt]), rel=1e-6)
    # a group shares its prompt's prefill: 8 completions of one prompt cost less than 8 of their own
    assert rl_step_flops(c, 0, 8, 8, 8 * prompt, 8 * completion, False) < rl_step_flops(c, 0, 8, 1, 8 * prompt, 8 * completion, False)
    with_reference = rl_step_flops(c, 0, 8, 8, 8 * prompt, 8 * completion, True) - rl_step_flops(c, 0, 8, 8, 8 * prompt, 8 * completion, False)
    # the reference's forward of the 8 sequences, the group's prompt counted once
    assert with_reference == pytest.approx(reference_flops(c, [prompt + completion] * 8, 8 * completion) - reference_flops(c, [prompt] * 7, 0))
    # the update too: one group of 8 is the work of 8 completions and one prompt
    one_group = rl_step_flops(c, 0, 8, 8, 8 * prompt, 8 * completion, False)
    own_prompts = rl_step_flops(c, 0, 8, 1, 8 * prompt, 8 * completion, False)
    prefill = 7 * (prompt * 2 * decoder_weights(c) + attention_forward_flops(c, [prompt]) + 2 * c.vocab_size * c.hidden_size)
    assert own_prompts - one_group == pytest.approx(prefill + training_flops(c, 0, [prompt] * 7, 0))


def test_a_batch_of_pairs_repeats_each_prompt_once():
    """bench dpo counts each pair's prompt once: the counter finds the prompt copies a batch repeats."""
    from tunesmith.bench.measure import repeated_prompts

    ids = torch.tensor([[1, 2, 3, 7, 0], [4, 5, 8, 9, 0], [1, 2, 3, 6, 6], [4, 5, 9, 0, 0], [1, 2, 5, 5, 5]])
    prompt = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 0, 0, 0]]).bool()
    assert repeated_prompts(ids, prompt) == [3, 2]  # rows 2 and 3 repeat rows 0 and 1; row 4's [1, 2] is a prompt of its own


def test_the_batch_counter_reads_padding_free_rows():
    """TRL's padding-free batches (and its packing): one row, positions restarting, no mask; the bench reports
    padding-free from the batches themselves."""
    from types import SimpleNamespace

    from tunesmith.bench.measure import batch_counter

    class Trainer:
        state = SimpleNamespace(global_step=0)

        def training_step(self, model, inputs):
            return "trained"

    counter = batch_counter(Trainer)
    padded = {
        "input_ids": torch.zeros(2, 4, dtype=torch.long),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]),
        "labels": torch.zeros(2, 4, dtype=torch.long),
    }
    Trainer().training_step(None, padded)
    assert not counter.padding_free
    labels = torch.tensor([[-100, 5, 6, -100, 7, 8, 9]])
    Trainer().training_step(None, {"input_ids": torch.zeros(1, 7, dtype=torch.long), "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2, 3]]), "labels": labels})
    assert counter.padding_free and counter.since(step=0) == ([3, 4, 3, 4], 6 + 5)
