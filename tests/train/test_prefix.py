"""Shared prompts run once (train/prefix.py): the packed rows give the hidden states, log-probabilities and
gradients of the rows as given, for DPO's right-padded pairs and GRPO's left-padded groups, on every family; rows
that share nothing (KTO's) run without their padding where the model runs padding-free."""

from __future__ import annotations

import pytest
import torch

from tunesmith.train.prefix import pack_rows, pack_shared_prompts, scored_hidden_states, within_window

P1, P2 = [5, 6, 7, 8], [9, 10, 11]


def dpo_batch(pad: int = 0):
    """Chosen rows then rejected rows (TRL's DPO layout): rows i and i + 2 share a prompt; answers right-padded."""
    rows = [P1 + [20, 21, 22], P2 + [30, 31], P1 + [40, 41, 42, 43, 44], P2 + [50]]
    prompt = [len(P1), len(P2), len(P1), len(P2)]
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = ids.masked_fill(mask == 0, -100)
    for i, n in enumerate(prompt):
        labels[i, :n] = -100
    return ids, mask, labels


def grpo_batch(pad: int = 0):
    """Left-padded prompts, right-padded completions of one length (TRL's GRPO layout): a group of two per prompt."""
    prompts = [[pad, pad] + P2, [pad, pad] + P2, [5] + P1, [5] + P1]
    completions = [[60, 61, 62], [63, pad, pad], [64, 65, pad], [66, 67, 68]]
    ids = torch.tensor([p + c for p, c in zip(prompts, completions)])
    mask = torch.tensor([[int(t != pad) for t in p] + [int(t != pad) for t in c] for p, c in zip(prompts, completions)])
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-3] = -100
    return ids, mask, labels


def kto_batch(pad: int = 0, left: bool = False):
    """Rows of four different prompts (TRL's KTO layout: flushed left, right-padded; or left-padded)."""
    prompts = [P1, P2, [12, 13], [14, 15, 16, 17, 18]]
    answers = [[20, 21, 22], [30, 31], [40, 41, 42, 43, 44, 45], [50]]
    width = max(len(p) + len(a) for p, a in zip(prompts, answers))
    ids, mask, labels = [], [], []
    for prompt, answer in zip(prompts, answers):
        gap = width - len(prompt) - len(answer)
        row = ([pad] * gap if left else []) + prompt + answer + ([] if left else [pad] * gap)
        real = ([0] * gap if left else []) + [1] * (len(prompt) + len(answer)) + ([] if left else [0] * gap)
        label = [t if r and i >= (gap if left else 0) + len(prompt) else -100 for i, (t, r) in enumerate(zip(row, real))]
        ids.append(row), mask.append(real), labels.append(label)
    return torch.tensor(ids), torch.tensor(mask), torch.tensor(labels)


def kto_left_padded():
    return kto_batch(left=True)


def test_packing_runs_each_prompt_once_and_answers_never_see_each_other():
    ids, mask, labels = dpo_batch()
    packed = pack_shared_prompts(ids, mask, labels[:, 1:] != -100)
    assert packed.input_ids.tolist() == [P1 + [20, 21, 22, 40, 41, 42, 43, 44], P2 + [30, 31, 50] + [0] * 6]
    assert packed.position_ids[0].tolist() == [0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 8]
    seen = packed.attention_mask[0, 0]
    first, second = 4, 7  # where each answer starts in the packed row
    assert seen[second:, :first].all()  # every answer sees the whole prompt
    assert not seen[second:, first:second].any()  # the rejected answer never sees the chosen one
    assert torch.equal(seen[first:second, first:second], torch.ones(3, 3, dtype=torch.bool).tril())  # causal within an answer
    assert packed.scored.numel() == int((labels[:, 1:] != -100).sum())
    assert packed.positions == int(mask.sum())


def test_nothing_shared_or_an_odd_mask_runs_as_given():
    ids, mask, labels = dpo_batch()
    scored = labels[:, 1:] != -100
    assert pack_shared_prompts(ids[:2], mask[:2], scored[:2]) is None  # two different prompts
    holed = mask.clone()
    holed[0, 5] = 0  # a gap inside a row: not a padding run
    assert pack_shared_prompts(ids, holed, scored) is None


def test_a_row_with_nothing_scored_is_left_out():
    ids, mask, labels = dpo_batch()
    labels[1] = -100
    packed = pack_shared_prompts(ids, mask, labels[:, 1:] != -100)
    assert packed.input_ids.shape[0] == 2 and packed.scored.numel() == int((labels[:, 1:] != -100).sum())
    assert packed.input_ids[1].tolist()[:4] == P2 + [50]  # the other row of that prompt alone


