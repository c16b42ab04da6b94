"""A pipeline on the tiny random model: sft -> dpo -> merge -> eval -> export, interrupted inside dpo and resumed.

What a user would notice: an interrupted pipeline, run again, skips what is complete, resumes the stage that was cut
off from its checkpoint, and finishes; lineage.json records every stage; a changed stage is refused, not silently
skipped; bad pipeline files get a sentence naming the stage.
"""

import json
import os

import pytest
import yaml
from transformers import TrainerCallback

from tunesmith.errors import RecipeError
from tunesmith.pipeline import load_pipeline, run_pipeline


def _chat(i):
    return {
        "messages": [
            {"role": "user", "content": f"What is {i} plus {i + 1}?"},
            {"role": "assistant", "content": "Arr, " + "matey " * (1 + i % 4) + f"{2 * i + 1}."},
        ]
    }


def _pair(i):
    prompt = [{"role": "user", "content": f"What is {i} plus {i + 1}?"}]
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": f"Arr, {2 * i + 1}, matey."}],
        "rejected": [{"role": "assistant", "content": f"It is {2 * i + 1}."}],
    }


@pytest.fixture
def pipeline_file(tmp_path, tiny_model_dir):
    chats, pairs = tmp_path / "chats.jsonl", tmp_path / "pairs.jsonl"
    chats.write_text("".join(json.dumps(_chat(i)) + "\n" for i in range(12)))
    pairs.write_text("".join(json.dumps(_pair(i)) + "\n" for i in range(12)))
    common = {
        "model.precision": "fp32",
        "data.max_length": 64,
        "data.eval_dataset": "none",
        "sample.prompts": [],
        "sample.diagnostics": False,
        "training.per_device_train_batch_size": 2,
        "training.gradient_accumulation_steps": 1,
        "training.max_steps": 4,
        "training.save_strategy": "steps",
        "training.save_steps": 2,
        "training.save_total_limit": None,
        "training.logging_steps": 1,
        "training.learning_rate": 1e-3,
        "training.warmup_ratio": 0.0,
    }
    spec = {
        "name": "tiny",
        "output_dir": str(tmp_path / "out"),
        "stages": [
            {"name": "sft", "stage": "sft", "model": tiny_model_dir, "dataset": str(chats), "set": common},
            {"name": "dpo", "stage": "dpo", "model": "sft", "dataset": str(pairs), "set": common},
            {
                "name": "merged",
                "stage": "merge",
                "merge_method": "linear",
                "models": [{"model": "sft", "parameters": {"weight": 0.5}}, {"model": "dpo", "parameters": {"weight": 0.5}}],
            },
            {
                "name": "eval",
                "stage": "eval",
                "models": ["merged", "sft", "dpo"],
                "data": str(chats),
                "pairs": str(pairs),
                "max_prompts": 2,
                "max_new_tokens": 4,
            },
            {"name": "export", "stage": "export", "model": "merged", "formats": ["merged"]},
        ],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


class CrashAfterSave(TrainerCallback):
    """Stands for a crash (kill, power cut) right after the dpo stage wrote checkpoint-2."""

    def on_save(self, args, state, control, **kw):
        if args.output_dir.endswith("dpo") and state.global_step == 2:
            raise KeyboardInterrupt


def statuses(outcomes):
    return [(o.name, o.status) for o in outcomes]


@pytest.mark.slow  # three stages trained twice (~10 s); the fast suite keeps the pipeline file, its plan and its refusals
@pytest.mark.usefixtures("one_thread")
def test_an_interrupted_pipeline_resumes_where_it_stopped(pipeline_file, tmp_path):
    spec = load_pipeline(pipeline_file)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(spec, callbacks=[CrashAfterSave()])
    out = tmp_path / "out"
    assert (out / "sft" / "README.md").is_file() and (out / "dpo" / "checkpoint-2").is_dir() and not (out / "dpo" / "summary.json").exists()
    sft_model = (out / "sft" / "model" / "adapter_model.safetensors").stat().st_mtime_ns

    outcomes = run_pipeline(load_pipeline(pipeline_file))
    assert statuses(outcomes) == [("sft", "skipped"), ("dpo", "resumed"), ("merged", "ran"), ("eval", "ran"), ("export", "ran")]
    assert (out / "sft" / "model" / "adapter_model.safetensors").stat().st_mtime_ns == sft_model  # nothing earlier was redone
    steps = [m["step"] for m in map(json.loads, (out / "dpo" / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert steps == [1, 2, 3, 4]  # the resumed run logged steps 3 and 4 once, after the kept 1 and 2
    merge = json.loads((out / "merged" / "merge.json").read_text())
    assert merge["method"] == "linear" and len(merge["inputs"]) == 2
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert report["models"] == ["merged", "sft", "dpo"] and {"eval_loss", "preference_accuracy"} <= set(report["values"]["merged"])
    assert (out / "export" / "model" / "config.json").is_file() and (out / "export" / "export.json").is_file()

    lineage = json.loads((out / "lineage.json").read_text())
    assert [s["name"] for s in lineage["stages"]] == ["sft", "dpo", "merged", "eval", "export"]
    assert lineage["stages"][1]["inputs"] == [str(out / "sft")]
    assert {n["kind"] for n in lineage["graph"]} == {"export", "merge", "train", "base"}  # export <- merge <- dpo <- sft <- tiny model
    card = (out / "export" / "README.md").read_text()
    assert "## Lineage" in card and "dpo (lora)" in card and "sft (lora)" in card

    again = run_pipeline(load_pipeline(pipeline_file))  # complete: every stage skipped, the times are the ones recorded
    assert all(status == "skipped" for _, status in statuses(again))
    assert again[0].seconds == pytest.approx(outcomes[0].seconds, abs=0.2) and again[0].seconds > 0

    changed = yaml.safe_load(pipeline_file.read_text())
    changed["stages"][0]["set"]["training.learning_rate"] = 5e-4
    pipeline_file.write_text(yaml.safe_dump(changed, sort_keys=False))
    with pytest.raises(RecipeError, match="stage sft changed since"):
        run_pipeline(load_pipeline(pipeline_file))


def test_a_stage_with_nothing_to_resume_from_starts_again(pipeline_file, tmp_path):
    spec = load_pipeline(pipeline_file)
    half = tmp_path / "out" / "sft"
    half.mkdir(parents=True)
    (half / "recipe.yaml").write_text("stage: sft\n")  # a run killed before its first checkpoint
    from tunesmith.pipeline.run import state

    assert state("train", half) == "partial"
    assert state("merge", tmp_path / "out" / "merged") == "new"
    (half / "summary.json").write_text("{}")
    assert state("train", half) == "complete"
    assert spec.root == tmp_path / "out"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"stages": [{"name": "a", "stage": "dpo", "model": "b"}, {"name": "b", "stage": "sft"}]}, "'b' is a later stage"),
        ({"stages": [{"name": "a", "stage": "sft"}, {"name": "a", "stage": "dpo", "model": "a"}]}, "two stages are named 'a'"),
        ({"stages": [{"name": "a", "stage": "sft", "learning_rate": 1}]}, "unknown field 'learning_rate'"),
        ({"stages": [{"name": "a"}]}, "a stage is a mapping with name: and stage:"),
        ({"stages": [{"name": "e", "stage": "eval"}]}, "models: Field required"),
        ({"stages": [{"name": "x", "stage": "export", "model": "m", "formats": ["onnx"]}]}, "formats.0"),
        ({"stage": "sft"}, "a pipeline file is a mapping with a stages: list"),
    ],
)
def test_bad_pipeline_files_get_a_sentence_naming_the_stage(tmp_path, change, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(change))
    with pytest.raises(RecipeError, match=message) as info:
        load_pipeline(path)
    assert str(path) in info.value.format()


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("stages:\n  - name: a\n    stage: [sft\n")
    with pytest.raises(RecipeError, match="not valid YAML") as info:
        load_pipeline(path)
    assert f"{path}:" in info.value.format()


