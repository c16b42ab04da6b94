"""Load test for `tunesmith serve`, from a second process on loopback, bounded in count and time.

    tunesmith serve &                                  # serves smollm2-135m-instruct on 127.0.0.1:8000
    python benchmarks/serve_load.py --requests 16 --concurrency 4 --max-tokens 32

Prints requests/s, latency percentiles, completion tokens/s and any errors.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import openai


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--api-key", default="none")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--time-limit", type=float, default=300.0, help="seconds; requests not started by then are skipped")
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.url, api_key=args.api_key, max_retries=0, timeout=args.time_limit)
    deadline = time.perf_counter() + args.time_limit

    def one(i: int):
        if time.perf_counter() > deadline:
            return None
        t0 = time.perf_counter()
        r = client.chat.completions.create(model=args.model, messages=[{"role": "user", "content": f"Give me fact number {i} about the sea."}],
                                           max_tokens=args.max_tokens, temperature=0.7, seed=i)
        return time.perf_counter() - t0, r.usage.completion_tokens

    start = time.perf_counter()
    latencies, tokens, errors, skipped = [], 0, [], 0
    with ThreadPoolExecutor(args.concurrency) as pool:
        for fut in as_completed([pool.submit(one, i) for i in range(args.requests)]):
            try:
                result = fut.result()
            except Exception as exc:  # report, keep going
                errors.append(repr(exc))
                continue
            if result is None:
                skipped += 1
                continue
            latencies.append(result[0])
            tokens += result[1]
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else latencies * 19
    print(f"{len(latencies)} ok, {len(errors)} errors, {skipped} skipped in {wall:.1f} s (concurrency {args.concurrency}, max_tokens {args.max_tokens})")
    print(f"throughput {len(latencies) / wall:.2f} req/s, {tokens / wall:.1f} completion tokens/s")
    print(f"latency p50 {statistics.median(latencies):.2f} s, p95 {q[18]:.2f} s, max {max(latencies):.2f} s")
    for e in errors[:3]:
        print("error:", e)


if __name__ == "__main__":
    main()
