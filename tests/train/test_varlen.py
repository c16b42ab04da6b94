"""Padding-free SFT on a CPU (train/varlen.py): each example of a packed row computes what its padded row computes."""

from __future__ import annotations

import pytest
import torch

from tunesmith.train import varlen

LENGTHS = (7, 12, 4)


def _examples(offset: int = 100):
    torch.manual_seed(1)
    return [torch.randint(offset, offset + 50, (n,)) for n in LENGTHS]


def _padded(examples, pad: int):
    longest = max(len(e) for e in examples)
    ids = torch.full((len(examples), longest), pad)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(examples):
        ids[i, : len(e)], mask[i, : len(e)] = e, 1
    return ids, mask.bool()


def _packed(examples):
    """What TRL's padding-free collator hands the model: one row, positions restarting, the boundaries."""
    bounds = torch.tensor([0, *torch.tensor([len(e) for e in examples]).cumsum(0).tolist()], dtype=torch.int32)
    longest = int(bounds.diff().max())
    return dict(
        input_ids=torch.cat(examples)[None],
        position_ids=torch.cat([torch.arange(len(e)) for e in examples])[None],
        cu_seq_lens_q=bounds,
        cu_seq_lens_k=bounds,
        max_length_q=longest,
        max_length_k=longest,
    )


def _both(path, kernel: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=kernel)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # no weight left at an init that hides a mistake (zero biases, unit norms)
    return model


