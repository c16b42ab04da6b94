"""`tunesmith bench sft|dpo|kto|orpo|grpo|pretrain|generate|serve`: our defaults against what a user would otherwise write, side by side;
`tunesmith bench memory`: the plan's memory estimates against the peaks runs reach."""

from __future__ import annotations

import json

import typer

from tunesmith.cli.main import app, console, err_console

bench = typer.Typer(help="Measure tunesmith against a plain TRL / transformers baseline in one run (A B A B, medians).", no_args_is_help=True)
app.add_typer(bench, name="bench")


def _progress(message: str) -> None:
    err_console.print(f"[dim]{message}[/]", highlight=False, soft_wrap=True)


def _verdicts(targets: dict) -> None:
    for name, met in targets.items():
        console.print(f"  {'[green]met[/]' if met else '[red]missed[/]'}  {name}", highlight=False)


def _show(report: dict, report_lines, as_json: bool) -> None:
    """A bench's report: JSON, or its lines and the targets met; the last line is always the speed ratio."""
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for line in report_lines(report):
            console.print(line, highlight=False, soft_wrap=True, markup=False)
        _verdicts(report["targets"])
    print(f"speed ratio tunesmith/{report.get('headline_baseline', 'baseline')}: {report['speed_ratio']:.2f}")


