import json
import math

import pytest
import torch
from typer.testing import CliRunner

from tunesmith.data import prepare_dataset
from tunesmith.evaluate import diagnose, drift, eval_loss


def test_loss_matches_the_model_and_kl_behaves(tiny_model_dir, smol_tokenizer):
    from tunesmith.models import load_model

    model = load_model(tiny_model_dir)
    data = prepare_dataset("pirate-eval", smol_tokenizer, max_length=128)
    small = data.dataset.select(range(3))
    loss, ppl = eval_loss(model, small, batch_size=2)
    by_hand = []
    for row in small:
        with torch.no_grad():
            out = model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]]))
        by_hand.append((out.loss.item(), sum(1 for x in row["labels"][1:] if x != -100)))
    expected = sum(each * n for each, n in by_hand) / sum(n for _, n in by_hand)
    assert abs(loss - expected) < 1e-4 and abs(ppl / math.exp(expected) - 1) < 1e-5
    assert drift(model, model, small) == 0.0
    other = load_model(tiny_model_dir)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    assert drift(model, other, small) > 0.0


def test_diagnose_report_and_cli(tiny_model_dir, smol_tokenizer, tmp_path):
    from tunesmith.models import load_model

    data = prepare_dataset("pirate-eval", smol_tokenizer, max_length=128)
    report = diagnose(load_model(tiny_model_dir), smol_tokenizer, data, train_examples=data.examples, max_prompts=3, max_new_tokens=6, match="contains")
    names = {d.name for d in report.diagnostics}
    assert {"eval_loss", "perplexity", "leakage_rate", "distinct_2", "stopped_rate", "memorization_rate", "accuracy"} <= names
    assert all(d.verdict in ("fine", "watch", "bad", "info") for d in report.diagnostics)

    from tunesmith.cli.main import _register, app

    _register()
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["eval", "-m", tiny_model_dir, "--max-prompts", "2", "--max-new-tokens", "4", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "perplexity" in result.output and json.loads(out.read_text())["diagnostics"]


def test_eval_loss_is_the_training_loss(tiny_model_dir, smol_tokenizer):
    """`tunesmith eval` scores with training's loss function: its number equals causal_lm_loss on the same rows."""
    from tunesmith.models import load_model
    from tunesmith.train.loss import causal_lm_loss

    model = load_model(tiny_model_dir)
    small = prepare_dataset("pirate-eval", smol_tokenizer, max_length=128).dataset.select(range(3))
    loss, _ = eval_loss(model, small, batch_size=2)  # two batches (2 + 1 rows): their token-weighted mean
    width = max(len(x) for x in small["input_ids"])
    batch = {  # all three rows in one right-padded batch, as the trainer would see them
        "input_ids": torch.tensor([x + [0] * (width - len(x)) for x in small["input_ids"]]),
        "attention_mask": torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in small["input_ids"]]),
        "labels": torch.tensor([x + [-100] * (width - len(x)) for x in small["labels"]]),
    }
    with torch.no_grad():
        expected, stats = causal_lm_loss(model, batch)
    assert int(stats.tokens) > 0
    assert loss == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_eval_loss_drift_and_explain_loss_run_on_a_gpu_model(tiny_model_dir, smol_tokenizer):
    """The eval helpers put their batches on the model's device: an SFT run on an H200 stopped at its first eval
    (`index is on cpu, different from other tensors on cuda:0`) before they did."""
    from tunesmith.evaluate.tokens import explain_loss
    from tunesmith.models import load_model

    small = prepare_dataset("pirate-eval", smol_tokenizer, max_length=128).dataset.select(range(3))
    on_cpu = load_model(tiny_model_dir)
    on_gpu = load_model(tiny_model_dir).to("cuda")
    assert abs(eval_loss(on_gpu, small, batch_size=2)[0] - eval_loss(on_cpu, small, batch_size=2)[0]) < 1e-3
    assert drift(on_gpu, on_gpu, small) == 0.0
    row = small[0]
    assert (
        abs(
            explain_loss(on_gpu, smol_tokenizer, row["input_ids"], row["labels"]).loss
            - explain_loss(on_cpu, smol_tokenizer, row["input_ids"], row["labels"]).loss
        )
        < 1e-3
    )
