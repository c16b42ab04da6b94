"""A corpus far larger than what tokenisation holds at once: peak memory does not grow with the corpus.

Each size runs in a fresh process that tokenises the corpus into the cache, cuts the blocks, and reads 400 random
blocks through TRL's padding-free collator as training would; a thread samples the process's anonymous resident
memory (RssAnon: heap, not the memory-mapped cache files, whose pages the kernel may drop at will). A word-level
tokenizer keeps the 600 MB run to about two minutes; the memory path is the same for any tokenizer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

WORDS = "the ship sails north across grey water while gulls cry above and the crew hauls rope at dawn".split()

PROBE = textwrap.dedent(
    """
    import json, random, sys, threading, time
    from pathlib import Path

    peak = {"anon": 0, "rss": 0}
    def sample():
        while True:
            for line in open("/proc/self/status"):
                if line.startswith(("RssAnon:", "VmRSS:")):
                    key = "anon" if line.startswith("RssAnon") else "rss"
                    peak[key] = max(peak[key], int(line.split()[1]) * 1024)
            time.sleep(0.02)
    threading.Thread(target=sample, daemon=True).start()

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
    from tunesmith.data import corpus

    words = sys.argv[3].split()
    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>")
    corpus.corpora_dir = lambda: Path(sys.argv[2])
    time.sleep(0.1)
    baseline = dict(peak)
    started = time.perf_counter()
    cache = corpus.tokenize_corpus(corpus.corpus_files(sys.argv[1]), tokenizer)
    blocks = corpus.make_blocks(cache, 1024, eval_blocks=32)
    train = corpus.load_blocks(blocks.train)
    collate = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)
    rng = random.Random(0)
    for _ in range(100):
        batch = collate([train[rng.randrange(len(train))] for _ in range(4)])
        assert batch["input_ids"].shape[1] == 4096
    time.sleep(0.1)
    print(json.dumps({"tokens": cache.tokens, "blocks": blocks.train_blocks, "seconds": time.perf_counter() - started,
                      "peak_anon": peak["anon"], "peak_rss": peak["rss"], "baseline_anon": baseline["anon"]}))
    """
)


def _corpus(folder, megabytes: int) -> None:
    """Files of random sentences: one large .txt (read in parts) and .jsonl files of many short documents."""
    import random

    rng = random.Random(megabytes)
    folder.mkdir()
    line = lambda: " ".join(rng.choice(WORDS) for _ in range(12)) + "\n"  # noqa: E731
    block = "".join(line() for _ in range(20000))  # ~1.2 MB, reused so writing 600 MB takes seconds
    with open(folder / "book.txt", "w") as fh:
        for _ in range(max(1, (megabytes // 2 << 20) // len(block))):
            fh.write(block)
    with open(folder / "posts.jsonl", "w") as fh:
        written = 0
        while written < megabytes // 2 * 1024 * 1024:
            text = block[rng.randrange(0, 500000) :][: rng.randrange(200, 4000)]
            row = json.dumps({"text": text}) + "\n"
            fh.write(row)
            written += len(row)


def _probe(folder, cache) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(folder), str(cache), " ".join(WORDS)], capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_the_corpus(tmp_path):
    small_dir, large_dir = tmp_path / "small", tmp_path / "large"
    _corpus(small_dir, 40)
    _corpus(large_dir, 600)
    small = _probe(small_dir, tmp_path / "cache-small")
    large = _probe(large_dir, tmp_path / "cache-large")
    print(f"\n40 MB: {small}\n600 MB: {large}")
    assert large["tokens"] > 12 * small["tokens"]
    # the heap holds one part (~4 MB of text) and its tokens at a time: within 64 MB of the small corpus's peak
    assert large["peak_anon"] - small["peak_anon"] < 64 * 1024**2, (small, large)
