"""`tunesmith generate`: answer prompts with a model, adapter or run directory; batches from a file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tunesmith.cli.main import app, console
from tunesmith.cli.sampling_options import sampling_options
from tunesmith.errors import TunesmithError
from tunesmith.models.builtin import DEFAULT_MODEL

if TYPE_CHECKING:
    from tunesmith.infer.sampling import SamplingParams


def read_prompts(path: Path) -> list:
    """A .txt file (one prompt per line) or .jsonl ({"prompt": str} or {"messages": [...]} per line)."""
    from tunesmith.data.readers import decode_text

    shape = 'one JSON object per line, {"prompt": "..."} or {"messages": [{"role": "user", "content": "..."}]}'
    if not path.is_file():
        raise TunesmithError(f"prompts file '{path}' does not exist", hint="check the path given to --prompts-file")
    if path.suffix == ".json":
        raise TunesmithError(f"prompts file '{path}' is .json", hint="use .jsonl (one JSON object per line) or .txt (one prompt per line)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TunesmithError(f"cannot read the prompts file: {exc.strerror}", where=str(path), hint="check the file's permissions") from None
    text = decode_text(data, str(path), "JSON Lines text" if path.suffix == ".jsonl" else "text, one prompt per line", path.name, error=TunesmithError)
    prompts = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            prompts.append(line.rstrip("\r"))
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TunesmithError(f"not valid JSON: {exc.msg} at column {exc.colno}", where=where, hint=f"write {shape}") from None
        except RecursionError:
            raise TunesmithError("the JSON is nested too deeply to read (thousands of levels)", where=where, hint=f"write {shape}") from None
        if isinstance(record, dict) and isinstance(record.get("prompt"), str):
            if not record["prompt"].strip():
                raise TunesmithError("'prompt' is empty", where=where, hint="remove the line or write the prompt")
            prompts.append(record["prompt"])
        elif isinstance(record, dict) and isinstance(record.get("messages"), list):
            from tunesmith.data.formats import check_messages

            prompts.append(check_messages(record["messages"], where, require_assistant=False))
        else:
            found = (
                f"'prompt' is a {type(record['prompt']).__name__}"
                if isinstance(record, dict) and "prompt" in record
                else f"the line is a JSON {type(record).__name__}"
                if not isinstance(record, dict)
                else f"the fields are {sorted(record)}"
            )
            raise TunesmithError(f"expected an object with a 'prompt' string or a 'messages' list; {found}", where=where, hint=f"write {shape}")
    if not prompts:
        raise TunesmithError(f"prompts file '{path}' has no prompts", hint="write one prompt per line (.txt) or one JSON object per line (.jsonl)")
    return prompts


@app.command()
@sampling_options(temperature=0.0)
def generate(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Built-in name, model/adapter/run directory, .gguf file or Hub id."),
    prompt: list[str] | None = typer.Option(None, "--prompt", "-p", help="Prompt (repeatable)."),
    prompts_file: Path | None = typer.Option(None, "--prompts-file", help=".txt (one per line) or .jsonl with 'prompt' or 'messages'."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write one JSON result per prompt to this .jsonl file."),
    batch_size: int = typer.Option(8, min=1, help="Prompts generated together."),
    max_new_tokens: int = typer.Option(64, min=1, help="Tokens to generate at most."),
    params: SamplingParams = None,
    stop: list[str] | None = typer.Option(None, "--stop", help="Stop string (repeatable); the text is cut before it."),
    seed: int | None = typer.Option(None, help="Seed for sampling (same seed, same output)."),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Apply the chat template (default) or complete raw text."),
    system: str | None = typer.Option(None, help="System prompt (chat only)."),
    precision: str = typer.Option("auto", help="auto, bf16 or fp32."),
):
    """Generate replies for prompts given on the command line or in a file."""
    from tunesmith.infer import complete
    from tunesmith.models import load_pretrained

    prompts = list(prompt or []) + (read_prompts(prompts_file) if prompts_file else [])
    if not prompts:
        raise TunesmithError("no prompt given", hint="pass --prompt TEXT (repeatable) or --prompts-file FILE")
    if output and not output.parent.is_dir():
        raise TunesmithError(f"cannot write '{output}': folder '{output.parent}' does not exist")
    loaded = load_pretrained(model, precision=precision)
    stream = len(prompts) == 1 and not output  # one reply to a terminal: show it as it comes
    on_token = (lambda i, delta: (sys.stdout.write(delta), sys.stdout.flush())) if stream else None
    results = complete(
        loaded.model,
        loaded.tokenizer,
        prompts,
        params,
        chat=chat,
        max_new_tokens=max_new_tokens,
        stop=stop,
        seed=seed,
        batch_size=batch_size,
        system=system,
        on_token=on_token,
    )
    if stream:
        sys.stdout.write("\n")
        return
    if output:
        rows = [
            {"prompt": p, "text": r.text, "finish_reason": r.finish_reason, "prompt_tokens": r.prompt_tokens, "completion_tokens": r.completion_tokens}
            for p, r in zip(prompts, results)
        ]
        try:
            output.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        except OSError as exc:
            raise TunesmithError(f"cannot write '{output}': {exc.strerror}") from None
        console.print(f"wrote {len(results)} results to {output}")
        return
    for p, r in zip(prompts, results):
        if len(prompts) > 1:
            console.print(f"> {p if isinstance(p, str) else p[-1]['content']}", style="bold", highlight=False, markup=False)
        console.print(r.text, highlight=False, markup=False)
