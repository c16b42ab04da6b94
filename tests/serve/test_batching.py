"""Continuous batching: rows join and leave between decode steps, each samples as if alone; back-pressure; hang-ups."""

import json
import random
import socket
import threading
import time
import urllib.request

import pytest
import torch

from tunesmith.infer import SamplingParams, complete
from tunesmith.infer.generate import encode_prompt
from tunesmith.serve.batcher import Batcher, Job, QueueFull


@pytest.fixture(scope="module")
def bf16_model(tiny_model_dir, one_thread):
    """The tiny model as the server loads it on this CPU (bf16), with SDPA attention to begin with."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    return model, tokenizer


def needs_exact_bf16():
    from tunesmith.serve.invariant import bit_exact_here

    if not bit_exact_here(torch.bfloat16):
        pytest.skip("this CPU has no oneDNN bf16 kernels (avx512_bf16/AMX): bit-exact batching is promised for bf16 there only")


def mixed_requests(n, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = [{"role": "user", "content": " ".join(rng.choice(["sea", "ship", "rum", "parrot", "gold"]) for _ in range(rng.randint(1, 40)))}]
        if i % 2 == 0:
            params = SamplingParams(temperature=0.0, repetition_penalty=rng.choice([1.0, 1.0, 1.3]))
        else:
            params = SamplingParams(
                temperature=rng.choice([0.7, 1.0, 1.3]),
                top_k=rng.choice([0, 5, 50]),
                top_p=rng.choice([1.0, 0.9]),
                min_p=rng.choice([0.0, 0.05]),
                repetition_penalty=rng.choice([1.0, 1.2]),
            )
        out.append((prompt, params, rng.randint(1, 24), i))
    return out


def run_batched(model, tokenizer, requests, max_batch=8, stagger=7):
    batcher = Batcher(model, tokenizer, max_batch=max_batch, max_queue=len(requests))
    results, streamed, all_done = {}, {}, threading.Event()

    def finish(i):
        def done(outcome):
            results[i] = outcome
            if len(results) == len(requests):
                all_done.set()

        return done

    for prompt, params, n, i in requests:
        streamed[i] = []
        batcher.submit(Job(encode_prompt(tokenizer, prompt), params, n, finish(i), seed=i, on_delta=streamed[i].append))
        if i % stagger == 0:
            time.sleep(0.005)  # later requests join a batch that is already decoding
    assert all_done.wait(120)
    load = batcher.load()
    batcher.close()
    return results, streamed, load


def test_every_row_of_the_batch_equals_its_request_decoded_alone(bf16_model):
    """28 requests with their own lengths, settings and seeds, joining and leaving one batch: each reply (tokens, text,
    finish reason, streamed deltas) equals `complete` on that request alone, greedy and seeded sampling alike."""
    needs_exact_bf16()
    model, tokenizer = bf16_model
    requests = mixed_requests(28)
    results, streamed, load = run_batched(model, tokenizer, requests)
    assert load["served"] == 28 and load["peak_batch"] == 8 and load["running"] == 0
    for prompt, params, n, i in requests:
        alone = complete(model, tokenizer, [prompt], params, max_new_tokens=n, seed=i)[0]
        got = results[i]
        assert (got.token_ids, got.text, got.finish_reason, got.completion_tokens) == (
            alone.token_ids,
            alone.text,
            alone.finish_reason,
            alone.completion_tokens,
        ), (i, params)
        assert "".join(streamed[i]) == got.text


def test_a_prompt_prefilled_from_the_prefix_cache_computes_as_alone(bf16_model):
    """Prompts that share a long system message and a chat history: later ones are prefilled from the cached keys and
    values of earlier ones, in whole chunks, and every reply still equals the same request decoded alone."""
    needs_exact_bf16()
    from tunesmith.serve.invariant import PROMPT_CHUNK

    model, tokenizer = bf16_model
    system = {"role": "system", "content": "You are a pirate. " * 12}
    history = [system, {"role": "user", "content": "ahoy"}, {"role": "assistant", "content": "ahoy matey, what be yer wish"}]
    sampled = SamplingParams(temperature=1.0)  # the tiny random model's greedy reply hardly depends on its prompt; a draw does
    asks = [[*history, {"role": "user", "content": f"tell me about {word}"}] for word in ["gold", "rum", "ships", "sea", "maps"]]
    requests = [(prompt, sampled, 8, i) for i, prompt in enumerate(asks)]
    requests += [(asks[0], SamplingParams(temperature=0.0), 8, 5), (asks[0], SamplingParams(temperature=1.0, top_p=0.9), 8, 6)]  # again
    batcher = Batcher(model, tokenizer, max_batch=4, max_queue=8)
    results, done = {}, threading.Event()
    for prompt, params, n, i in requests:  # one after the other: each finds the ones before it in the cache
        batcher.submit(Job(encode_prompt(tokenizer, prompt), params, n, lambda outcome, i=i: (results.__setitem__(i, outcome), done.set()), seed=i))
        assert done.wait(60)
        done.clear()
    hits, reused = batcher.prefixes.hits, batcher.prefixes.reused_tokens
    off = Batcher(model, tokenizer, max_batch=4, prefix_cache_mb=0)  # `serve --prefix-cache-mb 0`
    assert off.prefixes is None and off.load()["prefix_hits"] == 0
    off.close()
    assert (batcher.load()["prefix_hits"], batcher.load()["prefix_tokens_reused"]) == (hits, reused)
    batcher.close()
    shared = len(encode_prompt(tokenizer, history))
    assert hits == len(requests) - 1 and reused >= (len(requests) - 1) * (shared // PROMPT_CHUNK * PROMPT_CHUNK)
    for prompt, params, n, i in requests:
        alone = complete(model, tokenizer, [prompt], params, max_new_tokens=n, seed=i)[0]
        assert (results[i].token_ids, results[i].text) == (alone.token_ids, alone.text), i


@pytest.mark.slow  # the counterfactual (~6 s): the fast suite keeps every row equal to its request alone
def test_without_the_batch_invariant_kernels_rows_would_round_differently(tiny_model_dir, one_thread):
    """Why the batcher makes the model batch-invariant (serve/invariant.py): with plain SDPA some rows differ from alone."""
    needs_exact_bf16()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.serve import batcher as batcher_module

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16, attn_implementation="sdpa").eval()
    requests = mixed_requests(40)
    saved = batcher_module.batch_invariant_attention
    batcher_module.batch_invariant_attention = lambda model: None
    try:
        results, _, _ = run_batched(model, tokenizer, requests)
    finally:
        batcher_module.batch_invariant_attention = saved
    differ = sum(results[i].token_ids != complete(model, tokenizer, [p], params, max_new_tokens=n, seed=i)[0].token_ids for p, params, n, i in requests)
    assert differ >= 1


def test_a_cancelled_row_leaves_at_once_and_its_neighbour_is_unaffected(bf16_model):
    model, tokenizer = bf16_model
    batcher = Batcher(model, tokenizer, max_batch=4, max_queue=4)
    greedy = SamplingParams(temperature=0.0)
    outcomes, first_delta = {}, threading.Event()
    long_ids = encode_prompt(tokenizer, [{"role": "user", "content": "go on"}])
    other_ids = encode_prompt(tokenizer, [{"role": "user", "content": "and you"}])
    doomed = Job(long_ids, SamplingParams(temperature=1.0), 400, lambda o: outcomes.__setitem__("doomed", o), seed=1, on_delta=lambda d: first_delta.set())
    kept_done = threading.Event()
    kept = Job(other_ids, greedy, 30, lambda o: (outcomes.__setitem__("kept", o), kept_done.set()))
    batcher.submit(doomed)
    batcher.submit(kept)
    assert first_delta.wait(30)
    batcher.cancel(doomed)
    deadline = time.perf_counter() + 2
    while "doomed" not in outcomes and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert outcomes["doomed"] is None  # cancelled: no reply, and its row is gone
    assert kept_done.wait(30)
    assert outcomes["kept"].token_ids == complete(model, tokenizer, [[{"role": "user", "content": "and you"}]], greedy, max_new_tokens=30)[0].token_ids
    assert batcher.load()["running"] == 0
    batcher.close()


def test_the_one_at_a_time_server_keeps_no_prefix_cache(tiny_model_dir):
    """`--max-batch 1` runs the model's own attention, which cannot take a cached prefix: it prefills every prompt
    whole, so a prompt seen before is sampled as `complete` samples it alone (seeded; fp32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    batcher = Batcher(model, tokenizer, max_batch=1, max_queue=2)
    assert batcher.prefixes is None
    prompt = [{"role": "system", "content": "Speak like a pirate. " * 6}, {"role": "user", "content": "ahoy"}]
    params = SamplingParams(temperature=1.0)
    replies = []
    for _ in range(2):
        done = threading.Event()
        batcher.submit(Job(encode_prompt(tokenizer, prompt), params, 12, lambda c, done=done: (replies.append(c.token_ids), done.set()), seed=3))
        assert done.wait(30)
    batcher.close()
    assert replies[0] == replies[1] == complete(model, tokenizer, [prompt], params, max_new_tokens=12, seed=3)[0].token_ids


def test_a_full_waiting_line_is_refused_with_a_retry_time(bf16_model):
    model, tokenizer = bf16_model
    batcher = Batcher(model, tokenizer, max_batch=1, max_queue=1)
    started, release = threading.Event(), threading.Event()
    ids = encode_prompt(tokenizer, "x", chat=False)

    def slow_delta(_):
        started.set()
        release.wait(30)  # hold the worker (and so the batch) until the test has filled the line

    finished = []
    batcher.submit(Job(ids, SamplingParams(temperature=1.0), 3, finished.append, strip=False, seed=0, on_delta=slow_delta))
    assert started.wait(30)
    batcher.submit(Job(ids, SamplingParams(temperature=0.0), 2, finished.append, strip=False))  # waits
    with pytest.raises(QueueFull) as refused:
        batcher.submit(Job(ids, SamplingParams(temperature=0.0), 2, finished.append, strip=False))
    assert refused.value.retry_after >= 1 and refused.value.waiting == 1
    release.set()
    deadline = time.perf_counter() + 30
    while len(finished) < 2 and time.perf_counter() < deadline:
        time.sleep(0.01)
    assert len(finished) == 2 and all(f is not None for f in finished)
    batcher.close()


# -- over HTTP ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tiny_model_dir, one_thread, serve_in_thread):
    """max_batch 2, max_queue 1: easy to fill."""
    from tunesmith.serve import Engine, create_app

    engine = Engine(tiny_model_dir, name="tiny", max_prompt_tokens=512, max_batch=2, max_queue=1)
    with serve_in_thread(create_app(engine)) as port:
        yield port, engine


def _open_stream(port, max_tokens=400):
    """A raw streaming request; returns the socket after the first content chunk arrived."""
    body = json.dumps(
        {"model": "tiny", "messages": [{"role": "user", "content": "talk"}], "max_tokens": max_tokens, "temperature": 1.0, "seed": 5, "stream": True}
    ).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    seen = b""
    while seen.count(b"data: ") < 2:  # the role chunk, then the first text
        seen += sock.recv(4096)
    return sock


def _health(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health") as resp:
        return json.loads(resp.read())


def test_a_client_that_hangs_up_mid_stream_frees_its_slot(small_server):
    port, engine = small_server
    sock = _open_stream(port)
    deadline = time.perf_counter() + 3
    while _health(port)["running"] != 1 and time.perf_counter() < deadline:  # the first text can arrive just before the row joins
        time.sleep(0.01)
    assert _health(port)["running"] == 1
    sock.close()
    deadline = time.perf_counter() + 3
    while _health(port)["running"] and time.perf_counter() < deadline:
        time.sleep(0.02)
    assert _health(port)["running"] == 0  # 400 tokens were asked for; the row left when the client did


def test_a_full_server_answers_429_with_retry_after_and_keeps_serving(small_server):
    port, engine = small_server
    streams = [_open_stream(port), _open_stream(port)]  # the batch (2) is full
    waiting = threading.Thread(
        target=lambda: urllib.request.urlopen(
            urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/completions",
                data=json.dumps({"model": "tiny", "prompt": "a", "max_tokens": 2}).encode(),
                headers={"Content-Type": "application/json"},
            )
        ).read()
    )
    waiting.start()  # takes the one place in the line
    deadline = time.perf_counter() + 5
    while _health(port)["waiting"] < 1 and time.perf_counter() < deadline:
        time.sleep(0.01)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request)
    assert refused.value.code == 429 and int(refused.value.headers["Retry-After"]) >= 1
    payload = json.loads(refused.value.read())
    assert set(payload["error"]) == {"message", "type", "param", "code"} and payload["error"]["code"] == "queue_full"
    for sock in streams:
        sock.close()
    waiting.join(30)
    with urllib.request.urlopen(request) as resp:  # room again
        assert json.loads(resp.read())["choices"][0]["finish_reason"] in ("stop", "length")


