"""The one training scaffold every stage runs on.

Reads top to bottom: open the run (new or resumed), preflight once, precision, tokenizer,
data, the model (a previous stage's adapter folded in), sample answers, the adapter, the
reference, callbacks, train (out-of-memory as a sentence), save atomically, measure again,
write the model card. What differs between stages is asked of the `Stage` (stages/base.py).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import time
from pathlib import Path

from rich.console import Console

from tunesmith.errors import ModelError, RecipeError, TrainingError
from tunesmith.models.load import ModelSource, load_model, load_tokenizer, resolve_model
from tunesmith.models.precision import Precision, resolve_precision
from tunesmith.recipes import Recipe, dump_recipe, load_recipe
from tunesmith.runs.faults import fault_point
from tunesmith.runs.rundir import RunDir, find_resume_point
from tunesmith.train.callbacks import MetricsLog, NanGuard, Progress, arm_faults, guard_checkpoints, no_step_past_the_end
from tunesmith.train.speed import SpeedSettings, base_weights_dtype, check_gpu_kernels, checkpoint_one_layer_in, compact_lm_head, speed_settings
from tunesmith.train.stages import get_stage
from tunesmith.train.stages.base import Stage, StageData, StageResult

SINK_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio", "comet_ml": "comet_ml"}


# ---------------------------------------------------------------- preflight (before anything is written)


def check_report_to(sinks: list[str]) -> None:
    """Each extra metric sink must be known and installed; say which package to add instead of failing later."""
    for sink in sinks:
        if sink not in SINK_PACKAGES:
            raise RecipeError(f"training.report_to has '{sink}'", hint=f"known sinks: {', '.join(SINK_PACKAGES)} (metrics.jsonl is always written)")
        if importlib.util.find_spec(SINK_PACKAGES[sink]) is None:
            raise RecipeError(
                f"training.report_to asks for {sink}, but the package '{SINK_PACKAGES[sink]}' is not installed",
                hint=f"pip install {SINK_PACKAGES[sink]}, or drop it from report_to",
            )


def check_qlora(precision: Precision) -> None:
    """QLoRA's 4-bit weights need CUDA and bitsandbytes: say so before anything is written."""
    if precision.device != "cuda":
        raise ModelError("QLoRA needs a CUDA GPU (4-bit weights via bitsandbytes); this machine has none", hint="use method: lora on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelError("QLoRA needs the bitsandbytes package", hint="pip install 'tunesmith[gpu]'") from exc


def preflight(recipe: Recipe, precision: Precision) -> None:
    if recipe.method == "qlora":
        check_qlora(precision)
    check_gpu_kernels(recipe, precision)
    check_report_to(recipe.training.report_to)


# ---------------------------------------------------------------- model


def load_for_training(recipe: Recipe, precision: Precision, attention: str, head: str = "causal"):
    """The model to train with the attention kernel `attention`: plain, 4-bit (QLoRA), or a reward model.

    A previous stage's adapter (`--model runs/sft-...`) is merged into its base at full precision
    first, so the new stage trains a fresh adapter on top of the SFT model (and, with LoRA, the
    reference is that SFT model: the new adapter disabled). The new adapter records the old one
    as its base, and `resolve_model` follows that chain when the result is loaded.
    """
    from tunesmith.models.reward import new_reward_model

    source = resolve_model(recipe.model.name)
    dtype = base_weights_dtype(recipe, precision)
    if source.is_reward_model():
        raise ModelError(
            f"'{recipe.model.name}' is a reward model; stage {recipe.stage} trains from a language model",
            hint="pass the model the reward model was trained from, or an SFT run",
        )
    if recipe.method == "qlora":
        if source.adapter:
            raise ModelError(
                f"'{recipe.model.name}' is a LoRA adapter; QLoRA quantises a full model and cannot fold an adapter in",
                hint="train the previous stage with merge: true and pass its <run>/merged directory, or use method: lora",
            )
        model = _load_qlora(source, recipe, precision, head)
    elif head == "reward":
        model = new_reward_model(source, dtype)
    elif source.adapter:
        model = load_model(source, merge_adapter=True).to(dtype)  # merged in fp32, then stored in the run's dtype
    else:
        model = load_model(source, dtype=dtype)
    if attention != model.config._attn_implementation:
        model.set_attn_implementation(attention)
    return source, model


def _load_qlora(source: ModelSource, recipe: Recipe, precision: Precision, head: str):
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=precision.dtype)
    cls, extra = (AutoModelForSequenceClassification, {"num_labels": 1}) if head == "reward" else (AutoModelForCausalLM, {})
    model = cls.from_pretrained(source.path, quantization_config=quant, dtype=precision.dtype, **extra)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=bool(recipe.training.gradient_checkpointing))


