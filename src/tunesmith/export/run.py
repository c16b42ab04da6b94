"""`tunesmith export`: one output directory per export, built aside and moved into place when complete.

<out>/model/             the full model (merged, safetensors, tokenizer, chat template, generation config)
<out>/<name>-<quant>.gguf  (gguf, ollama) llama.cpp's format, checked by reading it back and comparing logits
<out>/Modelfile          (ollama) FROM the GGUF, the chat template in Go template syntax, the stop tokens
<out>/README.md          model card with the lineage: base model, datasets, every stage and its key metrics
<out>/export.json        what was written and verified (written last; it marks the export complete)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.runs.rundir import built_aside

FORMATS = ("merged", "gguf", "ollama")
VERIFY_PROMPTS = ["What is the capital of France?", "Give me a tip for staying healthy.", "Write one sentence about the sea."]


@dataclass
class ExportResult:
    output_dir: Path
    formats: list[str]
    name: str = "model"  # what was exported, by its directory name (the GGUF's and Ollama's model name)
    files: dict[str, str] = field(default_factory=dict)  # format -> path
    verify: dict = field(default_factory=dict)
    seconds: float = 0.0


def check_formats(formats: list[str], quant: str) -> list[str]:
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise TunesmithError(f"unknown export format '{unknown[0]}'", where="--format", hint=f"one or more of: {', '.join(FORMATS)}")
    if "gguf" in formats or "ollama" in formats:
        from tunesmith.export.gguf import QUANT_TYPES

        if quant not in QUANT_TYPES:
            raise TunesmithError(f"--quant is '{quant}'", hint=f"one of: {', '.join(QUANT_TYPES)}")
    return [f for f in FORMATS if f in formats or (f == "gguf" and "ollama" in formats)]  # Ollama runs the GGUF


def export_model(
    spec: str,
    output_dir: str | Path,
    formats: list[str],
    *,
    quant: str = "q8_0",
    dtype: str = "float32",
    verify: bool = True,
    system: str | None = None,
    llama_cpp: bool = False,
    log=print,
) -> ExportResult:
    """Export `spec` (anything --model takes) to `output_dir` in `formats`; nothing appears there until all is done."""
    from tunesmith.export.merged import save_merged
    from tunesmith.models.load import resolve_model

    started = time.perf_counter()
    formats = check_formats(formats, quant)
    out = Path(output_dir)
    if out.exists() and any(out.iterdir()):
        raise TunesmithError(f"the export directory '{out}' already exists and is not empty", hint="choose another --output-dir, or delete it")
    resolve_model(spec)  # a bad --model stops here, before anything is written
    if llama_cpp:
        from tunesmith.export.llama_cpp import unavailable

        if "gguf" not in formats:
            raise TunesmithError("--check llama.cpp runs the GGUF file, and this export writes none", hint="add --format gguf (or ollama)")
        if reason := unavailable():
            raise TunesmithError(f"--check llama.cpp: llama.cpp cannot run here: {reason}", hint="make setup-dev, or pip install llama-cpp-python")
    with built_aside(out) as tmp:
        name = Path(spec.rstrip("/")).name or "model"
        result = ExportResult(out, formats, name)
        log(f"export: merging {spec} into a full {dtype} model")
        merged = save_merged(spec, tmp / "model", dtype)
        result.files["merged"] = str(out / "model")
        if "gguf" in formats:
            from tunesmith.export.gguf import verify_gguf, write_gguf

            gguf_name = f"{name}-{quant}.gguf"
            log(f"export: writing {gguf_name} ({quant})")
            info = write_gguf(tmp / "model", tmp / gguf_name, quant, name=name, progress=log)
            result.files["gguf"] = str(out / gguf_name)
            result.verify = {"gguf": info}
            if verify:
                log("export: checking the GGUF: read back, loaded with transformers' GGUF loader, logits against the model")
                result.verify["logits"] = verify_gguf(tmp / gguf_name, tmp / "model", VERIFY_PROMPTS, quant)
            if llama_cpp:
                from tunesmith.export.llama_cpp import check_llama_cpp

                log("export: running the GGUF in llama.cpp: tokenizer, chat template, greedy tokens and stop tokens against the model")
                result.verify["llama.cpp"] = check_llama_cpp(tmp / gguf_name, tmp / "model", quant)
        if "ollama" in formats:
            from tunesmith.export.ollama import modelfile
            from tunesmith.models.load import load_tokenizer

            (tmp / "Modelfile").write_text(modelfile(load_tokenizer(str(tmp / "model")), Path(result.files["gguf"]).name, system=system))
            result.files["ollama"] = str(out / "Modelfile")
        result.seconds = time.perf_counter() - started
        (tmp / "export.json").write_text(
            json.dumps(
                {
                    "source": str(Path(spec).resolve()) if Path(spec).exists() else spec,
                    "formats": formats,
                    "quant": quant if "gguf" in formats else None,
                    "merged": merged,
                    "files": result.files,
                    "verify": result.verify,
                    "seconds": round(result.seconds, 1),
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
        from tunesmith.export.card import write_card

        write_card(tmp, spec, result, merged)
    return result