@pytest.mark.parametrize("layout", [kto_batch, kto_left_padded])
def test_rows_sharing_nothing_pack_as_they_are_without_padding(layout):
    ids, mask, labels = layout()
    scored = labels[:, 1:] != -100
    assert pack_shared_prompts(ids, mask, scored) is None
    packed = pack_rows(ids, mask, scored)
    assert [row[:n] for row, n in zip(packed.input_ids.tolist(), packed.lengths)] == [r[m.bool()].tolist() for r, m in zip(ids, mask)]
    assert packed.position_ids[2].tolist() == list(range(packed.length))
    assert packed.attention_mask is None and packed.positions == int(mask.sum())
    flat = packed.input_ids.flatten()
    assert torch.equal(flat[packed.scored], ids[:, :-1][scored]) and torch.equal(flat[packed.scored + 1], ids[:, 1:][scored])
    inputs, at = packed.padding_free()
    assert torch.equal(inputs["input_ids"][0, at], ids[:, :-1][scored]) and torch.equal(inputs["input_ids"][0, at + 1], ids[:, 1:][scored])
    assert inputs["cu_seq_lens_q"].tolist() == [0, 7, 12, 20, 26]


def test_rows_pack_without_the_unscored_ones_and_refuse_a_hole():
    ids, mask, labels = kto_batch()
    labels[1] = -100
    scored = labels[:, 1:] != -100
    packed = pack_rows(ids, mask, scored)
    assert packed.input_ids.shape[0] == 3 and packed.scored.numel() == int(scored.sum())
    holed = mask.clone()
    holed[0, 2] = 0
    assert pack_rows(ids, holed, scored) is None


def _tiny(impl: str, **extra):
    from families import TINY
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, **TINY, attn_implementation=impl, **extra)).float()


def _run_recording(model, seen: list):
    def run(**inputs):
        seen.append(inputs["input_ids"].shape)
        return model.model(**inputs).last_hidden_state

    return run


@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("layout", [dpo_batch, grpo_batch, kto_batch, kto_left_padded])
def test_packed_hidden_states_are_the_rows_as_given(impl, layout, varlen):
    """With train/varlen.py's attention (SFT, DPO, ORPO, CPO, KTO on a CPU) the packed rows also drop their padding:
    the layers see one row of their real tokens, each packed row attending as its own mask says. Rows that share no
    prompt (KTO's) run as given without it, and without their padding with it."""
    model = _tiny(impl)
    ids, mask, labels = layout()
    scored = labels[:, 1:] != -100
    packed = pack_shared_prompts(ids, mask, scored)
    if layout in (kto_batch, kto_left_padded):
        assert packed is None
        runs = [(1, int(mask.sum()))] if varlen else [ids.shape]
    else:
        assert packed is not None and packed.input_ids.numel() > sum(packed.lengths)  # the packed rows hold padding
        runs = [(1, sum(packed.lengths))] if varlen else [packed.input_ids.shape]
    expected = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1][scored]
    if varlen:
        from tunesmith.train import varlen as kernels

        kernels.install(model, impl)
    seen: list = []
    got = scored_hidden_states(_run_recording(model, seen), model.config, ids, mask, scored)
    assert torch.allclose(got, expected, atol=1e-5)
    assert seen == runs


def test_a_window_shorter_than_the_rows_runs_them_as_given(monkeypatch):
    import tunesmith.train.prefix as prefix

    model = _tiny("eager")
    ids, mask, labels = dpo_batch()
    model.config.sliding_window = 4
    monkeypatch.setattr(prefix, "pack_shared_prompts", lambda *a, **k: pytest.fail("packed under a short window"))
    scored_hidden_states(lambda **kw: model.model(**kw).last_hidden_state, model.config, ids, mask, labels[:, 1:] != -100)
    from transformers import Gemma3Config

    multimodal = Gemma3Config(text_config={"sliding_window": 4})  # the window sits in the text config
    assert not within_window(multimodal, ids.shape[1]) and within_window(multimodal, 4)


@pytest.mark.parametrize("layout", [dpo_batch, grpo_batch, kto_batch])
def test_tunesmiths_head_packs_and_gives_trls_outputs_and_gradients(layout, monkeypatch):
    """TRL's fused head on the rows as given against tunesmith's on the packed rows (KTO's rows, which share
    nothing: padding-free): same log-probabilities and metrics, the same adapter gradients under any upstream
    gradient."""
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    import tunesmith.train.prefix as prefix
    from tunesmith.train.loss import replace_fused_head

    model = _tiny("eager")
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    params = [p for p in model.parameters() if p.requires_grad]
    ids, mask, labels = layout()
    upstream = torch.randn(ids.shape[0], ids.shape[1] - 1)

    def run():
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        (out.log_probs * upstream).sum().backward()
        grads = [p.grad.clone() for p in params]
        model.zero_grad()
        return out, grads

    theirs, their_grads = run()
    packs = []
    packer = "pack_rows" if layout is kto_batch else "pack_shared_prompts"
    real = getattr(prefix, packer)
    monkeypatch.setattr(prefix, packer, lambda *a, **k: packs.append(real(*a, **k)) or packs[-1])
    assert replace_fused_head(model)
    if layout is kto_batch:
        from tunesmith.train import varlen as kernels

        kernels.install(model.get_base_model(), "eager")
    ours, our_grads = run()

    assert packs and packs[0] is not None and packs[0].input_ids.shape[0] == (4 if layout is kto_batch else 2)
    for field in ("log_probs", "entropy", "mean_logits"):
        assert torch.allclose(getattr(ours, field), getattr(theirs, field), atol=1e-5), field
    assert torch.equal(ours.is_top1, theirs.is_top1)
    for a, b in zip(our_grads, their_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("layout", "varlen"), [(dpo_batch, False), (dpo_batch, True), (kto_batch, True)])
