"""Supervised fine-tuning (full, LoRA, DoRA, QLoRA) on top of `trl.SFTTrainer`.

Reads top to bottom: set up (run dir, precision, data, model, adapter), answer the
sample prompts, train, save, answer again. Shared parts (loading, data, LoRA
selection, schedule, run directory, callbacks) are called, never copied.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from tunesmith.errors import ModelError, TunesmithError
from tunesmith.models.load import load_model, load_tokenizer, resolve_model
from tunesmith.models.precision import Precision, resolve_precision
from tunesmith.recipes import Recipe, dump_recipe, load_recipe
from tunesmith.runs.rundir import RunDir, find_resume_point
from tunesmith.train.callbacks import MetricsLog, NanGuard, Progress
from tunesmith.train.data import PACKING_STRATEGY, TrainingData, longest_sequence, prepare_training_data
from tunesmith.train.schedule import compute_schedule
from tunesmith.train.speed import SpeedSettings, base_weights_dtype, check_gpu_kernels, speed_settings


@dataclass
class SFTResult:
    run_dir: Path
    model_dir: Path
    steps: int
    train_loss: float | None
    eval_loss: float | None
    seconds: float
    before: list[str] = field(default_factory=list)
    after: list[str] = field(default_factory=list)
    merged_dir: Path | None = None
    trainable_parameters: int = 0
    diagnostics: object = None  # evaluate.DiagnosticsReport on the eval split


SINK_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio", "comet_ml": "comet_ml"}


def check_report_to(sinks: list[str]) -> None:
    """Each extra metric sink must be known and installed; say which package to add instead of failing later."""
    import importlib.util

    for sink in sinks:
        if sink not in SINK_PACKAGES:
            raise TunesmithError(f"training.report_to has '{sink}'", hint=f"known sinks: {', '.join(SINK_PACKAGES)} (metrics.jsonl is always written)")
        if importlib.util.find_spec(SINK_PACKAGES[sink]) is None:
            raise TunesmithError(f"training.report_to asks for {sink}, but the package '{SINK_PACKAGES[sink]}' is not installed", hint=f"pip install {SINK_PACKAGES[sink]}, or drop it from report_to")


def trainer_arguments(recipe: Recipe, run: RunDir, precision: Precision, has_eval: bool, speed: SpeedSettings):
    """SFTConfig from the recipe: TrainingArguments names pass straight through."""
    from trl import SFTConfig

    t = recipe.training
    check_report_to(t.report_to)
    return SFTConfig(
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
        gradient_checkpointing=t.gradient_checkpointing,
        seed=t.seed,
        report_to=t.report_to or "none",
        dataloader_num_workers=t.dataloader_num_workers,
        bf16=precision.name == "bf16" and speed.autocast,
        fp16=precision.name == "fp16" and speed.autocast,
        use_liger_kernel=speed.liger,
        liger_kernel_config={"fused_linear_cross_entropy": False, "cross_entropy": False} if speed.liger else None,  # the loss is ours
        use_cpu=precision.device == "cpu",
        max_length=recipe.data.max_length,
        packing=recipe.data.packing,
        packing_strategy=PACKING_STRATEGY,
        disable_tqdm=True,
        logging_nan_inf_filter=False,  # the NaN guard must see a non-finite loss, not a filtered average
        include_num_input_tokens_seen="non_padding",
        dataset_num_proc=None,
    )


def check_qlora(precision: Precision) -> None:
    """QLoRA's 4-bit weights need CUDA and bitsandbytes: say so before anything is written."""
    if precision.device != "cuda":
        raise ModelError("QLoRA needs a CUDA GPU (4-bit weights via bitsandbytes); this machine has none", hint="use method: lora on CPU")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ModelError("QLoRA needs the bitsandbytes package", hint="pip install 'tunesmith[gpu]'") from exc