def _compare(model, kernel: str, examples):
    """The padded batch on `kernel`, then the packed row padding-free: hidden states of every real token, and the
    gradients of every weight under the same random upstream gradient."""
    ids, mask = _padded(examples, model.config.pad_token_id or 0)
    upstream = [torch.randn(len(e), model.config.hidden_size) for e in examples]

    def grads():
        out = [p.grad.clone() for p in model.model.parameters()]
        model.zero_grad()
        return out

    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    expected = torch.cat([hidden[i, : len(e)] for i, e in enumerate(examples)])
    (expected * torch.cat(upstream)).sum().backward()
    expected_grads = grads()

    varlen.install(model, kernel)
    got = model.model(**_packed(examples)).last_hidden_state[0]
    (got * torch.cat(upstream)).sum().backward()
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    for (name, _), a, b in zip(model.model.named_parameters(), grads(), expected_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name
    return got.detach()


@pytest.mark.parametrize("kernel", varlen.KERNELS)
@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"])
def test_every_family_trains_padding_free_to_its_padded_outputs_and_gradients(family, kernel, family_model):
    """Biases, q/k norms, soft-capped attention (Gemma 2: eager only), sliding windows, fused projections."""
    if family == "gemma2" and kernel == "sdpa":
        pytest.skip("transformers has no sdpa path for Gemma 2's soft-capped attention")
    model = _both(family_model(family), kernel)
    _compare(model, kernel, _examples())


@pytest.mark.parametrize("kernel", varlen.KERNELS)
def test_a_window_shorter_than_an_example_slides_inside_it(kernel, family_model):
    model = _both(family_model("mistral"), kernel)
    whole = _compare(model, kernel, _examples())
    model = _both(family_model("mistral"), kernel)
    model.config.sliding_window = 3  # examples of 7 and 12 tokens: their later tokens must not see their first
    assert not torch.allclose(_compare(model, kernel, _examples()), whole, atol=1e-3)


def test_without_boundaries_it_is_the_kernel_it_wraps(family_model):
    """Generation and padded batches (eval, the answers shown after training) run the wrapped kernel as it is."""
    from transformers import AutoModelForCausalLM

    from tunesmith.infer import generate

    path = family_model("llama")
    plain = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    wrapped = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    varlen.install(wrapped, "eager")
    ids, mask = _padded(_examples(), 0)
    assert torch.equal(plain(input_ids=ids, attention_mask=mask).logits, wrapped(input_ids=ids, attention_mask=mask).logits)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts = ["Hello there", "What is the capital of France?"]
    assert generate(plain, tokenizer, prompts, max_new_tokens=6) == generate(wrapped, tokenizer, prompts, max_new_tokens=6)


@pytest.mark.parametrize("packing", [False, True])
def test_sft_on_a_cpu_runs_padding_free_and_learns_as_padded(packing, tiny_recipe, tmp_path, monkeypatch):
    """The same steps padded (packed: transformers' mask over each packed row) and padding-free: the same losses;
    batches without padding; the tokens counted are the real ones (the tiny model's tokenizer pads with its
    end-of-turn token, which padding-free rows are full of)."""
    import tunesmith.train.speed as speed
    from tunesmith.runs.rundir import RunDir
    from tunesmith.train.sft import run_sft
    from tunesmith.train.trainer import CompactLossSFTTrainer

    seen: list[dict] = []
    real = CompactLossSFTTrainer.compute_loss

    def spy(self, model, inputs, *args, **kwargs):
        seen.append({k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)})
        return real(self, model, inputs, *args, **kwargs)

    def curve(run_dir):
        metrics = RunDir(run_dir).read_metrics()
        return [m["loss"] for m in metrics if "loss" in m], max(m.get("num_input_tokens_seen", 0) for m in metrics)

    monkeypatch.setattr(CompactLossSFTTrainer, "compute_loss", spy)
    common = {"training.max_steps": 3, "training.logging_steps": 1, "training.save_strategy": "no", "lora.lora_dropout": 0.0, "data.packing": packing}
    if packing:
        common["data.max_length"] = 256  # rows of several examples
    free = run_sft(tiny_recipe(**common, output_dir=str(tmp_path / "free")), live=False)
    batches, seen[:] = list(seen), []
    monkeypatch.setattr(speed, "trains_padding_free", lambda *a: False)
    padded = run_sft(tiny_recipe(**common, output_dir=str(tmp_path / "padded")), live=False)

    assert all("attention_mask" not in b and b["input_ids"].shape[0] == 1 and "cu_seq_lens_q" in b for b in batches)
    if packing:  # TRL packs padding-free either way; without tunesmith's attention, transformers masks the whole row
        assert all(b["input_ids"].shape[0] == 1 for b in seen)
        assert any((b["position_ids"] == 0).sum() > 2 for b in batches)  # more examples than the 2 packed rows
        real_tokens = sum(b["input_ids"].numel() for b in seen)
    else:
        assert all("attention_mask" in b for b in seen) and any(not b["attention_mask"].all() for b in seen)
        real_tokens = sum(int(b["attention_mask"].sum()) for b in seen)
    assert real_tokens == sum(b["input_ids"].numel() for b in batches)
    (free_losses, free_tokens), (padded_losses, padded_tokens) = curve(free.run_dir), curve(padded.run_dir)
    assert len(free_losses) == 3 and free_losses == pytest.approx(padded_losses, rel=1e-4)
    assert free_tokens == padded_tokens == real_tokens


def test_the_plan_and_the_run_say_padding_free(tiny_recipe):
    from tunesmith.models.precision import resolve_precision
    from tunesmith.train.speed import speed_settings

    cpu = resolve_precision("fp32")
    assert speed_settings(tiny_recipe(), cpu, 64).padding_free
    assert "padding-free" in speed_settings(tiny_recipe(), cpu, 64).summary()
    assert not speed_settings(tiny_recipe(stage="dpo"), cpu, 64).padding_free  # DPO packs its own rows (train/prefix.py)
    for stage in ("dpo", "kto"):  # ... and runs them without padding too, as the line says
        assert speed_settings(tiny_recipe(stage=stage), cpu, 64).varlen
        assert "padding-free" in speed_settings(tiny_recipe(stage=stage), cpu, 64).summary()
    assert "padding-free" not in speed_settings(tiny_recipe(stage="reward"), cpu, 64).summary()
