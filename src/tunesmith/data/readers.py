"""Read rows from files, directories, built-in datasets or the Hub, each with its location.

Every row carries where it came from (`train.jsonl:17`, `data.csv:5`, `data.json[12]`,
`data.parquet row 12`), so every later error can point at it.
"""

from __future__ import annotations

import csv
import difflib
import json
from importlib import resources
from pathlib import Path

from tunesmith.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def _builtin(name: str) -> str:
    return str(resources.files("tunesmith.data").joinpath("builtin", name))


BUILTIN_DATASETS: dict[str, str] = {
    "pirate": _builtin("pirate.jsonl"),
    "pirate-eval": _builtin("pirate_eval.jsonl"),
    "pirate-pairs": _builtin("pirate_pairs.jsonl"),
    "pirate-pairs-eval": _builtin("pirate_pairs_eval.jsonl"),
    "pirate-kto": _builtin("pirate_kto.jsonl"),
    "pirate-kto-eval": _builtin("pirate_kto_eval.jsonl"),
    "arithmetic": _builtin("arithmetic.jsonl"),
    "arithmetic-eval": _builtin("arithmetic_eval.jsonl"),
}


def _jsonl(path: Path, shown: str) -> list[tuple[str, dict]]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{shown}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"not valid JSON: {exc.msg} at column {exc.colno}", where=where, hint="each line must be one JSON object") from None
            if not isinstance(record, dict):
                raise DataError(f"a line is a JSON {type(record).__name__}; expected an object", where=where)
            rows.append((where, record))
    return rows


def _json(path: Path, shown: str) -> list[tuple[str, dict]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON: {exc.msg}", where=f"{shown}:{exc.lineno}") from None
    if isinstance(data, dict):
        data = next((data[k] for k in ("data", "train") if isinstance(data.get(k), list)), None)
    if not isinstance(data, list):
        raise DataError("expected a list of objects (or an object with a 'data' or 'train' list)", where=shown)
    rows = []
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise DataError(f"item is a {type(record).__name__}; expected an object", where=f"{shown}[{i}]")
        rows.append((f"{shown}[{i}]", record))
    return rows


def _csv(path: Path, shown: str) -> list[tuple[str, dict]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        return [(f"{shown}:{reader.line_num}", dict(row)) for row in reader]


def _parquet(path: Path, shown: str) -> list[tuple[str, dict]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    return [(f"{shown} row {i}", record) for i, record in enumerate(table.to_pylist())]


READERS = {".jsonl": _jsonl, ".json": _json, ".csv": _csv, ".parquet": _parquet}


def _read_file(path: Path, shown: str) -> list[tuple[str, dict]]:
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"unsupported file type '{path.suffix}'", where=shown, hint=f"use one of {', '.join(SUFFIXES)}")
    return reader(path, shown)


def read_rows(source: str) -> list[tuple[str, dict]]:
    """All rows of `source` as (location, record) pairs, in order."""
    if source in BUILTIN_DATASETS:
        rows = _jsonl(Path(BUILTIN_DATASETS[source]), source)
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
            if not files:
                raise DataError(f"the directory '{source}' has no {', '.join(SUFFIXES)} files", where=source)
            rows = [row for f in files for row in _read_file(f, str(Path(source) / f.name))]
        elif path.is_file():
            rows = _read_file(path, source)
        elif "/" in source and not source.startswith((".", "/", "~")) and path.suffix.lower() not in SUFFIXES:
            rows = _hub(source)
        else:
            close = difflib.get_close_matches(source, list(BUILTIN_DATASETS), n=1)
            raise DataError(
                f"dataset '{source}' not found: not a built-in name, a file or a directory",
                hint=f"did you mean '{close[0]}'?" if close else f"built-in datasets: {', '.join(BUILTIN_DATASETS)}",
            )
    if not rows:
        raise DataError("no examples: the dataset is empty", where=source, hint="check the file has rows")
    return rows


def _hub(name: str) -> list[tuple[str, dict]]:
    from tunesmith.hub import require_hub

    require_hub("dataset", name, local_hint="download it where you are online, or pass a local .jsonl/.json/.csv/.parquet file")
    import datasets

    try:
        data = datasets.load_dataset(name, split="train")
    except Exception as exc:  # the hub raises many kinds; the user needs one sentence
        raise DataError(f"cannot load the Hub dataset '{name}': {str(exc).splitlines()[0]}") from None
    return [(f"{name} row {i}", dict(record)) for i, record in enumerate(data)]
