"""Shared fixtures: one torch thread, the SmolLM2 tokenizer and a tiny random Llama model built once per session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    """One torch thread in the test process. The tiny models' matmuls are too small to split, and on a 2-core machine
    a second intra-op thread spin-waits against whatever else runs (tokenizers, a server thread): measured on the
    2-core EPYC, tests/evaluate + tests/export + test_generate took 52 s with two threads and 22 s with one.
    Subprocesses (servers, launches, the doc pages' runner) keep torch's default."""
    import torch

    torch.set_num_threads(1)


def pytest_collection_finish(session):
    """The libraries' millions of long-lived objects (torch, transformers, trl: imported by collection) move out of the
    garbage collector's view: each full collection in the tests then scans only what the tests made (~10% of the
    suite's time on the 2-core EPYC)."""
    import gc

    gc.collect()
    gc.freeze()


@pytest.fixture(scope="module")
def one_thread():
    """On a busy 2-core machine two intra-op threads make the tiny model ~100x slower (spin-waiting); one is plenty."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    """pretrain's token cache (data/corpus.py) in the test's own folder, not ~/.cache."""
    from tunesmith.data import corpus

    root = tmp_path / "corpora"
    monkeypatch.setattr(corpus, "corpora_dir", lambda: root)
    return root


@pytest.fixture(scope="session")
def smol_tokenizer():
    """The embedded model's tokenizer (ChatML template, pad == eos == <|im_end|>)."""
    from tunesmith.models import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smol_tokenizer):
    """A 2-layer, hidden-64 random Llama with the SmolLM2 tokenizer, saved as a normal model directory."""
    import torch
    from families import TINY
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smol_tokenizer),
        **TINY,  # tests/families.py: 2 layers, hidden 64, 4 heads, 2 kv heads
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=smol_tokenizer.bos_token_id,
        eos_token_id=smol_tokenizer.eos_token_id,
        pad_token_id=smol_tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    smol_tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def family_model(tmp_path_factory, smol_tokenizer):
    """family_model("qwen2") -> the directory of a tiny random model of that family (tests/families.py), built once per session."""
    from families import build_family_model

    built: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in built:
            built[family] = build_family_model(family, tmp_path_factory.mktemp(f"tiny-{family}"), smol_tokenizer)
        return built[family]

    return get


@pytest.fixture(scope="session")
def serve_in_thread():
    """`with serve_in_thread(app) as port:` an ASGI app served by uvicorn on a free loopback port, in a thread,
    until the block ends (the server, the batching server and the studio tests share it)."""
    import threading
    import time
    from contextlib import contextmanager

    @contextmanager
    def serving(app):
        import uvicorn

        from tunesmith.bench.serve import free_port

        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on port {port}")
            time.sleep(0.02)
        try:
            yield port
        finally:
            server.should_exit = True
            thread.join(5)

    return serving