def load_for_training(recipe: Recipe, precision: Precision, attention: str):
    """The model to train (plain, or 4-bit for QLoRA: CUDA + bitsandbytes only) with the attention kernel `attention`."""
    source = resolve_model(recipe.model.name)
    if recipe.method != "qlora":
        model = load_model(source, dtype=base_weights_dtype(recipe, precision))
    else:
        check_qlora(precision)
        from peft import prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=precision.dtype)
        model = AutoModelForCausalLM.from_pretrained(source.path, quantization_config=quant, dtype=precision.dtype)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=recipe.training.gradient_checkpointing)
    if attention != model.config._attn_implementation:
        model.set_attn_implementation(attention)
    return source, model


def add_adapter(recipe: Recipe, model):
    if recipe.method == "full":
        return model
    from peft import get_peft_model

    from tunesmith.models.lora import build_lora_config

    # peft keeps adapter weights in fp32 (autocast_adapter_dtype) on a bf16 base.
    return get_peft_model(model, build_lora_config(model, recipe.lora))


def write_model_card(run: RunDir, recipe: Recipe, data: TrainingData, result: SFTResult, trainable: int, total: int) -> None:
    adapter = recipe.method != "full"
    load = (
        f"from peft import AutoPeftModelForCausalLM\nmodel = AutoPeftModelForCausalLM.from_pretrained('{result.model_dir}')"
        if adapter
        else f"from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained('{result.model_dir}')"
    )
    lines = [
        f"# {run.path.name}",
        "",
        f"Supervised fine-tuning ({recipe.method}{' + DoRA' if recipe.lora.use_dora else ''}) of `{recipe.model.name}` with tunesmith.",
        "",
        f"- data: {data.summary()}",
        f"- steps: {result.steps} (effective batch {recipe.training.per_device_train_batch_size * recipe.training.gradient_accumulation_steps}), learning rate {recipe.training.learning_rate} ({recipe.training.lr_scheduler_type})",
        f"- trainable parameters: {trainable:,} of {total:,}",
        f"- final train loss: {result.train_loss:.4f}" if result.train_loss is not None else "- final train loss: n/a",
        f"- eval loss: {result.eval_loss:.4f}" if result.eval_loss is not None else "- eval loss: n/a (no eval data)",
        f"- wall time: {result.seconds:.0f} s",
        "",
        "Reproduce: `tunesmith sft --recipe recipe.yaml`. Try it: `tunesmith generate --model " + str(run.path) + " --prompt '...'`.",
        "",
        "```python",
        load,
        "```",
    ]
    if result.before:
        lines += ["", "| prompt | before | after |", "|---|---|---|"]
        clean = lambda s: s.replace("|", "\\|").replace("\n", " ")  # noqa: E731
        lines += [f"| {clean(p)} | {clean(b)} | {clean(a)} |" for p, b, a in zip(recipe.sample.prompts, result.before, result.after)]
    run.write_text("README.md", "\n".join(lines) + "\n")


