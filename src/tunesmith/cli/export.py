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
    check: list[str] = typer.Option([], "--check", help="llama.cpp: run the GGUF in llama.cpp (llama-cpp-python) and compare it with the model."),
):
    """Export a model: merged into a full model, as GGUF for llama.cpp, or for Ollama, with its lineage in a model card."""
    from tunesmith.export.run import export_model

    formats = [f.strip() for item in format_ for f in item.split(",") if f.strip()]
    unknown = [c for c in check if c != "llama.cpp"]
    if unknown:
        from tunesmith.errors import TunesmithError

        raise TunesmithError(f"--check {unknown[0]} is not a check tunesmith knows", hint="--check llama.cpp")
    name = Path(model.rstrip("/")).name
    out = output_dir or Path("exports") / f"{name}-{'-'.join(formats)}"
    result = export_model(
        model,
        out,
        formats,
        quant=quant,
        dtype=dtype,
        verify=verify,
        system=system,
        llama_cpp="llama.cpp" in check,
        log=lambda line: console.print(line, soft_wrap=True, highlight=False),
    )
    render_export(result)
    if not all((result.verify.get(k) or {}).get("passed", True) for k in ("logits", "llama.cpp")):
        raise typer.Exit(1)  # the files are kept for a look; the check above says what differs


def render_export(result) -> None:
    logits = result.verify.get("logits")
    if isinstance(logits, dict) and logits.get("summary"):
        console.print(f"gguf check: {logits['summary']}", soft_wrap=True, highlight=False, style=None if logits["passed"] else "bold red")
    checked = result.verify.get("llama.cpp")
    if checked:
        from rich.table import Table

        table = Table(title=f"llama.cpp check ({checked['quant']})")
        for column in ("check", "result", "figures"):
            table.add_column(column)
        for name, row in checked["rows"].items():
            table.add_row(name, "[green]passed[/]" if row["passed"] else "[bold red]FAILED[/]", row["summary"])
        console.print(table)
        console.print(f"llama.cpp check: {'passed' if checked['passed'] else 'FAILED'}", highlight=False, style=None if checked["passed"] else "bold red")
    for kind, path in result.files.items():
        console.print(f"{kind}: {path}", highlight=False)
    console.print(f"model card: {result.output_dir / 'README.md'}  (done in {result.seconds:.0f} s)", highlight=False)
    if "ollama" in result.files:
        console.print(
            f"run it: cd {result.output_dir} && ollama create {result.name.lower()} -f Modelfile && ollama run {result.name.lower()}", highlight=False
        )