def test_streamed_usage_when_asked(small_server):
    port, _ = small_server
    body = json.dumps(
        {
            "model": "tiny",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 5,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    with urllib.request.urlopen(
        urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"})
    ) as resp:
        events = [json.loads(line[6:]) for line in resp.read().decode().splitlines() if line.startswith("data: {")]
    assert events[-1]["choices"] == [] and 1 <= events[-1]["usage"]["completion_tokens"] <= 5


@pytest.mark.slow  # two server processes (~8 s each to start) and 1000 requests: ~35 s; the fast suite keeps the batcher in process
def test_load_from_a_second_process(tiny_model_dir):
    """`tunesmith bench serve` on the tiny model: 1000 requests from 32 clients to a `tunesmith serve` process, no
    errors, every greedy and seeded reply equal to the request served alone, and the one-at-a-time server compared."""
    from tunesmith.bench.serve import Job, compare

    report = compare(Job(model=tiny_model_dir, requests=1000, clients=32, distinct=48, max_tokens=8, compare_clients=16, compare_requests=48))
    load = report["load"]
    assert load["ok"] == 1000 and load["errors"] == 0, load["error_samples"]
    assert report["greedy_checked"] >= 400 and report["seeded_checked"] >= 400
    assert report["peak_batch"] > 1 and report["one_at_a_time"]["errors"] == 0
    from tunesmith.models.precision import resolve_precision
    from tunesmith.serve.invariant import bit_exact_here

    if bit_exact_here(resolve_precision("auto").dtype):  # the server decodes bf16 on oneDNN here: every reply exact
        assert report["greedy_differ"] == 0 and report["seeded_differ"] == 0
        assert list(report["targets"].values())[:2] == [True, True]
    else:  # fp32 on MKL: rows round by ~1e-7 with their company; only a near-tie can change a reply
        print(f"fp32 server: {report['greedy_differ']} greedy and {report['seeded_differ']} seeded replies differed from alone")
        assert report["greedy_differ"] <= 0.02 * report["greedy_checked"]


def test_serving_beyond_loopback_without_a_key_is_warned():
    from tunesmith.cli.serve import exposure_warning

    assert exposure_warning("127.0.0.1", None) is None and exposure_warning("::1", None) is None
    assert exposure_warning("0.0.0.0", "k") is None
    assert "without --api-key" in exposure_warning("0.0.0.0", None)


def test_a_row_takes_the_same_linear_kernel_alone_and_in_any_batch(one_thread):
    """oneDNN's bf16 kernel depends on the row count (one row on an EPYC, over 32 on an AMX Xeon round differently);
    in chunks of the measured size a row computes the same alone, in a decode batch and in a long prefill."""
    needs_exact_bf16()
    from tunesmith.serve.invariant import agreeing_rows, small_row_linears

    torch.manual_seed(0)
    chunk = agreeing_rows({(1536, 576), (576, 1536)}, torch.bfloat16)
    assert chunk >= 8
    for features_in, features_out in ((1536, 576), (576, 1536)):
        layer = torch.nn.Linear(features_in, features_out, bias=False).to(torch.bfloat16)
        x = torch.randn(300, 1, features_in).to(torch.bfloat16)
        with torch.no_grad():
            assert small_row_linears(layer, chunk) == 1 and small_row_linears(layer) == 0  # changed once
            alone = [layer(x[r : r + 1])[0] for r in range(300)]
            for rows in (2, 16, 33, 100, 300):
                batch = layer(x[:rows])
                assert all(torch.equal(alone[r], batch[r]) for r in range(rows)), (features_in, rows, chunk)
            assert layer(x[:1, 0]).shape == (1, features_out) and layer(x[:40, 0]).shape == (40, features_out)