@bench.command("sft")
def bench_sft(
    steps: int = typer.Option(5, min=2, help="Optimizer steps per run (tokens/s is timed over steps 2..N)."),
    repeats: int = typer.Option(3, min=1, help="Runs per side, alternating (fewer where a slow CPU would take the bench past 10 minutes)."),
    batch_size: int = typer.Option(8, min=1, help="Sequences per micro-batch (both sides)."),
    gradient_accumulation_steps: int = typer.Option(2, min=1, help="Micro-batches per optimizer step (both sides)."),
    max_length: int = typer.Option(512, min=8, help="Longest sequence in tokens (both sides)."),
    model: str = typer.Option(
        "smollm2-135m-instruct", "--model", "-m", help="The model both sides fine-tune: any --model value of a supported family (tunesmith models)."
    ),
    packing: bool = typer.Option(False, "--packing", help="Both sides pack several examples into each max_length row (TRL's packing=True)."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON (the last line is still the speed ratio)."),
):
    """LoRA fine-tuning of a model (the embedded one by default) on the pirate data: plain TRL SFTTrainer scripts (TRL's defaults, and tuned for this CPU) against `tunesmith sft`."""
    from tunesmith.bench.sft import Job, compare, report_lines
    from tunesmith.models.load import resolve_model

    resolve_model(model)  # a wrong name or an unsupported architecture is a sentence now, not in each worker
    job = Job(steps=steps, batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation_steps, max_length=max_length, model=model, packing=packing)
    _show(compare(job, repeats, _progress), report_lines, as_json)


@bench.command("memory")
def bench_memory(
    steps: int = typer.Option(3, min=1, help="Optimizer steps per run."),
    case: list[str] | None = typer.Option(
        None, "--case", help="Only these cases (sft-lora, sft-full, reward, dpo, kto, orpo, grpo, ppo, pretrain); default: all."
    ),
    model: str | None = typer.Option(None, "--model", help="Another model than the recipes' default (a name, a directory)."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
):
    """Each stage's recipe defaults on the embedded model, a few steps in a fresh process: `tunesmith plan`'s memory estimate against the peak the run reached: resident memory on a CPU (~15 min on 2 cores), device memory on a GPU."""
    from tunesmith.bench.memory import CASES, Job, compare, report_lines
    from tunesmith.errors import TunesmithError

    unknown = [c for c in case or [] if c not in CASES]
    if unknown:
        raise TunesmithError(f"unknown case {', '.join(unknown)}", hint=f"cases: {', '.join(CASES)}")
    if model:
        from tunesmith.models.load import resolve_model

        resolve_model(model)  # a wrong name is a sentence here, not in each worker
    report = compare(Job(steps=steps, cases=list(case or CASES), model=model), _progress)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    for line in report_lines(report):
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    _verdicts(report["targets"])


@bench.command("dpo")
def bench_dpo(
    steps: int = typer.Option(5, min=2, help="Optimizer steps per run (tokens/s is timed over steps 2..N)."),
    repeats: int = typer.Option(3, min=1, help="Runs per side, alternating baseline and tunesmith."),
    batch_size: int = typer.Option(4, min=1, help="Preference pairs per micro-batch, both sides (each pair is two sequences)."),
    gradient_accumulation_steps: int = typer.Option(2, min=1, help="Micro-batches per optimizer step (both sides)."),
    max_length: int = typer.Option(512, min=8, help="Longest prompt+answer in tokens (both sides)."),
    learning_rate: float = typer.Option(5e-4, min=0, help="Peak learning rate, cosine schedule (both sides)."),
    beta: float = typer.Option(0.1, min=0, help="DPO beta (both sides)."),
    precompute_ref_log_probs: bool | None = typer.Option(
        None,
        "--precompute-ref-log-probs/--no-precompute-ref-log-probs",
        help="Score the reference before training, on both sides (default: each side's default, off).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON (the last line is still the speed ratio)."),
):
    """LoRA DPO of the embedded model on the pirate pairs: a plain TRL DPOTrainer script against tunesmith's `stage: dpo`."""
    from tunesmith.bench.dpo import Job, compare, report_lines

    job = Job(
        steps=steps,
        batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        max_length=max_length,
        learning_rate=learning_rate,
        beta=beta,
        precompute_ref_log_probs=precompute_ref_log_probs,
    )
    _show(compare(job, repeats, _progress), report_lines, as_json)


def _preference_command(stage: str, rows: str, beta_help: str, min_batch: int, what: str) -> None:
    """`tunesmith bench kto` and `tunesmith bench orpo`: one command each, the same options (bench/preference.py)."""

    def command(
        steps: int = typer.Option(5, min=2, help="Optimizer steps per run (timed over steps 2..N)."),
        repeats: int = typer.Option(3, min=1, help="Runs per side, alternating baseline and tunesmith."),
        batch_size: int = typer.Option(4, min=min_batch, help=f"{rows} per micro-batch (both sides)."),
        gradient_accumulation_steps: int = typer.Option(2, min=1, help="Micro-batches per optimizer step (both sides)."),
        beta: float = typer.Option(0.1, min=0, help=f"{beta_help} (both sides)."),
        as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON (the last line is still the speed ratio)."),
    ):
        from tunesmith.bench.preference import Job, compare, report_lines

        job = Job(stage=stage, steps=steps, batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation_steps, beta=beta)
        _show(compare(job, repeats, _progress), report_lines, as_json)

    command.__doc__ = what
    bench.command(stage)(command)


_preference_command(
    "kto",
    "Labelled answers (KTO's KL estimate needs 2 or more)",
    "KTO beta",
    2,
    "LoRA KTO of the embedded model on the labelled pirate answers: a plain TRL KTOTrainer script against tunesmith's `stage: kto` (optimizer steps/s).",
)
_preference_command(
    "orpo",
    "Preference pairs (two sequences each)",
    "ORPO's lambda, the odds-ratio term's weight",
    1,
    "LoRA ORPO of the embedded model on the pirate pairs: a plain TRL ORPOTrainer script (trl.experimental) against tunesmith's `stage: orpo` (optimizer steps/s).",
)


@bench.command("grpo")
def bench_grpo(
    steps: int = typer.Option(5, min=2, help="Optimizer steps per run (timed over steps 2..N)."),
    repeats: int = typer.Option(3, min=1, help="Runs per side, alternating baseline and tunesmith."),
    num_generations: int = typer.Option(8, min=2, help="Completions per prompt (both sides)."),
    max_completion_length: int = typer.Option(32, min=1, help="Longest completion in tokens (both sides)."),
    gradient_checkpointing: bool | None = typer.Option(
        None, "--gradient-checkpointing/--no-gradient-checkpointing", help="tunesmith's side only (default: the grpo recipe's, on)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON (the last line is still the speed ratio)."),
):
    """GRPO with LoRA on the arithmetic prompts: a plain TRL GRPOTrainer script against `tunesmith grpo` (optimizer steps/s)."""
    from tunesmith.bench.grpo import Job, compare, report_lines

    job = Job(steps=steps, num_generations=num_generations, max_completion_length=max_completion_length, gradient_checkpointing=gradient_checkpointing)
    _show(compare(job, repeats, _progress), report_lines, as_json)


@bench.command("pretrain")
def bench_pretrain(
    steps: int = typer.Option(4, min=2, help="Optimizer steps per run (tokens/s is timed over steps 2..N)."),
    repeats: int = typer.Option(3, min=1, help="Runs per side, alternating baseline and tunesmith."),
    batch_size: int = typer.Option(2, min=1, help="Blocks per micro-batch (both sides)."),
    gradient_accumulation_steps: int = typer.Option(4, min=1, help="Micro-batches per optimizer step (both sides)."),
    max_length: int = typer.Option(512, min=8, help="Tokens per block (both sides)."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON (the last line is still the speed ratio)."),
):
    """LoRA continued pre-training of the embedded model on the built-in docs corpus, in blocks: a plain TRL SFTTrainer script on the blocks against `tunesmith pretrain`."""
    from tunesmith.bench.pretrain import Job, compare, report_lines

    job = Job(steps=steps, batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation_steps, max_length=max_length)
    _show(compare(job, repeats, _progress), report_lines, as_json)


@bench.command("generate")
def bench_generate(
    prompts: int = typer.Option(8, min=1, help="Prompts (user turns of the pirate-eval chats)."),
    max_new_tokens: int = typer.Option(64, min=1, help="Greedy tokens per prompt at most."),
    repeats: int = typer.Option(3, min=1, help="Runs per side, alternating."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON (the last line is still the speed ratio)."),
):
    """Greedy generation: transformers' `generate` (per prompt in fp32, and batched in the CPU's fast precision) against our batched generation, outputs compared."""
    from tunesmith.bench.generate import Job, compare, report_lines

    _show(compare(Job(prompts=prompts, max_new_tokens=max_new_tokens), repeats, _progress), report_lines, as_json)


@bench.command("serve")
def bench_serve(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="What both servers serve (any --model value)."),
    requests: int = typer.Option(1000, min=1, help="Requests in the load phase."),
    clients: int = typer.Option(32, min=1, help="Concurrent clients in the load phase."),
    distinct: int = typer.Option(48, min=1, help="Distinct requests in the mix (each is first served alone, for the cross-talk check)."),
    max_tokens: int = typer.Option(32, min=1, help="Longest reply asked for; the mix asks for 1/8, 1/4, 1/2 and all of it."),
    max_batch: int = typer.Option(16, min=2, help="The batching server's --max-batch."),
    compare_clients: int = typer.Option(16, min=1, help="Concurrent clients when comparing with the one-at-a-time server."),
    compare_requests: int = typer.Option(64, min=1, help="Requests sent to each server in the comparison."),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON (the last line is still the speed ratio)."),
):
    """The continuous-batching server under load (errors, latency, cross-talk) and against `serve --max-batch 1`."""
    from tunesmith.bench.serve import Job, compare, report_lines

    job = Job(
        model=model,
        requests=requests,
        clients=clients,
        distinct=distinct,
        max_tokens=max_tokens,
        max_batch=max_batch,
        compare_clients=compare_clients,
        compare_requests=compare_requests,
    )
    _show(compare(job, _progress), report_lines, as_json)
