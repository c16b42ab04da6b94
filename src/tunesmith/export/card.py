"""The model card every export writes: what the model is, how to run it, and where it came from (its lineage)."""

from __future__ import annotations

from pathlib import Path


def write_card(directory: Path, spec: str, result, merged: dict) -> Path:
    """<directory>/README.md for an export of `spec`; `result` is an ExportResult (paths as they will be)."""
    from tunesmith.runs.lineage import lineage, lineage_markdown

    nodes = lineage(spec)
    name = Path(spec.rstrip("/")).name
    lines = [
        f"# {name}",
        "",
        f"Exported by tunesmith from `{spec}` as {', '.join(result.formats)}.",
        "",
        f"- weights: {merged['parameters']:,} parameters in {merged['dtype']}, {merged['adapters_merged']} adapter(s) merged in fp32",
        f"- stop tokens (generation_config eos_token_id): {merged['stop_token_ids']}",
    ]
    logits = result.verify.get("logits")
    if isinstance(logits, dict):
        lines.append(f"- GGUF check: {logits.get('summary', logits)}")
    lines += [
        "",
        "## Run it",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f"model = AutoModelForCausalLM.from_pretrained('{result.files['merged']}')",
        f"tokenizer = AutoTokenizer.from_pretrained('{result.files['merged']}')",
        "```",
    ]
    if "gguf" in result.files:
        lines += ["", "```bash", f"llama-cli -m {result.files['gguf']} -cnv   # llama.cpp, chat mode", "```"]
    if "ollama" in result.files:
        folder = Path(result.files["ollama"]).parent
        lines += ["", "```bash", f"cd {folder} && ollama create {name.lower()} -f Modelfile && ollama run {name.lower()}", "```"]
    lines += ["", lineage_markdown(nodes)]
    target = directory / "README.md"
    target.write_text("\n".join(lines) + "\n")
    return target
