"""ORPO's and CPO's trainers on a CPU score answer tokens with tunesmith's head: the same log-probabilities, NLL term
and adapter gradients as trl.experimental's whole-logits forward."""

from __future__ import annotations

import pytest
import torch


def _trainer(stage_name, tiny_model_dir, smol_tokenizer, pairs_jsonl, tmp_path, **config):
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from tunesmith.train.stages import get_stage

    stage = get_stage(stage_name)
    if stage_name == "orpo":
        from trl.experimental.orpo import ORPOConfig as Config
    else:
        from trl.experimental.cpo import CPOConfig as Config
    args = Config(output_dir=str(tmp_path), per_device_train_batch_size=4, max_length=64, report_to="none", use_cpu=True, bf16=False, **config)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    data = load_dataset("json", data_files=pairs_jsonl, split="train")
    peft = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    from types import SimpleNamespace

    return stage.trainer(
        model=model, ref_model=None, args=args, data=SimpleNamespace(train=data, eval=None), tokenizer=smol_tokenizer, callbacks=[], peft_config=peft
    )


@pytest.mark.parametrize(
    "stage_name, config",
    [("orpo", {}), ("cpo", {}), ("cpo", {"loss_type": "simpo", "cpo_alpha": 0.0})],
    ids=["orpo", "cpo", "simpo"],
)
def test_token_scored_forward_equals_trls(stage_name, config, tiny_model_dir, smol_tokenizer, pairs_jsonl, tmp_path, monkeypatch):
    """Each pair's prompt runs once (train/prefix.py) and the outputs are still theirs."""
    import tunesmith.train.prefix as prefix

    packs, pack = [], prefix.pack_shared_prompts
    monkeypatch.setattr(prefix, "pack_shared_prompts", lambda *a, **k: packs.append(pack(*a, **k)) or packs[-1])
    trainer = _trainer(stage_name, tiny_model_dir, smol_tokenizer, pairs_jsonl, tmp_path, **config)
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    base = type(trainer).__mro__[2]  # ScoredXTrainer -> TokenScoredPairs -> trl's trainer

    def run(forward):
        out = forward(trainer, model, batch)
        (out[0].sum() - 0.5 * out[1].sum() + out[4]).backward()
        grads = [p.grad.clone() for p in params]
        model.zero_grad()
        return out, grads

    ours, our_grads = run(type(trainer).concatenated_forward)
    theirs, their_grads = run(base.concatenated_forward)
    assert type(trainer).concatenated_forward is not base.concatenated_forward
    assert packs and packs[0].input_ids.shape[0] <= batch["chosen_input_ids"].shape[0]  # a row per distinct prompt
    assert torch.allclose(ours[0], theirs[0], atol=1e-5) and torch.allclose(ours[1], theirs[1], atol=1e-5)  # chosen, rejected logps
    assert ours[4].item() == pytest.approx(theirs[4].item(), rel=1e-5, abs=1e-7)  # the NLL term
    for a, b in zip(our_grads, their_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert ours[2].numel() == int((batch["chosen_labels"][:, 1:] != -100).sum())  # one mean logit per chosen answer token


def test_plan_counts_the_whole_logits_only_where_they_are_taken():
    from types import SimpleNamespace

    from tunesmith.train.stages import get_stage

    orpo = get_stage("orpo")
    lora = SimpleNamespace(method="lora", lora=SimpleNamespace(train_embeddings=False))
    full = SimpleNamespace(method="full", lora=SimpleNamespace(train_embeddings=False))
    cpu, gpu = SimpleNamespace(device="cpu"), SimpleNamespace(device="cuda")
    assert not orpo.all_positions_projected(lora, cpu)
    assert orpo.all_positions_projected(full, cpu) and orpo.all_positions_projected(lora, gpu)
