"""`tunesmith export RUN_OR_MODEL`: a merged model, a GGUF file, an Ollama Modelfile, and a model card with the lineage."""

from __future__ import annotations

from pathlib import Path

import typer

from tunesmith.cli.main import app, console


@app.command()
def export(
    model: str = typer.Argument(..., help="A run, merge or adapter directory, a model directory, a .gguf file or a built-in name."),
    format_: list[str] = typer.Option(["merged"], "--format", "-f", help="merged (safetensors), gguf, ollama (GGUF + Modelfile); repeatable."),
    quant: str = typer.Option("q8_0", "--quant", help="GGUF tensor type: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1."),
    dtype: str = typer.Option("float32", "--dtype", help="dtype of the merged model: float32, bfloat16, float16."),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help="Where to write (default: exports/<name>-<format>)."),
    system: str | None = typer.Option(None, "--system", help="Ollama: a SYSTEM prompt written into the Modelfile."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Read the GGUF back and compare its logits with the model's."),
):
    """Export a model: merged into a full model, as GGUF for llama.cpp, or for Ollama, with its lineage in a model card."""
    from tunesmith.export.run import export_model

    formats = [f.strip() for item in format_ for f in item.split(",") if f.strip()]
    name = Path(model.rstrip("/")).name
    out = output_dir or Path("exports") / f"{name}-{'-'.join(formats)}"
    result = export_model(
        model, out, formats, quant=quant, dtype=dtype, verify=verify, system=system, log=lambda line: console.print(line, soft_wrap=True, highlight=False)
    )
    render_export(result)
    if not (result.verify.get("logits") or {}).get("passed", True):
        raise typer.Exit(1)  # the files are kept for a look; the check above says what differs


def render_export(result) -> None:
    logits = result.verify.get("logits")
    if isinstance(logits, dict) and logits.get("summary"):
        console.print(f"gguf check: {logits['summary']}", soft_wrap=True, highlight=False, style=None if logits["passed"] else "bold red")
    for kind, path in result.files.items():
        console.print(f"{kind}: {path}", highlight=False)
    console.print(f"model card: {result.output_dir / 'README.md'}  (done in {result.seconds:.0f} s)", highlight=False)
    if "ollama" in result.files:
        console.print(
            f"run it: cd {result.output_dir} && ollama create {result.name.lower()} -f Modelfile && ollama run {result.name.lower()}", highlight=False
        )