def test_a_training_stage_recipe_error_names_the_stage(pipeline_file):
    spec = load_pipeline(pipeline_file)
    data = yaml.safe_load(pipeline_file.read_text())
    data["stages"][0]["set"]["training.per_device_train_batch_size"] = 0
    pipeline_file.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match="stage sft") as info:
        run_pipeline(load_pipeline(pipeline_file))
    assert "per_device_train_batch_size" in info.value.format()
    assert not (spec.root / "sft").exists()  # refused before a run directory was made


def test_the_demo_pipeline_is_valid_and_wired_by_name():
    from tunesmith.cli.pipeline import DEMO
    from tunesmith.pipeline.config import check_references

    spec = load_pipeline(DEMO)
    steps = check_references(spec)
    assert [s.stage for s in steps] == ["sft", "dpo", "merge", "eval", "export"]
    assert steps[1].model == "sft" and steps[2].references() == ["sft", "sft", "dpo"] and steps[4].model == "merged"
    assert os.path.basename(spec.root) == "pipeline-pirate"


def test_the_training_estimate_is_a_measured_step(tiny_model_dir):
    """plan --pipeline times training from one measured LoRA step of the stage's architecture, on a big model too
    without building all of it."""
    from transformers import AutoConfig, LlamaConfig

    from tunesmith.models.precision import Precision
    from tunesmith.pipeline.plan import Speeds, probe_training_speed

    config = AutoConfig.from_pretrained(tiny_model_dir)
    fp32 = Precision("fp32", "", "cpu")
    speeds = Speeds()
    speed = speeds.train(fp32, config, "eager")
    assert speed > 1e6 and speeds.train(fp32, config, "eager") == speed  # measured once per architecture
    big = LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=200_000, vocab_size=1000)
    assert probe_training_speed(big, fp32) > 0  # 200,000 layers would not fit: the probe builds four


@pytest.mark.slow  # two stages trained (~10 s)
@pytest.mark.usefixtures("one_thread")
def test_a_pipeline_pretrains_then_fine_tunes_the_pretrained_model(tmp_path, tiny_model_dir, monkeypatch):
    from tunesmith.data import corpus

    monkeypatch.setattr(corpus, "corpora_dir", lambda: tmp_path / "corpora")
    text = tmp_path / "manual.txt"
    text.write_text("".join(f"Step {i}: tighten the bolt {i} turns, then check the seal.\n" for i in range(200)))
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps(_chat(i)) + "\n" for i in range(12)))
    common = {"model.precision": "fp32", "data.max_length": 64, "sample.prompts": [], "training.max_steps": 2, "training.learning_rate": 1e-3}
    spec = {
        "name": "domain",
        "output_dir": str(tmp_path / "out"),
        "stages": [
            {"name": "cpt", "stage": "pretrain", "model": tiny_model_dir, "dataset": str(text), "set": {**common, "pretrain.eval_blocks": 2}},
            {"name": "sft", "stage": "sft", "model": "cpt", "dataset": str(chats), "set": {**common, "data.eval_dataset": "none", "sample.diagnostics": False}},
        ],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    outcomes = run_pipeline(load_pipeline(path))
    assert statuses(outcomes) == [("cpt", "ran"), ("sft", "ran")]
    card = (tmp_path / "out" / "cpt" / "README.md").read_text()
    assert "held-out perplexity" in card
    adapter = json.loads((tmp_path / "out" / "sft" / "model" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"].endswith("cpt/model")  # the fine-tune starts from the pretrained adapter