def lora_config(recipe: Recipe, model, head: str):
    if recipe.method == "full":
        return None
    from tunesmith.models.lora import build_lora_config

    return build_lora_config(model, recipe.lora, task_type="SEQ_CLS" if head == "reward" else "CAUSAL_LM")


def reference_model(stage: Stage, recipe: Recipe, model, schedule):
    """The frozen starting policy for DPO/KTO. With LoRA there is none to build: the trainer disables the adapter.
    Full fine-tuning keeps one copy (not reloaded from disk: the model may hold a merged adapter)."""
    from tunesmith.train.stages.pairs import precompute_reference

    if not stage.uses_reference(recipe) or recipe.method != "full":
        return None
    if precompute_reference(recipe, stage, schedule):
        return None  # scored once before training by the trainer itself, then not needed
    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


# ---------------------------------------------------------------- arguments


def common_arguments(recipe: Recipe, run: RunDir, precision: Precision, has_eval: bool, speed: SpeedSettings) -> dict:
    """TrainingArguments shared by every stage (recipe names pass straight through)."""
    from tunesmith.train.distributed import launched_world_size, strategy_arguments

    t = recipe.training
    return dict(
        **strategy_arguments(recipe, launched_world_size(), precision.device),
        output_dir=str(run.path),
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        # transformers 5 folds warmup_ratio into warmup_steps: a float < 1 is a ratio of total steps.
        warmup_steps=t.warmup_steps if t.warmup_steps > 0 else t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        logging_strategy=t.logging_strategy,
        logging_steps=t.logging_steps,
        logging_first_step=t.logging_first_step,
        save_strategy=t.save_strategy,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        eval_strategy=t.eval_strategy if has_eval else "no",
        eval_steps=t.eval_steps,
        gradient_checkpointing=speed.gradient_checkpointing,
        seed=t.seed,
        report_to=t.report_to or "none",
        dataloader_num_workers=t.dataloader_num_workers,
        use_liger_kernel=speed.liger,
        bf16=precision.name == "bf16" and speed.autocast,
        fp16=precision.name == "fp16" and speed.autocast,
        use_cpu=precision.device == "cpu",
        disable_tqdm=True,
        logging_nan_inf_filter=False,  # the NaN guard must see a non-finite loss, not a filtered average
        include_num_input_tokens_seen="non_padding",
        dataset_num_proc=None,
        ddp_find_unused_parameters=False,  # every trained parameter takes part in the loss (transformers' default would search, each step)
        **({"padding_free": True} if speed.padding_free else {}),  # SFT on a CPU (train/varlen.py)
    )


# ---------------------------------------------------------------- the run


