"""Raw text for continued pre-training: files of any size, tokenised once into an on-disk cache, packed into blocks.

- Sources. A `.txt`/`.md` file is one document; a `.jsonl` line or a `.parquet` row is one (its `text_field`). A folder
  means the text files under it, a glob the files it matches, a comma-separated list all of them. The built-in
  `tunesmith-docs` is this project's own documentation, README.md and docs/*.md as of 2026-12-04, one JSON line per
  page (Apache-2.0, like the code; ~288 KB, ~103k tokens for SmolLM2): a snapshot, so the demo's figures stay put
  as the docs change.
- Cache. Each source is read in parts of ~PART_BYTES of text and each part tokenised into one Arrow shard under
  `$TUNESMITH_CACHE/corpora/<key>/`, written to a temporary name and renamed when whole; the key hashes the tokenizer
  and each file's path, size and modification time. A killed tokenisation resumes at the first missing shard;
  a finished one is never tokenised again. Memory holds one part at a time, whatever the corpus's size.
- Blocks. Documents are joined, each closed by the eos token, and cut into blocks of `block_size` tokens; a block
  records the lengths of the document pieces in it (`seq_lengths`), so positions restart at every document and no
  token attends across a document boundary (TRL's padding-free collator turns the lengths into position ids and
  drops the label of each document's first token). Blocks are written as Arrow files too and memory-mapped: training
  reads them without loading the corpus. A few blocks spread evenly through the corpus are held out for perplexity.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tunesmith.data.readers import BUILTIN_DATASETS
from tunesmith.errors import DataError

TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".text")
SUFFIXES = (*TEXT_SUFFIXES, ".jsonl", ".parquet")
PART_BYTES = 4 * 1024 * 1024  # text per tokenised part: one part's token lists are what tokenisation holds in memory
BLOCK_ROWS = 256  # blocks per Arrow record batch when writing blocks
VERSION = 1  # of the cache layout: a change makes new keys


def _builtin(name: str) -> Path:
    from importlib import resources

    return Path(str(resources.files("tunesmith.data").joinpath("builtin", name)))


BUILTIN_CORPORA: dict[str, Callable[[], Path]] = {"tunesmith-docs": lambda: _builtin("tunesmith_docs.jsonl")}


def corpus_files(spec: str) -> list[Path]:
    """The files a corpus spec names: a built-in, a file, a folder (its text files, recursively), a glob, or several
    of these separated by commas. Refuses, with a sentence, what names no text file."""
    files: list[Path] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in BUILTIN_CORPORA:
            files.append(BUILTIN_CORPORA[part]())
        elif part in BUILTIN_DATASETS:
            raise DataError(
                f"{part} is a built-in dataset of chats, pairs or prompts; pretrain reads raw text",
                hint=f"give .txt/.md/.jsonl/.parquet files, a folder or a glob, or the built-in corpus {', '.join(BUILTIN_CORPORA)}",
            )
        elif any(c in part for c in "*?["):
            matched = sorted(Path(p) for p in glob.glob(part, recursive=True) if Path(p).is_file() and Path(p).suffix.lower() in SUFFIXES)
            if not matched:
                raise DataError(f"the pattern {part} matches no {'/'.join(SUFFIXES)} file", hint="check the pattern (** matches folders recursively)")
            files += matched
        elif Path(part).is_dir():
            found = sorted(p for p in Path(part).rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith("."))
            if not found:
                raise DataError(f"the folder {part} holds no {'/'.join(SUFFIXES)} file", hint="pre-training reads plain text (.txt, .md), .jsonl or .parquet")
            files += found
        elif Path(part).is_file():
            if Path(part).suffix.lower() not in SUFFIXES:
                raise DataError(
                    f"{part} is a {Path(part).suffix or 'suffix-less'} file; pre-training reads {', '.join(SUFFIXES)}",
                    hint="rename a plain-text file to .txt, or convert the data to JSON Lines with a text field",
                )
            files.append(Path(part))
        else:
            raise DataError(f"{part} is neither a built-in corpus ({', '.join(BUILTIN_CORPORA)}), a file, a folder nor a glob that matches files")
    if not files:
        raise DataError("the corpus names no file", hint="give a file, a folder or a glob of .txt/.md/.jsonl/.parquet files")
    return list(dict.fromkeys(p.resolve() for p in files))


# ---------------------------------------------------------------- reading: (documents, does the last one end here)


def _text_parts(path: Path) -> Iterator[tuple[list[str], bool, int]]:
    """A text file as parts of ~PART_BYTES, each cut after a newline where it has one: all one document."""
    import codecs

    size = path.stat().st_size
    if size == 0:
        return
    decoder, carry, offset = codecs.getincrementaldecoder("utf-8")(), "", 0
    with open(path, "rb") as fh:
        if b"\x00" in fh.read(4096):
            raise DataError(f"{path} is binary, not text", hint="pre-training reads UTF-8 text files (.txt, .md), .jsonl or .parquet")
        fh.seek(0)
        while True:
            chunk = fh.read(PART_BYTES)
            last = fh.tell() >= size
            try:
                text = carry + decoder.decode(chunk, final=last)
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path} is not UTF-8 text (near byte {offset + exc.start})", hint=f"re-save it as UTF-8 (iconv -t UTF-8 {path.name} > utf8-{path.name})"
                ) from None
            if offset == 0:
                text = text.lstrip("\ufeff")
            cut = len(text) if last else (text.rfind("\n") + 1 or len(text))
            piece, carry = text[:cut], text[cut:]
            offset += len(chunk)
            yield [piece], last, len(chunk)  # the last piece may be empty: it still closes the document
            if last:
                return


def _jsonl_parts(path: Path, field: str) -> Iterator[tuple[list[str], bool, int]]:
    docs, size = [], 0
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, 1):
            size += len(raw)
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError:
                raise DataError(f"{path}:{number} is not a JSON object", hint="each line of a .jsonl file is one JSON object with a text field") from None
            text = row.get(field) if isinstance(row, dict) else None
            if not isinstance(text, str):
                have = ", ".join(row) if isinstance(row, dict) else type(row).__name__
                raise DataError(
                    f"{path}:{number} has no text field '{field}' (it has: {have})", hint="set pretrain.text_field (--text-field) to the field with the text"
                )
            docs.append(text)
            if size >= PART_BYTES:
                yield docs, True, size
                docs, size = [], 0
    if docs or size:
        yield docs, True, size


def _parquet_parts(path: Path, field: str) -> Iterator[tuple[list[str], bool, int]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception:
        raise DataError(f"{path} is not a Parquet file", hint="write it with pandas.DataFrame.to_parquet or datasets' to_parquet") from None
    if field not in table.schema_arrow.names:
        raise DataError(f"{path} has no column '{field}' (it has: {', '.join(table.schema_arrow.names)})", hint="set pretrain.text_field (--text-field)")
    rows = max(table.metadata.num_rows, 1)
    per_row = path.stat().st_size / rows
    for batch in table.iter_batches(columns=[field], batch_size=4096):
        docs = [t for t in batch.column(0).to_pylist() if isinstance(t, str)]
        yield docs, True, int(per_row * batch.num_rows)


def read_parts(path: Path, text_field: str = "text") -> Iterator[tuple[list[str], bool, int]]:
    """(documents, whether the last of them ends in this part, bytes read) for each part of one file, in order."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_parts(path, text_field)
    if suffix == ".parquet":
        return _parquet_parts(path, text_field)
    return _text_parts(path)


