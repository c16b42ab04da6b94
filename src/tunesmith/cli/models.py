"""`tunesmith models`: the model families tunesmith supports, or what one model is."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from tunesmith.cli.main import app, console, say


@app.command()
def models(
    model: str | None = typer.Argument(None, help="A model (built-in name, directory, run or .gguf) to describe; without it, the families."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
):
    """The supported model families (stages, GGUF, chat format), or one model's family, sizes, LoRA targets and chat template."""
    from tunesmith.models.describe import describe, families

    if model is None:
        rows = families()
        if as_json:
            print(json.dumps(rows, indent=2))
            return
        table = Table(title="model families")
        for column in ("family", "models", "GGUF arch", "chat format"):
            table.add_column(column)
        for r in rows:
            table.add_row(r["family"], r["models"], r["gguf_arch"], r["chat"])
        console.print(table)
        say(f"stages for every family: {', '.join(rows[0]['stages'])}")
        say(f"GGUF types for every family: {', '.join(rows[0]['gguf_types'])}")
        say("describe one model: tunesmith models <name|dir|run|file.gguf>")
        return
    info = describe(model)
    if as_json:
        print(json.dumps(info, indent=2))
        return
    t = info["template"]
    lines = [
        f"model: {info['model']} ({info['path']}{', adapter ' + info['adapter'] if info['adapter'] else ''})",
        f"family: {info['family']} ({info['architecture']}), {info['parameters']:,} parameters",
        f"layers {info['layers']}, hidden {info['hidden_size']}, MLP {info['intermediate_size']}, heads {info['heads']} (kv {info['kv_heads']}, head dim {info['head_dim']})",
        f"vocabulary {info['vocab_size']:,}, context {info['context_length']:,}, embeddings {'tied to the output' if info['tied_embeddings'] else 'untied'}",
        f"features: {', '.join(info['features']) or 'none beyond the family default'}",
        f"LoRA can target: {', '.join(info['lora_modules'])}"
        + (f" ({', '.join(f'{k} -> {v}' for k, v in info['lora_names'].items())})" if info["lora_names"] else ""),
        f"chat template: {'yes' if t['chat_template'] else 'none'}; system role: {t['system_role']}; generation markers: {'yes' if t['generation_markers'] else 'no (assistant spans found from prefixes)'}",
        f"tokens: bos {t['bos']}{' (added by the tokenizer)' if t['adds_bos'] else ''}, eos {t['eos']}, pad {t['pad']}{' (= eos)' if t['pad_is_eos'] else ''}; a reply stops at {', '.join(t['stop_tokens'])}",
    ]
    for line in lines:
        say(line)