def open_run(recipe: Recipe | None, resume: str | None, stage_name: str | None, console: Console):
    """(run, recipe, checkpoint): a new run directory is only created after the preflight passed (see run_stage)."""
    if resume:
        run, checkpoint = find_resume_point(resume)
        recipe = load_recipe(run.recipe_file)
        if stage_name and recipe.stage != stage_name:
            raise RecipeError(
                f"'{run.path}' is a {recipe.stage} run; it cannot be resumed as {stage_name}",
                hint=f"tunesmith {recipe.stage} --resume {run.path} (or tunesmith train --resume)",
            )
        console.print(f"resuming {run.path} from {checkpoint.name}")
        return run, recipe, checkpoint
    recipe = recipe or Recipe(stage=stage_name or "sft")
    if stage_name and recipe.stage != stage_name:
        raise RecipeError(
            f"the recipe's stage is {recipe.stage}, but this is `tunesmith {stage_name}`",
            where="stage",
            hint=f"use `tunesmith {recipe.stage}` or `tunesmith train`, or set stage: {stage_name}",
        )
    return None, recipe, None


@compact_lm_head()  # TRL's fused LM head scores answer positions only, while the trainer is built, trains and evaluates
def run_stage(
    recipe: Recipe | None = None,
    *,
    resume: str | None = None,
    stage_name: str | None = None,
    console: Console | None = None,
    live: bool | None = None,
    callbacks=(),
) -> StageResult:
    """Train per `recipe` (or continue the run/checkpoint `resume`) with its stage, and return what happened."""
    import torch

    from tunesmith.train.distributed import processes

    console = console or Console()
    started = time.perf_counter()
    run, recipe, checkpoint = open_run(recipe, resume, stage_name, console)
    stage = get_stage(recipe.stage)
    precision = resolve_precision(recipe.model.precision)
    preflight(recipe, precision)
    stage.check(recipe)
    from tunesmith.train.distributed import check_distributed, effective_strategy, launched_world_size, strategy_note

    check_distributed(recipe, precision.device, launched_world_size())
    procs = processes(precision.device)  # under `accelerate launch`: one of several; the main one writes and prints
    if not procs.is_main:
        console = Console(quiet=True)
    tokenizer = load_tokenizer(recipe.model.name)
    data = stage.prepare_data(recipe, tokenizer)  # bad data stops here, before a run directory exists
    out = Path(recipe.output_dir) if recipe.output_dir and run is None else None
    if out is not None and procs.is_main and out.is_dir() and any(out.iterdir()):
        RunDir.new(recipe.output_dir, recipe.stage)  # refuses a directory in use now, before the model loads (it is not empty)
    console.print(f"stage: {recipe.stage} ({stage.describe(recipe)})", soft_wrap=True, highlight=False)
    console.print(f"precision: {precision.name} ({precision.reason})", soft_wrap=True)
    torch.manual_seed(recipe.training.seed)
    console.print(f"data: {data.summary}", soft_wrap=True, highlight=False)
    if procs.world > 1:
        console.print(
            f"processes: {procs.world} (accelerate launch, {effective_strategy(recipe, precision.device)}); each takes 1/{procs.world} of every step's batch, the main one writes the run",
            highlight=False,
        )
    if note := strategy_note(recipe, precision.device, procs.world):
        console.print(f"note: {note}", soft_wrap=True, highlight=False)

    from tunesmith.train.schedule import compute_schedule

    schedule = compute_schedule(recipe.training, data.num_sequences, procs.world)
    speed = speed_settings(recipe, precision, data.longest)
    source, model = load_for_training(recipe, precision, speed.attention, stage.head)
    if speed.varlen:
        from tunesmith.train import varlen

        varlen.install(model, speed.attention)
    if run is None:  # only now that data and model loaded: a run that could not start leaves no directory behind
        if procs.is_main:
            run = RunDir.new(recipe.output_dir, recipe.stage)
            run.write_text("recipe.yaml", dump_recipe(recipe.model_copy(update={"output_dir": str(run.path)})))
        run = RunDir(procs.share(run.path if run else None))
        recipe = recipe.model_copy(update={"output_dir": str(run.path)})
    if procs.is_main:
        run.write_environment(precision)
    if speed.checkpoint_every > 1:
        checkpoint_one_layer_in(model, speed.checkpoint_every)
    prompts = recipe.sample.prompts if stage.head == "causal" else []
    sample = dict(max_new_tokens=recipe.sample.max_new_tokens, temperature=recipe.sample.temperature, seed=recipe.training.seed, chat=stage.chat)
    from tunesmith.infer import generate

    if not procs.is_main:
        prompts = []  # the answers and measurements before and after are the main process's to show
    before = generate(model, tokenizer, prompts, **sample) if prompts and not resume else []
    before_snapshot = measure_before(stage, run, model, tokenizer, recipe, data, resumed=bool(resume)) if procs.is_main else {}
    from tunesmith.infer.packed import drop_packed

    drop_packed(model)  # the decode loop's packed bf16 weights (~270 MB for SmolLM2) must not ride along through training

    peft_config = lora_config(recipe, model, stage.head)
    if peft_config is not None:
        from tunesmith.models.lora import fused_note

        if note := fused_note(model, recipe.lora):
            console.print(f"note: {note}", soft_wrap=True, highlight=False)
    if peft_config is not None and not stage.trainer_wraps_adapter:
        from peft import get_peft_model

        model, peft_config = get_peft_model(model, peft_config), None  # peft keeps adapter weights in fp32 on a bf16 base
    ref_model = reference_model(stage, recipe, model, schedule)
    guard = NanGuard(precision.name)
    resume_step = int(checkpoint.name.split("-")[1]) if checkpoint else None
    if resume_step is not None and procs.is_main:
        from tunesmith.train.rollout import keep_rollouts_until

        keep_rollouts_until(run.path, resume_step)  # RL stages: the steps after the checkpoint are sampled again
        for dropped in run.drop_incomplete_checkpoints():  # cut off mid-save by the crash: never resumed from
            console.print(f"removed {dropped.name}: it was cut off while being saved", highlight=False)
    from tunesmith.train.stages.pairs import precompute_reference

    if precompute_reference(recipe, stage, schedule):
        console.print("scoring the data with the reference model once (precompute_ref_log_probs) ...", highlight=False)
    trainer = stage.trainer(
        model=model,
        ref_model=ref_model,
        args=stage.config(recipe, common_arguments(recipe, run, precision, data.eval is not None, speed), schedule),
        data=data,
        tokenizer=tokenizer,
        callbacks=[
            *([MetricsLog(run.metrics_file, resume_step=resume_step)] if procs.is_main else []),
            guard,
            Progress(console, live, stage.progress_metrics),
            *callbacks,
        ],
        peft_config=peft_config,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # Progress prints instead
    guard_checkpoints(trainer, run, procs.is_main)  # a checkpoint counts for resume only once all of it is written
    no_step_past_the_end(trainer)  # resumed from the last step's checkpoint: nothing left to train
    arm_faults(trainer)  # crash tests only (TUNESMITH_FAULT, runs/faults.py)
    if speed.fused_lora:
        from tunesmith.train.fused_lora import fuse_lora_layers

        fuse_lora_layers(trainer.model)  # after the trainer wrapped the adapter (DPO, KTO, ... wrap it themselves)
    if speed.fused_mlp:
        from tunesmith.train.fused_mlp import fuse_mlp_layers

        fuse_mlp_layers(trainer.model)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    console.print(
        f"model: {recipe.model.name}, {recipe.method}, {trainable:,} trainable of {total:,} parameters; "
        f"{schedule.total_steps} steps of {schedule.effective_batch_size} {stage.unit} ({schedule.num_epochs:g} epoch{'' if schedule.num_epochs == 1 else 's'})",
        soft_wrap=True,
    )
    console.print(f"speed: {speed.summary()}", soft_wrap=True)
    try:
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except torch.OutOfMemoryError as exc:
        raise TrainingError(
            "out of memory during training",
            hint="lower training.per_device_train_batch_size (raise gradient_accumulation_steps to keep the effective batch), lower data.max_length, or set training.gradient_checkpointing: true",
        ) from exc
    guard.check()
    train_loss = next((m["loss"] for m in reversed(run.read_metrics()) if "loss" in m), output.training_loss)
    eval_loss = None
    final_metrics: dict = {}
    if data.eval is not None:
        last = next((m for m in reversed(trainer.state.log_history) if "eval_loss" in m), None)
        if last is not None and last.get("step") == trainer.state.global_step:  # eval_strategy just measured this model
            final_metrics = {k: v for k, v in last.items() if k.startswith("eval_")}
        else:
            final_metrics = trainer.evaluate()  # every process takes part: the eval set is sharded too
        eval_loss = final_metrics.get("eval_loss")
        if procs.is_main:
            with open(run.metrics_file, "a") as fh:
                fh.write(json.dumps({"step": trainer.state.global_step, **final_metrics, "final": True}) + "\n")

    trained = stage.trained_model(trainer)
    if not procs.is_main:  # the main process saves, measures and writes the rest; the others wait until it has
        procs.barrier()
        return StageResult(
            stage=recipe.stage,
            run_dir=run.path,
            model_dir=run.model_dir,
            steps=trainer.state.global_step,
            train_loss=train_loss,
            eval_loss=eval_loss,
            seconds=time.perf_counter() - started,
        )
    model_dir = run.save_final("model", lambda path: save_model(trained, tokenizer, source, path))
    run.plot_losses()
    for name, keys in stage.plots(recipe).items():
        run.plot_metrics(keys, name)
    after = generate(trained, tokenizer, prompts, **sample) if prompts else []
    after_snapshot = stage.measure(trained, tokenizer, recipe, data) if before_snapshot else {}
    changes, examples, examples_title = stage.compare(before_snapshot, after_snapshot) if before_snapshot else ([], [], "")
    if before_snapshot:
        run.write_text("changes.json", json.dumps({"changes": [c.to_json() for c in changes], "examples": examples}, indent=2) + "\n")
    diagnostics = stage.diagnose(trained, tokenizer, recipe, data, run)
    if diagnostics is not None:
        run.write_text("diagnostics.json", json.dumps(diagnostics.to_json(), indent=2) + "\n")
    merged = None
    if recipe.merge and recipe.method != "full":
        merged_model = merged_from_adapter(model_dir, stage.head)
        merged = run.save_final("merged", lambda p: (merged_model.save_pretrained(p), tokenizer.save_pretrained(p)))
    result = StageResult(
        stage=recipe.stage,
        run_dir=run.path,
        model_dir=model_dir,
        steps=trainer.state.global_step,
        train_loss=train_loss,
        eval_loss=eval_loss,
        seconds=time.perf_counter() - started,
        trainable_parameters=trainable,
        merged_dir=merged,
        prompts=list(prompts),
        before=before,
        after=after,
        changes=changes,
        examples=examples,
        examples_title=examples_title,
        diagnostics=diagnostics,
    )
    write_model_card(run, recipe, stage, data, result, trainable, total)
    # the numbers a pipeline's summary and an export's lineage read back (the model card is for people); written
    # last: the run is complete
    fault_point("summary")
    run.write_text(
        "summary.json",
        json.dumps({"stage": recipe.stage, "steps": result.steps, "train_loss": train_loss, "eval_loss": eval_loss, "seconds": round(result.seconds, 1)})
        + "\n",
    )
    procs.barrier()
    return result


def merged_from_adapter(model_dir: Path, head: str):
    """The saved adapter merged into its base, loaded afresh in fp32 (never merged into rounded bf16 weights)."""
    if head == "reward":
        from tunesmith.models.reward import load_reward_model

        return load_reward_model(str(model_dir)).merge_and_unload()
    return load_model(str(model_dir), merge_adapter=True)


def measure_before(stage: Stage, run: RunDir, model, tokenizer, recipe: Recipe, data: StageData, resumed: bool) -> dict:
    """The stage's "before" measurement: taken now and kept in <run>/before.json, or read back from there on resume
    (the starting model is gone by then), so a resumed run still reports what training changed."""
    if resumed:
        kept = run.path / "before.json"
        return json.loads(kept.read_text()) if kept.is_file() else {}
    snapshot = stage.measure(model, tokenizer, recipe, data)
    if snapshot:
        run.write_text("before.json", json.dumps({k: v for k, v in snapshot.items() if k != "pairs"}) + "\n")
    return snapshot


def save_model(model, tokenizer, source: ModelSource, path: Path) -> None:
    """The adapter or full model plus tokenizer; adapters name their base by a path vanilla peft can load."""
    model.save_pretrained(path)
    fault_point("final-model")
    tokenizer.save_pretrained(path)
    config_file = path / "adapter_config.json"
    if config_file.is_file():
        cfg = json.loads(config_file.read_text())
        # on top of an earlier stage's adapter, that adapter is the base (resolve_model follows the chain)
        base = source.adapter or source.path
        cfg["base_model_name_or_path"] = str(Path(base).resolve()) if Path(base).exists() else base
        config_file.write_text(json.dumps(cfg, indent=2))


def write_model_card(run: RunDir, recipe: Recipe, stage: Stage, data: StageData, result: StageResult, trainable: int, total: int) -> None:
    adapter = recipe.method != "full"
    auto = "AutoPeftModelForSequenceClassification" if stage.head == "reward" else "AutoPeftModelForCausalLM"
    plain = "AutoModelForSequenceClassification" if stage.head == "reward" else "AutoModelForCausalLM"
    one_score = ", num_labels=1" if stage.head == "reward" else ""  # the base's config has no one-score head
    load = (
        f"from peft import {auto}\nmodel = {auto}.from_pretrained('{result.model_dir}'{one_score})"
        if adapter
        else f"from transformers import {plain}\nmodel = {plain}.from_pretrained('{result.model_dir}')"
    )
    t = recipe.training
    lines = [
        f"# {run.path.name}",
        "",
        f"{stage.describe(recipe)[0].upper()}{stage.describe(recipe)[1:]} ({recipe.method}{' + DoRA' if recipe.lora.use_dora else ''}) of `{recipe.model.name}` with tunesmith (stage `{recipe.stage}`).",
        "",
        f"- data: {data.summary.replace(chr(10), '; ')}",
        f"- steps: {result.steps} (effective batch {t.per_device_train_batch_size * t.gradient_accumulation_steps}), learning rate {t.learning_rate} ({t.lr_scheduler_type})",
        f"- trainable parameters: {trainable:,} of {total:,}",
        f"- final train loss: {result.train_loss:.4f}" if result.train_loss is not None else "- final train loss: n/a",
        f"- eval loss: {result.eval_loss:.4f}"
        if result.eval_loss is not None
        else "- eval loss: n/a (" + ("the eval split is measured below" if result.changes else "no eval data") + ")",
        f"- wall time: {result.seconds:.0f} s",
    ]
    if result.changes:
        lines += ["", "What changed on the eval split:", "", "| measure | before | after |", "|---|---|---|"]
        lines += [f"| {c.metric} | {c.show(c.before)} | {c.show(c.after)} |" for c in result.changes]
    try_it = (
        f"tunesmith score --reward-model {run.path} --prompt '...' --response '...'"
        if stage.head == "reward"
        else f"tunesmith generate --model {run.path} --prompt '...'"
    )
    lines += ["", f"Reproduce: `tunesmith train --recipe {run.recipe_file}`. Try it: `{try_it}`.", "", "```python", load, "```"]
    if result.before:
        lines += ["", "| prompt | before | after |", "|---|---|---|"]
        clean = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines += [f"| {clean(p)} | {clean(b)} | {clean(a)} |" for p, b, a in zip(result.prompts, result.before, result.after)]
    run.write_text("README.md", "\n".join(lines) + "\n")
