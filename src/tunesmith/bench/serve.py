"""`tunesmith bench serve`: the continuous-batching server against the one-at-a-time server, side by side.

Each server is a `tunesmith serve` process on loopback; the clients are threads of this process, one HTTP
connection each (stdlib http.client, so the figures carry no client library's overhead). Three phases:

1. alone: each distinct request of the mix served by itself (one client) on the batching server, the reference texts;
2. load: `requests` requests from `clients` concurrent clients (mixed prompt lengths, max_tokens, greedy and
   sampled settings, some streamed), counting errors and checking that every greedy reply, and every seeded
   sampled one, equals the same request served alone (no cross-talk);
3. compare: the same `compare_requests` from `compare_clients` clients against the batching server and against
   `tunesmith serve --max-batch 1` (one request at a time, as the server was before batching).
Throughput is completion tokens per second of wall time; latency is per request, from send to last byte.

4. anchor: where llama.cpp's own server is built (`make llama-server`, or `llama-server` on PATH, or
   TUNESMITH_LLAMA_SERVER), the same compare requests from 1, 8 and 32 clients against tunesmith's batching server
   (max batch 32) and against llama-server running tunesmith's GGUF export of the model in the same precision class
   (bf16 or f32), with 32 parallel slots and continuous batching.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from urllib.parse import urlparse

from tunesmith.errors import TunesmithError

WORDS = "sea ship rum parrot gold anchor storm island map captain sail wave treasure compass harbour".split()


@dataclass(frozen=True)
class Spec:
    """One request of the mix."""

    key: int  # distinct requests share nothing but their key's spec
    prompt: str
    max_tokens: int
    temperature: float
    top_p: float = 1.0
    top_k: int | None = None
    seed: int | None = None
    stream: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def body(self, model: str) -> dict:
        body = {
            "model": model,
            "messages": [{"role": "user", "content": self.prompt}],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stream": self.stream,
        }
        if self.top_k is not None:
            body["top_k"] = self.top_k
        if self.seed is not None:
            body["seed"] = self.seed
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        return body


def request_mix(distinct: int, max_tokens: int, seed: int = 0) -> list[Spec]:
    """`distinct` requests: prompts of 2-60 words, max_tokens from max_tokens/8 up to max_tokens, half greedy,
    the rest sampled (temperature, top-p, top-k, each its own seed), one in four streamed."""
    rng = random.Random(seed)
    specs = []
    for key in range(distinct):
        words = rng.choice([2, 5, 12, 30, 60])
        prompt = f"Request {key}: tell me about " + " ".join(rng.choice(WORDS) for _ in range(words))
        n = rng.choice([max(1, max_tokens // 8), max(1, max_tokens // 4), max(1, max_tokens // 2), max_tokens])
        if key % 2 == 0:
            specs.append(Spec(key, prompt, n, 0.0, stream=key % 4 == 0))
        else:
            specs.append(
                Spec(key, prompt, n, rng.choice([0.7, 1.0, 1.2]), top_p=rng.choice([1.0, 0.9]), top_k=rng.choice([None, 20]), seed=key, stream=key % 4 == 1)
            )
    return specs


@dataclass
class Reply:
    key: int
    status: int
    text: str = ""
    completion_tokens: int = 0
    seconds: float = 0.0
    error: str | None = None


class Client:
    """One keep-alive HTTP connection per thread."""

    def __init__(self, url: str, model: str, api_key: str | None = None, timeout: float = 600):
        parsed = urlparse(url)
        self.host, self.port, self.model, self.timeout = parsed.hostname, parsed.port or 80, model, timeout
        self.headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        if getattr(self.local, "conn", None) is None:
            self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self.local.conn

    def send(self, spec: Spec) -> Reply:
        start = time.perf_counter()
        try:
            try:
                conn = self._connection()
                conn.request("POST", "/v1/chat/completions", body=json.dumps(spec.body(self.model)), headers=self.headers)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # the server closed this kept-alive connection before our request (llama.cpp's server does after a
                # stream): nothing was answered, so send it once more on a new connection, as HTTP clients do
                self.local.conn = None
                conn = self._connection()
                conn.request("POST", "/v1/chat/completions", body=json.dumps(spec.body(self.model)), headers=self.headers)
                resp = conn.getresponse()
            if resp.status != 200:
                payload = resp.read().decode(errors="replace")
                return Reply(spec.key, resp.status, seconds=time.perf_counter() - start, error=payload[:300])
            if not spec.stream:
                body = json.loads(resp.read())
                return Reply(spec.key, 200, body["choices"][0]["message"]["content"], body["usage"]["completion_tokens"], time.perf_counter() - start)
            text, tokens = [], 0
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    return Reply(spec.key, 500, seconds=time.perf_counter() - start, error=event["error"]["message"])
                if event.get("usage"):
                    tokens = event["usage"]["completion_tokens"]
                for choice in event.get("choices", []):
                    text.append(choice["delta"].get("content") or "")
            resp.read()
            return Reply(spec.key, 200, "".join(text).strip(), tokens, time.perf_counter() - start)
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            self.local.conn = None
            return Reply(spec.key, 0, seconds=time.perf_counter() - start, error=f"{type(exc).__name__}: {exc}")


@dataclass
class Load:
    """What one load phase measured."""

    requests: int
    clients: int
    ok: int
    errors: int
    seconds: float
    completion_tokens: int
    tokens_per_s: float
    requests_per_s: float
    p50_s: float
    p95_s: float
    max_s: float
    error_samples: list[str] = field(default_factory=list)


def run_load(client: Client, specs: list[Spec], clients: int, progress=None, label: str = "load", every: float = 5.0) -> tuple[Load, list[Reply]]:
    """Send `specs` from `clients` threads (each takes the next request when its previous one is answered)."""
    replies: list[Reply] = []
    lock = threading.Lock()
    start = time.perf_counter()
    stop = threading.Event()

    def report():
        while not stop.wait(every):
            with lock:
                done, tokens = len(replies), sum(r.completion_tokens for r in replies)
            if progress:
                wall = time.perf_counter() - start
                progress(f"{label}: {done}/{len(specs)} answered in {wall:.0f} s, {tokens / wall:.1f} completion tokens/s so far")

    def one(spec: Spec):
        reply = client.send(spec)
        with lock:
            replies.append(reply)

    ticker = threading.Thread(target=report, daemon=True)
    ticker.start()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, specs))
    stop.set()
    wall = time.perf_counter() - start
    good = [r for r in replies if r.error is None]
    latencies = sorted(r.seconds for r in good) or [0.0]
    tokens = sum(r.completion_tokens for r in good)
    p95 = statistics.quantiles(latencies, n=20)[18] if len(latencies) >= 2 else latencies[0]
    load = Load(
        len(specs),
        clients,
        len(good),
        len(replies) - len(good),
        round(wall, 2),
        tokens,
        round(tokens / wall, 1),
        round(len(good) / wall, 2),
        round(statistics.median(latencies), 3),
        round(p95, 3),
        round(latencies[-1], 3),
        [f"{r.status} {r.error}" for r in replies if r.error][:5],
    )
    return load, replies


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`tunesmith serve` in a child process on a free loopback port; stopped when the block ends."""

    def __init__(self, model: str, max_batch: int, max_queue: int = 64, name: str = "bench", startup_s: float = 600, argv: list[str] | None = None):
        """`argv`: another OpenAI-compatible server to run instead (llama.cpp's), "{port}" standing for the port."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if argv is not None:
            argv = [a.replace("{port}", str(self.port)) for a in argv]
        else:
            argv = [sys.executable, "-m", "tunesmith", "serve", "--model", model, "--name", name]
            argv += ["--port", str(self.port), "--max-batch", str(max_batch), "--max-queue", str(max_queue)]
        self.log = tempfile.TemporaryFile("w+")  # a pipe nobody reads would block a chatty server
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        deadline = time.perf_counter() + startup_s
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise TunesmithError(f"the server for '{model}' exited while starting: {self.log.read()[-600:].strip()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)  # not listening yet, or still loading (llama.cpp answers 503 meanwhile)
        self.close()
        raise TunesmithError(f"the server for '{model}' did not answer /health within {startup_s:.0f} s")

    def health(self) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", "/health")
        return json.loads(conn.getresponse().read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class Job:
    model: str = "smollm2-135m-instruct"
    requests: int = 1000
    clients: int = 32
    distinct: int = 48
    max_tokens: int = 32
    max_batch: int = 16
    compare_clients: int = 16
    compare_requests: int = 64


def llama_server() -> str | None:
    """llama.cpp's server binary: TUNESMITH_LLAMA_SERVER, `llama-server` on PATH, or the one `make llama-server` built
    for this CPU (under the cache, by the same hash of the CPU's flags as the Makefile's)."""
    import hashlib
    import shutil
    from pathlib import Path

    from tunesmith.models.builtin import cache_dir

    if os.environ.get("TUNESMITH_LLAMA_SERVER"):
        return os.environ["TUNESMITH_LLAMA_SERVER"]
    if found := shutil.which("llama-server"):
        return found
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return None
    built = cache_dir() / "wheels" / hashlib.md5(f"{flags}\n".encode()).hexdigest()[:12] / "llama-server" / "bin" / "llama-server"
    return str(built) if built.is_file() else None


ANCHOR_CLIENTS = (1, 8, 32)


def anchor(job: Job, specs: list[Spec], say) -> dict:
    """tunesmith's batching server against llama.cpp's at 1, 8 and 32 clients, the same requests, the same precision class."""
    binary = llama_server()
    if binary is None:
        return {"skipped": "llama.cpp's server is not built here (make llama-server builds it for this CPU, ~15 min on 2 cores)"}
    from tunesmith.bench.generate import bench_gguf
    from tunesmith.models.builtin import DEFAULT_MODEL
    from tunesmith.models.precision import resolve_precision

    if job.model != DEFAULT_MODEL:
        return {"skipped": "the llama.cpp anchor runs the embedded model only"}
    quant = "bf16" if resolve_precision("auto").name == "bf16" else "f32"
    phases = {n: [specs[i % len(specs)] for i in range(16 if n == 1 else job.compare_requests)] for n in ANCHOR_CLIENTS}
    rows: dict[str, dict] = {}
    say(f"anchor: llama.cpp's server on tunesmith's {quant} GGUF export, 32 slots")
    slots = max(ANCHOR_CLIENTS)
    argv = [binary, "-m", str(bench_gguf(quant)), "--port", "{port}", "-np", str(slots), "-c", str(slots * 1024), "-t", str(os.cpu_count() or 1)]
    with Server("llama.cpp", slots, argv=[*argv, "--jinja", "--no-webui"], startup_s=300) as server:
        for n, load_specs in phases.items():
            rows[f"llama.cpp@{n}"] = asdict(run_load(Client(server.url, "bench"), load_specs, n, say, f"llama.cpp, {n} clients")[0])
    say("anchor: tunesmith's batching server, max batch 32")
    with Server(job.model, max(ANCHOR_CLIENTS), max_queue=64) as server:
        for n, load_specs in phases.items():
            rows[f"tunesmith@{n}"] = asdict(run_load(Client(server.url, "bench"), load_specs, n, say, f"tunesmith, {n} clients")[0])
    ratios = {str(n): rows[f"tunesmith@{n}"]["tokens_per_s"] / rows[f"llama.cpp@{n}"]["tokens_per_s"] for n in ANCHOR_CLIENTS}  # JSON keys
    return {"skipped": None, "precision": quant, "rows": rows, "ratios": ratios}


def compare(job: Job, progress=None) -> dict:
    say = progress or (lambda message: None)
    specs = request_mix(job.distinct, job.max_tokens)
    load_specs = [specs[i % len(specs)] for i in range(job.requests)]
    random.Random(1).shuffle(load_specs)
    compare_specs = [specs[i % len(specs)] for i in range(job.compare_requests)]
    say(f"starting the batching server (max batch {job.max_batch}) for {job.model} ...")
    with Server(job.model, job.max_batch, max_queue=max(64, job.clients)) as server:
        client = Client(server.url, "bench")
        say(f"alone: {len(specs)} distinct requests, one at a time")
        alone, alone_replies = run_load(client, specs, 1, say, "alone")
        reference = {r.key: r.text for r in alone_replies if r.error is None}
        say(f"load: {job.requests} requests from {job.clients} clients")
        load, replies = run_load(client, load_specs, job.clients, say, "load")
        by_key = {s.key: s for s in specs}
        greedy = [r for r in replies if r.error is None and by_key[r.key].greedy]
        seeded = [r for r in replies if r.error is None and not by_key[r.key].greedy]
        greedy_differ = [r.key for r in greedy if r.text != reference.get(r.key)]
        seeded_differ = [r.key for r in seeded if r.text != reference.get(r.key)]
        peak = server.health()["peak_batch"]
        say(f"compare: {job.compare_requests} requests from {job.compare_clients} clients, batching server")
        batched, _ = run_load(client, compare_specs, job.compare_clients, say, "batched")
    say("starting the one-at-a-time server (--max-batch 1) ...")
    with Server(job.model, 1, max_queue=max(64, job.compare_clients)) as server:
        one, _ = run_load(Client(server.url, "bench"), compare_specs, job.compare_clients, say, "one at a time")
    ratio = batched.tokens_per_s / one.tokens_per_s if one.tokens_per_s else float("inf")
    llama = anchor(job, specs, say)
    targets = {}
    if llama.get("ratios"):
        targets = {
            ">= 1.0x llama.cpp's server at 32 clients": llama["ratios"]["32"] >= 1.0,
            "one stream within 1.5x of llama.cpp's": llama["ratios"]["1"] >= 1 / 1.5,
        }
    return {
        "job": asdict(job),
        "cpu": _cpu(),
        "alone": asdict(alone),
        "load": asdict(load),
        "peak_batch": peak,
        "greedy_checked": len(greedy),
        "greedy_differ": len(greedy_differ),
        "greedy_differ_keys": sorted(set(greedy_differ))[:10],
        "seeded_checked": len(seeded),
        "seeded_differ": len(seeded_differ),
        "seeded_differ_keys": sorted(set(seeded_differ))[:10],
        "batched": asdict(batched),
        "one_at_a_time": asdict(one),
        "speed_ratio": round(ratio, 2),
        "headline_baseline": "one-at-a-time server",
        "llama_cpp": llama,
        "targets": {
            **targets,
            f"0 errors in {job.requests} requests from {job.clients} clients": load.errors == 0 and load.ok == job.requests,
            "every greedy reply under load equals the request served alone": not greedy_differ and bool(greedy),
            f">= 3x the one-at-a-time server's completion tokens/s at {job.compare_clients} clients": ratio >= 3.0,
        },
    }


def _cpu() -> str:
    import torch

    from tunesmith.models.precision import cpu_kind

    return f"{cpu_kind()} CPU, {os.cpu_count()} cores, torch kernels {torch.backends.cpu.get_cpu_capability()}"


def report_lines(report: dict) -> list[str]:
    load, batched, one = report["load"], report["batched"], report["one_at_a_time"]
    job = report["job"]
    lines = [
        f"model {job['model']}, {report['cpu']}; mix of {job['distinct']} distinct chat requests (max_tokens up to {job['max_tokens']}, half greedy, a quarter streamed)",
        f"load: {load['ok']}/{load['requests']} ok, {load['errors']} errors from {load['clients']} clients in {load['seconds']:.1f} s; "
        f"{load['tokens_per_s']:.1f} completion tokens/s, {load['requests_per_s']:.2f} req/s, latency p50 {load['p50_s']:.2f} s, p95 {load['p95_s']:.2f} s; peak batch {report['peak_batch']}",
        f"cross-talk: {report['greedy_checked'] - report['greedy_differ']}/{report['greedy_checked']} greedy and "
        f"{report['seeded_checked'] - report['seeded_differ']}/{report['seeded_checked']} seeded sampled replies equal the same request served alone",
        f"{'':<24}{'tokens/s':>10}{'req/s':>8}{'p50 s':>8}{'p95 s':>8}  ({job['compare_requests']} requests, {job['compare_clients']} clients)",
    ]
    for name, row in (("batching server", batched), ("one at a time", one)):
        lines.append(
            f"{name:<24}{row['tokens_per_s']:>10.1f}{row['requests_per_s']:>8.2f}{row['p50_s']:>8.2f}{row['p95_s']:>8.2f}"
            + (f"  {row['errors']} errors" if row["errors"] else "")
        )
    llama = report.get("llama_cpp") or {}
    if llama.get("skipped"):
        lines.append(f"llama.cpp anchor skipped: {llama['skipped']}")
    elif llama:
        lines.append(f"against llama.cpp's server ({llama['precision']} both, tunesmith max batch 32, llama.cpp 32 slots):")
        for n in ANCHOR_CLIENTS:
            ours, theirs = llama["rows"][f"tunesmith@{n}"], llama["rows"][f"llama.cpp@{n}"]
            lines.append(
                f"  {n:>2} clients: tunesmith {ours['tokens_per_s']:6.1f} tokens/s (p50 {ours['p50_s']:.2f} s), "
                f"llama.cpp {theirs['tokens_per_s']:6.1f} (p50 {theirs['p50_s']:.2f} s): {llama['ratios'][str(n)]:.2f}x"
                + (f"  {ours['errors'] + theirs['errors']} errors" if ours["errors"] or theirs["errors"] else "")
            )
    for sample in load["error_samples"][:3]:
        lines.append(f"error: {sample}")
    return lines
