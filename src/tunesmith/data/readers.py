"""Read rows from files, directories, built-in datasets or the Hub, each with its location.

Every row carries where it came from (`train.jsonl:17`, `data.csv:5`, `data.json[12]`,
`data.parquet row 12`), so every later error can point at it. A file that is not what its
name says (another encoding, binary content, a .parquet that is really CSV text, a .json that
is really JSON Lines) is a DataError naming the file and line, never a decoder's traceback.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
from importlib import resources
from pathlib import Path

from tunesmith.errors import DataError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
KIND = {".jsonl": "JSON Lines text", ".json": "JSON text", ".csv": "CSV text", ".parquet": "a Parquet file"}
TO_UTF8 = "re-save it as UTF-8 (e.g. iconv -f {enc} -t UTF-8 {name} > utf8-{name}, or 'Save as UTF-8' in your editor)"

# byte order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one)
BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a zip archive (a zipped dataset, or a spreadsheet: export it as CSV)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"BZh", "bzip2-compressed data"),
    (b"\xfd7zXZ", "xz-compressed data"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data"),
    (b"PAR1", "a Parquet file"),
    (b"GGUF", "a GGUF model file"),
    (b"SQLite format 3", "an SQLite database"),
    (b"\x80\x04", "a Python pickle"),
    (b"ARROW1", "an Arrow file"),
)
MAX_DEPTH_HINT = "flatten the row: fields are strings, or lists of {role, content} messages"


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


def _line_of(data: bytes, offset: int) -> tuple[int, int]:
    """1-based (line, column) of byte `offset`."""
    return data.count(b"\n", 0, offset) + 1, offset - (data.rfind(b"\n", 0, offset) + 1) + 1


def _binary(head: bytes) -> str | None:
    """What binary content `head` (the file's first bytes) is, if it is a kind we know."""
    return next((what for magic, what in MAGIC if head.startswith(magic)), None)


def _guess(text: str) -> str | None:
    """The suffix the text's content suggests (for 'rename it to ...' hints), judged on its first lines."""
    lines = [line.strip() for line in text[:65536].splitlines() if line.strip()][:5]
    if not lines:
        return None
    if lines[0].startswith("["):
        return ".json"
    if lines[0].startswith("{"):
        return ".jsonl" if len(lines) > 1 and all(line.startswith("{") and line.endswith("}") for line in lines) else ".json"
    if "," in lines[0]:
        return ".csv"
    return None


def _rename_hint(path: Path, text: str, default: str) -> str:
    guess = _guess(text)
    if guess and guess != path.suffix.lower():
        return f"its content looks like {KIND[guess].removesuffix(' text')} ({guess}): rename it to {path.stem}{guess}, so the name says what it holds"
    return default


def _text(path: Path, shown: str) -> str:
    """The file as UTF-8 text (see decode_text)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc.strerror}", where=shown, hint="check the path and its permissions") from None
    return decode_text(data, shown, KIND[path.suffix.lower()], path.name)


def decode_text(data: bytes, shown: str, kind: str, name: str, error=DataError) -> str:
    """`data` as UTF-8 text (a UTF-8 byte order mark is dropped); another encoding or binary content is an
    `error` (DataError) at the file and line, with how to fix it. `kind`: what the file should be ("CSV text")."""
    for bom, encoding in BOMS:
        if data.startswith(bom):
            raise error(f"the file is {encoding} encoded; tunesmith reads UTF-8 {kind}", where=shown, hint=TO_UTF8.format(enc=encoding, name=name))
    what = _binary(data[:16])
    if what:
        raise error(
            f"the file is {what}, not {kind}: its name does not match its content",
            where=shown,
            hint=f"pass the file that holds the {kind} itself, or convert this one",
        )
    nul = data.find(b"\x00")
    if nul >= 0:
        head = data[:4096]
        if head.count(b"\x00") * 3 >= len(head):  # every other byte zero: UTF-16 without a byte order mark
            raise error(
                f"the file looks UTF-16 encoded (every other byte is zero); tunesmith reads UTF-8 {kind}",
                where=shown,
                hint=TO_UTF8.format(enc="UTF-16", name=name),
            )
        line, column = _line_of(data, nul)
        raise error(
            f"binary content: a NUL byte at line {line}, column {column}; expected {kind}",
            where=f"{shown}:{line}",
            hint="the file is not text (or is damaged): write it again as UTF-8 text",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, column = _line_of(data, exc.start)
        raise error(
            f"not UTF-8: byte 0x{data[exc.start]:02x} at line {line}, column {column} (Latin-1 or Windows-1252 text?)",
            where=f"{shown}:{line}",
            hint=TO_UTF8.format(enc="LATIN1", name=name),
        ) from None


def _too_deep(where: str) -> DataError:
    return DataError("the JSON is nested too deeply to read (thousands of levels)", where=where, hint=MAX_DEPTH_HINT)


def _jsonl(path: Path, shown: str) -> list[tuple[str, dict]]:
    text = _text(path, shown)
    rows = []
    for number, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 may sit inside a JSON string
        if not line.strip():
            continue
        where = f"{shown}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            default = "each line must be one JSON object; fix or remove this line"
            hint = _rename_hint(path, text, default) if not rows else default
            raise DataError(f"not valid JSON: {exc.msg} at column {exc.colno}", where=where, hint=hint) from None
        except RecursionError:
            raise _too_deep(where) from None
        if not isinstance(record, dict):
            hint = (
                _rename_hint(path, text, 'each line must be one JSON object: {"field": value, ...}')
                if not rows
                else 'each line must be one JSON object: {"field": value, ...}'
            )
            raise DataError(f"a line is a JSON {type(record).__name__}; expected an object", where=where, hint=hint)
        rows.append((where, record))
    return rows


def _json(path: Path, shown: str) -> list[tuple[str, dict]]:
    text = _text(path, shown)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "fix the JSON at that line (a missing comma, quote or bracket?)"
        if exc.msg == "Extra data" and _guess(text) in (".jsonl", ".json") and text.lstrip().startswith("{"):
            hint = f"the file holds one JSON object per line (JSON Lines): rename it to {path.stem}.jsonl"
        else:
            hint = _rename_hint(path, text, hint)
        raise DataError(f"not valid JSON: {exc.msg} at column {exc.colno}", where=f"{shown}:{exc.lineno}", hint=hint) from None
    except RecursionError:
        raise _too_deep(shown) from None
    if isinstance(data, dict):
        data = next((data[k] for k in ("data", "train") if isinstance(data.get(k), list)), None)
    if not isinstance(data, list):
        raise DataError(
            "expected a list of objects (or an object with a 'data' or 'train' list)",
            where=shown,
            hint="write the rows as [{...}, {...}], or one object per line in a .jsonl file",
        )
    rows = []
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise DataError(
                f"item is a {type(record).__name__}; expected an object",
                where=f"{shown}[{i}]",
                hint='every item of the list must be one row: {"field": value, ...}',
            )
        rows.append((f"{shown}[{i}]", record))
    return rows


def _csv(path: Path, shown: str) -> list[tuple[str, dict]]:
    text = _text(path, shown)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[str, dict]] = []
    header: list[str] | None = None
    start = 1  # the line the current row starts on (a quoted field may span lines)
    try:
        for values in reader:
            where = f"{shown}:{start}"
            if header is None:
                if values and values[0].lstrip().startswith(("{", "[")):
                    raise DataError(
                        "the first line is JSON, not a CSV header",
                        where=where,
                        hint=_rename_hint(path, text, "a CSV file starts with a header line: prompt,completion"),
                    )
                header = [h.strip() for h in values]
                twice = next((h for h in header if header.count(h) > 1), None)
                if twice is not None:
                    raise DataError(f"the header names the column '{twice}' more than once", where=where, hint="give every column its own name")
            elif values and any(v.strip() for v in values):
                if len(values) != len(header):
                    if len(values) < len(header):
                        message = f"the row has {len(values)} of the header's {len(header)} columns (no value for '{header[len(values)]}')"
                    else:
                        message = f"the row has {len(values)} fields but the header has {len(header)} columns"
                    raise DataError(
                        message, where=where, hint='every row needs one value per header column; quote fields that contain commas or line breaks ("a, b")'
                    )
                rows.append((where, dict(zip(header, values))))
            start = reader.line_num + 1
    except csv.Error as exc:
        where = f"{shown}:{start}"
        reason = str(exc)
        if "field larger than field limit" in reason:
            raise DataError(
                f"a field of the row starting on line {start} is longer than {csv.field_size_limit():,} characters",
                where=where,
                hint="an unterminated quote makes the rest of the file one field: check the quotes there; for texts this long use JSON Lines (.jsonl)",
            ) from None
        if "unexpected end of data" in reason:
            raise DataError(
                f"a quoted field of the row starting on line {start} is never closed",
                where=where,
                hint='close the quote (a quote inside a field is written twice: "say ""hi""")',
            ) from None
        raise DataError(
            f"broken CSV in the row starting on line {start}: {reason}",
            where=where,
            hint='quote fields that contain commas, quotes or line breaks; a quote inside a field is written twice ("")',
        ) from None
    return rows