@pytest.mark.parametrize("family", ["mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3"])
def test_every_family_packs_to_the_same_hidden_states(family, layout, varlen, family_model):
    """Biases, q/k norms, soft-capped attention, sliding windows, fused projections: packing (and dropping the
    packed rows' padding) changes none of it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(family_model(family), dtype=torch.float32, attn_implementation="eager")
    if varlen:
        from tunesmith.train import varlen as kernels

        kernels.install(model, "eager")
    ids, mask, labels = layout()
    ids = torch.where(mask.bool(), ids + 100, model.config.pad_token_id or 0)  # ordinary tokens of every vocabulary
    scored = labels[:, 1:] != -100
    assert within_window(model.config, ids.shape[1]) and (pack_shared_prompts if layout is dpo_batch else pack_rows)(ids, mask, scored) is not None
    expected = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1][scored]
    got = scored_hidden_states(lambda **kw: model.model(**kw).last_hidden_state, model.config, ids, mask, scored)
    assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()


@pytest.mark.parametrize("max_length", [512, 48])
def test_the_plans_shared_row_is_the_longest_row_packing_makes(max_length, tiny_model_dir, smol_tokenizer, pairs_jsonl, tmp_path):
    """The plan sizes a DPO micro-batch as one row per pair (its prompt once): the longest such row it counts from the
    data equals the longest packed row of TRL's own batches, truncation by max_length included."""
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from tunesmith.data.preference import prepare_preference_data

    report = prepare_preference_data(pairs_jsonl, smol_tokenizer, stage="dpo", max_length=max_length).report
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=24, max_length=max_length, report_to="none", use_cpu=True, bf16=False)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    data = load_dataset("json", data_files=pairs_jsonl, split="train")
    trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=smol_tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    packed = pack_shared_prompts(batch["input_ids"], batch["attention_mask"], labels[:, 1:] != -100)
    assert packed.input_ids.shape[0] == 24
    assert report.max_shared_tokens == packed.length == max(packed.lengths)  # the batch is as wide as its longest row
    assert report.mean_shared_tokens == pytest.approx(sum(packed.lengths) / 24)
    assert sum(packed.lengths) < packed.positions  # what the prompts once saved


def test_the_plan_sizes_and_times_pairs_as_one_row_each(tiny_recipe, pairs_jsonl, tiny_model_dir):
    """With shared prompts the plan's activations are those of a row per pair (prompt + both answers), and the
    pipeline's time counts each pair's prompt once; without (full fine-tuning: TRL's head), two rows per pair."""
    from tunesmith.pipeline.plan import Speeds, train_seconds
    from tunesmith.train.plan import make_plan

    lora = make_plan(tiny_recipe(stage="dpo", **{"data.dataset": pairs_jsonl}))
    full = make_plan(tiny_recipe(stage="dpo", method="full", **{"data.dataset": pairs_jsonl}))
    assert lora.shared_tokens > lora.mean_tokens and not full.shared_tokens
    assert any("prompt runs once" in note for note in lora.notes) and not any("prompt runs once" in note for note in full.notes)
    assert lora.memory_bytes["activations"] < full.memory_bytes["activations"]
    from transformers import AutoConfig

    class Fixed(Speeds):  # no probing: one FLOP/s figure for everything
        def train(self, *args, **kwargs):
            return 1e10

        def decode(self, *args, **kwargs):
            return 1e10

    config = AutoConfig.from_pretrained(tiny_model_dir)
    shared, basis = train_seconds(lora, tiny_recipe(stage="dpo"), config, Fixed())
    assert f"{lora.schedule.effective_batch_size} pairs of ~{round(lora.shared_tokens)} tokens per step, the prompt once" in basis
    lora.shared_tokens = 0.0  # the same plan counted as two sequences per pair
    assert train_seconds(lora, tiny_recipe(stage="dpo"), config, Fixed())[0] > shared


def test_a_soft_capped_head_keeps_trls_and_the_plan_says_no_sharing(tiny_recipe, pairs_jsonl, family_model):
    """Gemma 2 soft-caps its logits: TRL's head runs (train/loss.py), so the plan neither notes nor sizes sharing."""
    from tunesmith.train.plan import make_plan

    plan = make_plan(tiny_recipe(stage="dpo", **{"model.name": family_model("gemma2"), "data.dataset": pairs_jsonl}))
    assert not plan.shared_tokens and not any("prompt runs once" in note for note in plan.notes)