# ---------------------------------------------------------------- the token cache


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(f"{text}|{tokenizer.eos_token_id}".encode()).hexdigest()[:16]


def _token_ids(tokenizer, docs: list[str]) -> list[list[int]]:
    """Each document's token ids, without special tokens. A fast tokenizer's backend is asked for ids only
    (`encode_batch_fast`: no offsets, no token strings), a sub-batch of ~1 MB of text at a time: the encodings of a
    whole 4 MB part held ~100 bytes a token."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return tokenizer(docs, add_special_tokens=False)["input_ids"] if docs else []
    if backend.truncation is not None or backend.padding is not None:  # left on by an earlier `tokenizer(..., truncation=True)`
        backend.no_truncation()  # (transformers sets both per call; the backend called directly would cut every document)
        backend.no_padding()
    out, batch, size = [], [], 0
    for doc in [*docs, None]:
        if doc is not None:
            batch.append(doc)
            size += len(doc)
        if batch and (doc is None or size >= 1 << 20):
            out += [e.ids for e in backend.encode_batch_fast(batch, add_special_tokens=False)]
            batch, size = [], 0
    return out


def corpus_key(files: list[Path], tokenizer, text_field: str) -> str:
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    payload = json.dumps({"v": VERSION, "tokenizer": tokenizer_fingerprint(tokenizer), "files": stats, "field": text_field})
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def corpora_dir() -> Path:
    from tunesmith.models.builtin import cache_dir

    return cache_dir() / "corpora"


def _write_arrow(path: Path, batches: Iterator, schema) -> None:
    """Record batches into an Arrow stream file (what `datasets` memory-maps), under a temporary name renamed when whole."""
    import pyarrow as pa

    tmp = path.with_name(f".{path.name}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    os.replace(tmp, path)


def _read_arrow(path: Path):
    """An Arrow stream file memory-mapped (zero copy: the pages are read when touched)."""
    import pyarrow as pa

    return pa.ipc.open_stream(pa.memory_map(str(path))).read_all()


@dataclass
class TokenCache:
    """One corpus tokenised: its shards in order and what they hold."""

    folder: Path
    files: list[Path]
    tokens: int
    documents: int

    def shards(self) -> list[Path]:
        return [self.folder / name for name in json.loads((self.folder / "complete.json").read_text())["shards"]]


def find_cache(files: list[Path], tokenizer, text_field: str = "text") -> TokenCache | None:
    """The finished cache of this corpus and tokenizer, if there is one."""
    folder = corpora_dir() / corpus_key(files, tokenizer, text_field)
    done = folder / "complete.json"
    if not done.is_file():
        return None
    info = json.loads(done.read_text())
    return TokenCache(folder, files, info["tokens"], info["documents"])


def tokenize_corpus(files: list[Path], tokenizer, text_field: str = "text", progress: Callable[[int, int], None] | None = None) -> TokenCache:
    """Tokenise the corpus into the cache (or find it there); `progress(bytes_done, bytes_total)` after each part."""
    import pyarrow as pa

    from tunesmith.heap import release_free_memory
    from tunesmith.runs.faults import fault_point

    if (cached := find_cache(files, tokenizer, text_field)) is not None:
        return cached
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no eos token to close documents with", hint="pre-train a model whose tokenizer defines eos_token")
    folder = corpora_dir() / corpus_key(files, tokenizer, text_field)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sources.json").write_text(json.dumps({"files": [str(p) for p in files], "text_field": text_field}, indent=1) + "\n")
    schema = pa.schema([("input_ids", pa.list_(pa.uint32())), ("ends", pa.bool_())])
    eos = tokenizer.eos_token_id
    total = sum(p.stat().st_size for p in files)
    done_bytes, tokens, documents, shards = 0, 0, 0, []
    for f, path in enumerate(files):
        for k, (docs, ends, nbytes) in enumerate(read_parts(path, text_field)):
            shard = folder / f"{f:06d}-{k:06d}.arrow"
            shards.append(shard.name)
            if not shard.is_file():  # tokenised before a kill: kept
                ids = _token_ids(tokenizer, docs)
                closes = [True] * len(ids)
                if ids and not ends:
                    closes[-1] = False  # the document goes on in the next part
                ids = [row + [eos] if close else row for row, close in zip(ids, closes)]
                batch = pa.record_batch([pa.array(ids, type=pa.list_(pa.uint32())), pa.array(closes, type=pa.bool_())], schema=schema)
                _write_arrow(shard, iter([batch]), schema)
                del ids, batch
                release_free_memory()  # the tokenizer's freed buffers, before the next part
                fault_point("corpus-shard")
            shard_tokens, shard_documents = _shard_counts(shard)
            tokens += shard_tokens
            documents += shard_documents
            done_bytes += nbytes
            if progress:
                progress(min(done_bytes, total), total)
    if tokens == 0:
        raise DataError(f"the corpus ({len(files)} file{'s' if len(files) != 1 else ''}) holds no text", hint="check the files are not empty")
    info = {"shards": shards, "tokens": tokens, "documents": documents}
    tmp = folder / ".complete.json.tmp"
    tmp.write_text(json.dumps(info) + "\n")
    os.replace(tmp, folder / "complete.json")
    return TokenCache(folder, files, tokens, documents)


def estimate_tokens(files: list[Path], tokenizer, text_field: str = "text", sample_bytes: int = 1 << 20) -> tuple[int, int]:
    """(estimated tokens, bytes sampled): tokens per byte measured on up to `sample_bytes` taken from the first
    part of files spread over the corpus, times the corpus's size in bytes (plus one eos per sampled document)."""
    total = sum(p.stat().st_size for p in files)
    picks = files if len(files) <= 16 else [files[round(i * (len(files) - 1) / 15)] for i in range(16)]
    per_file = max(sample_bytes // len(picks), 1024)
    sampled_bytes = sampled_tokens = 0
    for path in picks:
        docs, _, nbytes = next(read_parts(path, text_field), ([], True, 0))
        text_bytes = 0
        kept = []
        for doc in docs:
            kept.append(doc[:per_file])
            text_bytes += len(kept[-1].encode())
            if text_bytes >= per_file:
                break
        if not kept:
            continue
        ids = tokenizer(kept, add_special_tokens=False)["input_ids"]
        whole = sum(len(d.encode()) for d in docs)
        scale = nbytes / whole if whole else 1.0  # parquet/jsonl: file bytes per text byte
        sampled_bytes += text_bytes * scale
        sampled_tokens += sum(map(len, ids)) + len(kept)
    if not sampled_bytes:
        return 0, 0
    return round(total * sampled_tokens / sampled_bytes), int(sampled_bytes)


# ---------------------------------------------------------------- blocks


@dataclass
class Blocks:
    train: Path
    eval: Path | None
    train_blocks: int
    eval_blocks: int
    block_size: int


def _pieces(cache: TokenCache) -> Iterator[tuple[object, bool]]:
    """(token array, whether it ends its document) for every document piece of the corpus, in order; one shard
    mapped at a time, its tokens viewed in place (never copied whole)."""
    for shard in cache.shards():
        table = _read_arrow(shard)
        for ids, ends in zip(table.column("input_ids").chunks, table.column("ends").chunks):
            offsets = ids.offsets.to_numpy()
            values = ids.values.to_numpy(zero_copy_only=False)
            for i, end in enumerate(ends.to_pylist()):
                yield values[offsets[i] : offsets[i + 1]], end
        del table


def _shard_counts(shard: Path) -> tuple[int, int]:
    """(tokens, documents ended) in one shard, from its offsets and flags only."""
    table = _read_arrow(shard)
    tokens = sum(int(c.offsets[-1].as_py()) - int(c.offsets[0].as_py()) for c in table.column("input_ids").chunks if len(c))
    return tokens, sum(table.column("ends").to_pylist())


def held_out(num_blocks: int, eval_blocks: int) -> set[int]:
    """Indices of the blocks held out: `eval_blocks` (at most a tenth of the corpus) spread evenly, none when < 2 blocks."""
    count = min(eval_blocks, num_blocks // 10 if num_blocks >= 20 else (1 if num_blocks >= 2 else 0))
    if count <= 0:
        return set()
    step = num_blocks / count
    return {min(int(step * (i + 0.5)), num_blocks - 1) for i in range(count)}


def make_blocks(cache: TokenCache, block_size: int, eval_blocks: int) -> Blocks:
    """Cut the cached corpus into blocks of `block_size` tokens (the last may be shorter), each with the lengths of
    the document pieces in it; blocks chosen by `held_out` go to the eval file. Cached beside the tokens."""
    import numpy as np
    import pyarrow as pa

    folder = cache.folder / f"blocks-{block_size}-eval{eval_blocks}"
    done = folder / "blocks.json"
    if done.is_file():
        info = json.loads(done.read_text())
        return Blocks(folder / "train.arrow", folder / "eval.arrow" if info["eval"] else None, info["train"], info["eval"], block_size)
    folder.mkdir(parents=True, exist_ok=True)
    num_blocks = -(-cache.tokens // block_size)
    if cache.tokens % block_size == 1:
        num_blocks -= 1  # a last block of one token has nothing to predict
    evaluation = held_out(num_blocks, eval_blocks)
    schema = pa.schema([("input_ids", pa.list_(pa.int32())), ("seq_lengths", pa.list_(pa.int32()))])
    counts = {"train": 0, "eval": 0}

    def blocks() -> Iterator[tuple[np.ndarray, list[int]]]:
        buffer, lengths, continuing = [], [], False  # continuing: the first piece in the buffer goes on from the last block
        filled = 0
        for tokens, end in _pieces(cache):
            start = 0
            while start < len(tokens):
                take = min(block_size - filled, len(tokens) - start)
                buffer.append(tokens[start : start + take])
                if continuing and lengths:
                    lengths[-1] += take
                else:
                    lengths.append(take)
                continuing = True
                filled += take
                start += take
                if filled == block_size:
                    yield np.concatenate(buffer), lengths
                    buffer, lengths, filled = [], [], 0
                    continuing = False  # a document cut by a block boundary restarts its positions in the next block
            if end:
                continuing = False
        if filled > 1:
            yield np.concatenate(buffer), lengths

    writers = {which: _BatchWriter(folder / f"{which}.arrow", schema) for which in (("train", "eval") if evaluation else ("train",))}
    for index, (ids, lengths) in enumerate(blocks()):
        if index < num_blocks:
            writers["eval" if index in evaluation else "train"].add(ids, lengths)
    for which, writer in writers.items():
        counts[which] = writer.close()
    info = {"train": counts["train"], "eval": counts["eval"], "block_size": block_size}
    tmp = folder / ".blocks.json.tmp"
    tmp.write_text(json.dumps(info) + "\n")
    os.replace(tmp, done)
    return Blocks(folder / "train.arrow", folder / "eval.arrow" if evaluation else None, counts["train"], counts["eval"], block_size)


class _BatchWriter:
    """Blocks into an Arrow stream file, BLOCK_ROWS per record batch, renamed into place when closed."""

    def __init__(self, path: Path, schema):
        import pyarrow as pa

        self.path, self.schema, self.rows, self.count = path, schema, [], 0
        self.tmp = path.with_name(f".{path.name}.tmp")
        self.sink = pa.OSFile(str(self.tmp), "wb")
        self.writer = pa.ipc.new_stream(self.sink, schema)

    def add(self, ids, lengths: list[int]) -> None:
        self.rows.append((ids, lengths))
        if len(self.rows) == BLOCK_ROWS:
            self.flush()

    def flush(self) -> None:
        import numpy as np
        import pyarrow as pa

        if not self.rows:
            return
        flat = np.concatenate([ids for ids, _ in self.rows]).astype(np.int32)
        offsets = np.concatenate([[0], np.cumsum([len(ids) for ids, _ in self.rows])]).astype(np.int32)
        input_ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, type=pa.int32()))
        self.writer.write_batch(pa.record_batch([input_ids, pa.array([lengths for _, lengths in self.rows], type=pa.list_(pa.int32()))], schema=self.schema))
        self.count += len(self.rows)
        self.rows = []

    def close(self) -> int:
        self.flush()
        self.writer.close()
        self.sink.close()
        os.replace(self.tmp, self.path)
        return self.count


def load_blocks(path: Path):
    """A blocks file as a `datasets.Dataset`, memory-mapped (not read into memory)."""
    from datasets import Dataset

    return Dataset.from_file(str(path), in_memory=False)
