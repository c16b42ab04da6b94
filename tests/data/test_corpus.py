"""Raw-text corpora for `pretrain`: which files a spec names, the token cache (reused, resumed after a kill) and the
blocks cut from it (every token once, in order, with the document lengths that restart positions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tunesmith.data import corpus
from tunesmith.errors import DataError

WORDS = "the ship sails north across grey water while gulls cry above and the crew hauls rope at dawn".split()


def _text(seed: int, lines: int) -> str:
    import random

    rng = random.Random(seed)
    return "\n".join(" ".join(rng.choice(WORDS) for _ in range(10)) for _ in range(lines)) + "\n"


@pytest.fixture
def corpus_dir(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(_text(1, 20))
    (folder / "sub" / "b.md").write_text("# Title\n\n" + _text(2, 7))
    (folder / "c.jsonl").write_text("".join(json.dumps({"text": _text(10 + i, 1 + i % 3), "id": i}) + "\n" for i in range(9)))
    (folder / "notes.csv").write_text("not,read\n")
    (folder / ".hidden.txt").write_text("skipped\n")
    return folder


def test_a_spec_names_files_folders_globs_and_lists(corpus_dir):
    found = corpus.corpus_files(str(corpus_dir))
    assert [p.name for p in found] == ["a.txt", "c.jsonl", "b.md"]  # sorted by path; .csv and dot-files left out
    assert [p.name for p in corpus.corpus_files(f"{corpus_dir}/**/*.md")] == ["b.md"]
    both = corpus.corpus_files(f"{corpus_dir}/a.txt, {corpus_dir}/sub")
    assert [p.name for p in both] == ["a.txt", "b.md"]
    assert corpus.corpus_files(f"{corpus_dir}/a.txt,{corpus_dir}/a.txt") == [corpus_dir.resolve() / "a.txt"]  # once


def test_the_builtin_corpus_is_a_snapshot_of_this_projects_docs():
    (path,) = corpus.corpus_files("tunesmith-docs")
    sources = [json.loads(line)["source"] for line in path.read_text().splitlines()]
    assert sources[0] == "README.md" and "docs/concepts.md" in sources


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: str(d / "missing.txt"), "is neither a built-in corpus"),
        (lambda d: str(d / "notes.csv"), "is a .csv file; pre-training reads"),
        (lambda d: f"{d}/*.pdf", "matches no"),
    ],
)
def test_a_spec_that_names_no_text_is_a_sentence(corpus_dir, make, expected):
    with pytest.raises(DataError, match=expected):
        corpus.corpus_files(make(corpus_dir))


def test_bad_files_are_refused_with_file_and_line(tmp_path, smol_tokenizer, cache_root):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "no text field"}) + "\n")
    with pytest.raises(DataError, match=r"rows.jsonl:2 has no text field 'text' \(it has: body\)"):
        corpus.tokenize_corpus([rows], smol_tokenizer)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(DataError, match="latin.txt is not UTF-8 text"):
        corpus.tokenize_corpus([latin], smol_tokenizer)
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(DataError, match="blob.txt is binary"):
        corpus.tokenize_corpus([binary], smol_tokenizer)


def test_parquet_rows_are_documents(tmp_path, smol_tokenizer, cache_root):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"content": [_text(i, 2) for i in range(5)], "n": list(range(5))}), path)
    with pytest.raises(DataError, match="has no column 'text' \\(it has: content, n\\)"):
        corpus.tokenize_corpus([path], smol_tokenizer)
    cache = corpus.tokenize_corpus([path], smol_tokenizer, text_field="content")
    expected = sum(len(smol_tokenizer(_text(i, 2), add_special_tokens=False)["input_ids"]) + 1 for i in range(5))
    assert (cache.documents, cache.tokens) == (5, expected)


def _all_tokens(files, tokenizer, field="text") -> list[int]:
    """The corpus as `pretrain` should see it: every document's tokens, each closed by eos."""
    out = []
    for path in files:
        if path.suffix == ".jsonl":
            docs = [json.loads(line)[field] for line in path.read_text().splitlines()]
        else:
            docs = [path.read_text()]
        for doc in docs:
            out += tokenizer(doc, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return out


def test_blocks_hold_every_token_once_in_order_with_document_lengths(corpus_dir, smol_tokenizer, cache_root):
    files = corpus.corpus_files(str(corpus_dir))
    cache = corpus.tokenize_corpus(files, smol_tokenizer)
    expected = _all_tokens(files, smol_tokenizer)
    assert (cache.tokens, cache.documents) == (len(expected), 2 + 9)
    blocks = corpus.make_blocks(cache, 32, eval_blocks=3)
    train, held = corpus.load_blocks(blocks.train), corpus.load_blocks(blocks.eval)
    assert (len(train), len(held)) == (blocks.train_blocks, blocks.eval_blocks) and blocks.eval_blocks >= 1
    order = sorted(corpus.held_out(len(train) + len(held), 3))
    rows, t, h = [], iter(train), iter(held)
    for index in range(len(train) + len(held)):
        rows.append(next(h) if index in order else next(t))
    assert [tok for r in rows for tok in r["input_ids"]] == expected
    assert all(len(r["input_ids"]) == 32 for r in rows[:-1]) and all(sum(r["seq_lengths"]) == len(r["input_ids"]) for r in rows)
    # a document ends exactly where a length ends (the eos is its last token), and lengths restart at block starts
    eos = smol_tokenizer.eos_token_id
    for r in rows:
        ends = [i for i, tok in enumerate(r["input_ids"]) if tok == eos]
        bounds = [sum(r["seq_lengths"][: k + 1]) - 1 for k in range(len(r["seq_lengths"]))]
        assert set(ends) <= set(bounds) and set(bounds[:-1]) <= set(ends)


def test_a_large_text_file_is_read_in_parts_without_changing_its_tokens(tmp_path, smol_tokenizer, cache_root, monkeypatch):
    path = tmp_path / "long.txt"
    path.write_text("".join(_text(i, 5) + "é 🏴‍☠️ ünïcode\n" for i in range(24)))
    monkeypatch.setattr(corpus, "PART_BYTES", 700)  # many parts, cuts after newlines
    cache = corpus.tokenize_corpus([path], smol_tokenizer)
    assert len(cache.shards()) > 8 and cache.documents == 1
    pieces = [list(ids) for ids, _ in corpus._pieces(cache)]
    text = smol_tokenizer.decode([t for p in pieces for t in p][:-1])
    assert text == path.read_text()  # cut only at newlines: the text comes back whole


def test_a_tokenizer_left_truncating_by_an_earlier_call_still_reads_whole_documents(corpus_dir, smol_tokenizer, cache_root):
    """`tokenizer(..., truncation=True, max_length=8)` leaves the backend truncating; the corpus asks the backend
    directly, so it turns that off rather than cut every document to 8 tokens."""
    import copy

    tokenizer = copy.deepcopy(smol_tokenizer)
    text = "Ahoy, the map shows the gold under the old mast of the ship, where the parrot sleeps."
    whole = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(tokenizer(text, truncation=True, max_length=8)["input_ids"]) == 8
    assert tokenizer.backend_tokenizer.truncation is not None  # the state this guards against
    assert corpus._token_ids(tokenizer, [text]) == [whole]


def test_the_cache_is_reused_and_keyed_by_files_and_tokenizer(corpus_dir, smol_tokenizer, cache_root):
    files = corpus.corpus_files(str(corpus_dir))
    first = corpus.tokenize_corpus(files, smol_tokenizer)
    stamps = {p: p.stat().st_mtime_ns for p in first.shards()}
    again = corpus.tokenize_corpus(files, smol_tokenizer)
    assert again.folder == first.folder and {p: p.stat().st_mtime_ns for p in again.shards()} == stamps
    (corpus_dir / "a.txt").write_text(_text(99, 3))  # an edited file: a new cache
    assert corpus.tokenize_corpus(files, smol_tokenizer).folder != first.folder


@pytest.mark.slow  # two fresh processes (~9 s); the fast suite keeps the cache's reuse and keying
def test_a_killed_tokenisation_resumes_at_the_first_missing_part(tmp_path, corpus_dir, smol_tokenizer, cache_root):
    files = corpus.corpus_files(str(corpus_dir))
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from tunesmith.data import corpus
        from tunesmith.models import load_tokenizer
        corpus.corpora_dir = lambda: Path({str(cache_root)!r})
        corpus.PART_BYTES = 300
        corpus.tokenize_corpus([Path(p) for p in {[str(p) for p in files]!r}], load_tokenizer({smol_tokenizer.name_or_path!r}))
        """
    )
    env = {**os.environ, "TUNESMITH_FAULT": "corpus-shard:3"}
    killed = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    folder = next(cache_root.iterdir())
    written = sorted(folder.glob("*.arrow"))
    assert len(written) == 3 and not (folder / "complete.json").exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in written}
    resumed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert {p.name: p.stat().st_mtime_ns for p in written} == stamps  # the parts written before the kill were kept
    cache = corpus.find_cache(files, smol_tokenizer)
    assert cache is not None and [int(t) for ids, _ in corpus._pieces(cache) for t in ids] == _all_tokens(files, smol_tokenizer)


def test_the_estimate_from_a_sample_is_close(corpus_dir, smol_tokenizer):
    (corpus_dir / "big.txt").write_text(_text(5, 400))
    files = corpus.corpus_files(str(corpus_dir))
    estimate, sampled = corpus.estimate_tokens(files, smol_tokenizer, sample_bytes=4000)
    exact = len(_all_tokens(files, smol_tokenizer))
    assert 0 < sampled < sum(p.stat().st_size for p in files)
    assert abs(estimate - exact) / exact < 0.2


def test_held_out_blocks_are_spread_and_at_most_a_tenth():
    assert corpus.held_out(1, 32) == set() and corpus.held_out(5, 32) == {2}
    chosen = corpus.held_out(1000, 32)
    assert len(chosen) == 32 and min(chosen) < 50 and max(chosen) > 950
    assert len(corpus.held_out(100, 32)) == 10 and corpus.held_out(1000, 0) == set()
