"""`tunesmith pipeline -c pipeline.yaml`: every stage of a life-cycle in order, resumable, with lineage and a summary."""

from __future__ import annotations

from pathlib import Path

import typer

from tunesmith.cli.main import app, console

DEMO = Path(__file__).resolve().parent.parent / "pipeline" / "demo.yaml"


def pipeline_file(path: Path | None) -> Path:
    return path or DEMO


@app.command()
def pipeline(
    file: Path | None = typer.Option(
        None, "--pipeline", "-c", help="Pipeline YAML (stages: sft, reward, dpo, ..., merge, eval, export). Default: the built-in demo."
    ),
    output_dir: str | None = typer.Option(None, "--output-dir", "-o", help="Override the file's output_dir."),
):
    """Run a pipeline: stages in order, each output feeding the next by name; complete stages are skipped, an
    interrupted one resumes. With no file: the demo (pirate SFT, DPO, SLERP merge, side-by-side eval, GGUF + Ollama)."""
    from tunesmith.pipeline import load_pipeline, run_pipeline

    spec = load_pipeline(pipeline_file(file))
    if output_dir:
        spec = spec.model_copy(update={"output_dir": output_dir})
    console.print(f"pipeline {spec.name}: {len(spec.stages)} stages -> {spec.root}  (from {spec.source})", highlight=False)
    run_pipeline(spec, console=console, on_result=show_result)


def show_result(step, result) -> None:
    """Each stage's own rendering, as its command shows it."""
    from tunesmith.cli.export import render_export
    from tunesmith.cli.train import render_result

    kind = type(result).__name__
    if kind == "StageResult":
        render_result(result)
    elif kind == "Comparison":
        result.render(console)
    elif kind == "ExportResult":
        render_export(result)
    elif hasattr(result, "model_dir"):
        console.print(f"merged ({result.method}, {result.path} path) in {result.seconds:.0f} s: {result.model_dir}", highlight=False)