def _parquet(path: Path, shown: str) -> list[tuple[str, dict]]:
    import pyarrow
    import pyarrow.parquet as pq

    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
            fh.seek(max(0, path.stat().st_size - 4))
            tail = fh.read(4)
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc.strerror}", where=shown, hint="check the path and its permissions") from None
    if not head.startswith(b"PAR1"):
        what = _binary(head)
        if what is None:
            try:
                text = head.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            if text is not None:
                guess = _guess(text)
                raise DataError(
                    f"the file is text{' (it looks like ' + KIND[guess].removesuffix(' text') + ')' if guess else ''}, not Parquet: its name does not match its content",
                    where=shown,
                    hint=f"rename it to {path.stem}{guess}" if guess else f"name it by what it holds ({', '.join(SUFFIXES)})",
                )
        raise DataError(
            f"the file is {what or 'not a Parquet file (no PAR1 magic bytes)'}, not Parquet", where=shown, hint=f"pass the data itself as {', '.join(SUFFIXES)}"
        )
    if tail != b"PAR1":
        raise DataError("the Parquet file is cut off (no PAR1 footer at its end)", where=shown, hint="write or download the file again")
    try:
        table = pq.read_table(path)
        records = table.to_pylist()
    except (pyarrow.ArrowException, OSError) as exc:
        raise DataError(
            f"cannot read the Parquet file: {str(exc).splitlines()[0]}",
            where=shown,
            hint="the file is damaged or written by an incompatible tool: write it again (pandas: df.to_parquet)",
        ) from None
    return [(f"{shown} row {i}", record) for i, record in enumerate(records)]


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
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
            if not files:
                others = sorted(p.name for p in path.iterdir() if not p.name.startswith("."))[:3]
                found = f" (it holds {', '.join(others)}{', ...' if len(others) == 3 else ''})" if others else " (it is empty)"
                raise DataError(f"the directory has no {', '.join(SUFFIXES)} files{found}", where=source, hint="put the data files in it, or pass one file")
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
        raise DataError("no examples: the dataset is empty (no rows, or only blank lines)", where=source, hint="check the file has rows")
    return rows


def _hub(name: str) -> list[tuple[str, dict]]:
    from tunesmith.hub import require_hub

    require_hub("dataset", name, local_hint="download it where you are online, or pass a local .jsonl/.json/.csv/.parquet file")
    import datasets

    try:
        data = datasets.load_dataset(name, split="train")
    except Exception as exc:  # the hub raises many kinds; the user needs one sentence
        raise DataError(
            f"cannot load the Hub dataset '{name}': {str(exc).splitlines()[0]}", hint="check the name on huggingface.co/datasets, or pass a local file"
        ) from None
    return [(f"{name} row {i}", dict(record)) for i, record in enumerate(data)]