def run_sft(recipe: Recipe | None = None, *, resume: str | None = None, console: Console | None = None, live: bool | None = None, callbacks=()) -> SFTResult:
    """Train per `recipe` (or continue the run/checkpoint `resume`) and return where the result is."""
    import torch
    from tunesmith.train.trainer import CompactLossSFTTrainer

    console = console or Console()
    started = time.perf_counter()
    checkpoint = None
    if resume:
        run, checkpoint = find_resume_point(resume)
        recipe = load_recipe(run.recipe_file)
        console.print(f"resuming {run.path} from {checkpoint.name}")
    else:
        recipe = recipe or Recipe()
    precision = resolve_precision(recipe.model.precision)
    if recipe.method == "qlora":
        check_qlora(precision)
    check_gpu_kernels(recipe, precision)
    check_report_to(recipe.training.report_to)
    if not resume:
        run = RunDir.new(recipe.output_dir, "sft")
        run.write_text("recipe.yaml", dump_recipe(recipe.model_copy(update={"output_dir": str(run.path)})))
    console.print(f"precision: {precision.name} ({precision.reason})", soft_wrap=True)
    run.write_environment(precision)
    torch.manual_seed(recipe.training.seed)

    tokenizer = load_tokenizer(recipe.model.name)
    data = prepare_training_data(recipe, tokenizer=tokenizer)
    console.print(f"data: {data.summary()}", soft_wrap=True)
    schedule = compute_schedule(recipe.training, data.num_sequences)
    speed = speed_settings(recipe, precision, longest_sequence(recipe, data))
    source, model = load_for_training(recipe, precision, speed.attention)

    from tunesmith.infer import generate

    sample = dict(max_new_tokens=recipe.sample.max_new_tokens, temperature=recipe.sample.temperature, seed=recipe.training.seed)
    before = generate(model, tokenizer, recipe.sample.prompts, **sample) if recipe.sample.prompts and not resume else []

    model = add_adapter(recipe, model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    console.print(
        f"model: {recipe.model.name}, {recipe.method}, {trainable:,} trainable of {total:,} parameters; "
        f"{schedule.total_steps} steps of {schedule.effective_batch_size} sequences ({schedule.num_epochs:g} epochs)",
        soft_wrap=True,
    )
    console.print(f"speed: {speed.summary()}", soft_wrap=True)
    guard = NanGuard(precision.name)
    trainer = CompactLossSFTTrainer(
        model=model,
        args=trainer_arguments(recipe, run, precision, data.eval is not None, speed),
        train_dataset=data.train.dataset,
        eval_dataset=data.eval.dataset if data.eval else None,
        processing_class=tokenizer,
        callbacks=[MetricsLog(run.metrics_file, resume_step=int(checkpoint.name.split("-")[1]) if checkpoint else None), guard, Progress(console, live), *callbacks],
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # Progress prints instead
    try:
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except torch.OutOfMemoryError as exc:
        raise TunesmithError(
            "out of memory during training",
            hint="lower training.per_device_train_batch_size (raise gradient_accumulation_steps to keep the effective batch), lower data.max_length, or set training.gradient_checkpointing: true",
        ) from exc
    guard.check()
    train_loss = next((m["loss"] for m in reversed(run.read_metrics()) if "loss" in m), output.training_loss)
    eval_loss = trainer.evaluate()["eval_loss"] if data.eval is not None else None
    if eval_loss is not None:
        with open(run.metrics_file, "a") as fh:
            fh.write(json.dumps({"step": trainer.state.global_step, "eval_loss": eval_loss, "final": True}) + "\n")

    def save(path: Path) -> None:
        trainer.model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        if recipe.method != "full":  # adapters name their base by a path vanilla peft can load
            cfg = json.loads((path / "adapter_config.json").read_text())
            cfg["base_model_name_or_path"] = str(Path(source.path).resolve()) if Path(source.path).exists() else source.path
            (path / "adapter_config.json").write_text(json.dumps(cfg, indent=2))

    model_dir = run.save_final("model", save)
    run.plot_losses()
    after = generate(trainer.model, tokenizer, recipe.sample.prompts, **sample) if recipe.sample.prompts else []
    diagnostics = None
    if recipe.sample.diagnostics and data.eval is not None:
        from tunesmith.evaluate import diagnose

        diagnostics = diagnose(trainer.model, tokenizer, data.eval, name=str(run.path), train_examples=data.train.examples, max_prompts=8, max_new_tokens=recipe.sample.max_new_tokens)
        run.write_text("diagnostics.json", json.dumps(diagnostics.to_json(), indent=2) + "\n")
    merged = None
    if recipe.merge and recipe.method != "full":
        merged_model = load_model(str(model_dir), merge_adapter=True)
        merged = run.save_final("merged", lambda p: (merged_model.save_pretrained(p), tokenizer.save_pretrained(p)))
    result = SFTResult(run.path, model_dir, trainer.state.global_step, train_loss, eval_loss, time.perf_counter() - started, before, after, merged, trainable, diagnostics)
    write_model_card(run, recipe, data, result, trainable, total)
    return result
