"""Generation speed: transformers' `model.generate` as users call it, against our batched generation, outputs compared.

Timed sides, alternating in fresh processes (A B C A B C...), medians reported:
- hf-defaults: the loop a transformers user writes first: the model as it loads (fp32), one prompt at a time,
  `model.generate(..., do_sample=False, max_new_tokens=N)`;
- hf-tuned: what an informed user writes for this CPU: all prompts in one left-padded `model.generate` call,
  the model loaded in the precision the CPU is fast at (bf16 where it is native, else fp32). The headline;
- tunesmith: `infer.complete` at tunesmith's default precision (auto), prompts in one batch.

And the single-stream anchor, one prompt at a time with each reply's time to first token, in the same precision
class (bf16 where tunesmith's auto picks it, else fp32):
- llama.cpp: the model exported by tunesmith to GGUF (bf16 or f32) and run by llama-cpp-python, greedy; skipped
  with the reason where llama-cpp-python cannot run here;
- tunesmith-1: `infer.complete` at batch 1.

Greedy outputs are then compared at the same precision, with extra untimed runs:
- at batch 1 the arithmetic is the same as the loop's, so the outputs must be identical;
- at batch 8 left-padding changes the shapes of floating-point sums, so a near-tie between two tokens can
  break the other way: the share of identical outputs is reported and the differences shown.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tunesmith.bench.measure import median, peak_rss_mb

TIMED = {"hf-defaults": "hf:fp32:1", "hf-tuned": "hf:auto:8", "tunesmith": "tunesmith:auto:8"}
SINGLE = {"llama.cpp": "llama.cpp:auto:1", "tunesmith-1": "tunesmith:auto:1"}  # the single-stream anchor


def bench_gguf(quant: str) -> Path:
    """The embedded model as tunesmith exports it to GGUF in `quant`, written once into the cache."""
    from tunesmith.export.gguf import write_gguf
    from tunesmith.models.builtin import DEFAULT_MODEL, cache_dir
    from tunesmith.models.load import resolve_model

    source = Path(resolve_model(DEFAULT_MODEL).path)
    out = cache_dir() / "bench" / f"{source.name}-{quant}.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        write_gguf(source, out, quant)
    return out


@dataclass
class Job:
    prompts: int = 8
    max_new_tokens: int = 64
    deadline_s: float = 420.0  # no round starts that would end past this (the output checks come after)


def prompts(count: int) -> list[str]:
    """The user turns of the built-in pirate-eval chats (everyday questions)."""
    from tunesmith.data.readers import BUILTIN_DATASETS

    rows = [json.loads(line) for line in Path(BUILTIN_DATASETS["pirate-eval"]).read_text().splitlines() if line.strip()]
    return [r["messages"][0]["content"] for r in rows[:count]]


def run_side(side: str, job: Job) -> dict:
    """`side` is impl:precision:batch (hf or tunesmith; fp32, bf16 or auto; prompts per batch)."""
    import torch

    from tunesmith.models.builtin import DEFAULT_MODEL
    from tunesmith.models.load import load_pretrained, load_tokenizer, resolve_model
    from tunesmith.models.precision import resolve_precision

    impl, precision, batch = side.split(":")
    questions = prompts(job.prompts)
    dtype = resolve_precision(precision).dtype
    first_token: list[float] = []  # seconds from a prompt's start to its first generated token (batch-1 sides)
    if impl == "llama.cpp":
        import os

        from llama_cpp import Llama

        from tunesmith.infer.generate import encode_prompt, stop_token_ids

        quant = "bf16" if dtype == torch.bfloat16 else "f32"
        tokenizer = load_tokenizer(resolve_model(DEFAULT_MODEL))
        llm = Llama(model_path=str(bench_gguf(quant)), n_ctx=2048, n_threads=os.cpu_count() or 1, verbose=False)
        ends = set(stop_token_ids(None, tokenizer))

        def run(qs, new_tokens):
            outputs = []
            for q in qs:
                ids, out, began = encode_prompt(tokenizer, [{"role": "user", "content": q}]), [], time.perf_counter()
                for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
                    if not out:
                        first_token.append(time.perf_counter() - began)
                    out.append(int(token))
                    if token in ends or len(out) >= new_tokens:
                        break
                outputs.append(out)
            return outputs
    elif impl == "hf":
        from transformers import AutoModelForCausalLM

        source = resolve_model(DEFAULT_MODEL)
        tokenizer = load_tokenizer(source)
        model = AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype)

        tokenizer.padding_side = "left"

        def run(qs, new_tokens):
            outputs = []
            for i in range(0, len(qs), int(batch)):
                chats = [[{"role": "user", "content": q}] for q in qs[i : i + int(batch)]]
                inputs = tokenizer.apply_chat_template(chats, add_generation_prompt=True, return_tensors="pt", return_dict=True, padding=True)
                out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
                for row in out[:, inputs["input_ids"].shape[1] :].tolist():
                    outputs.append(row[: row.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in row else row)  # a finished row is padded on
            return outputs
    else:
        from tunesmith.infer.generate import complete

        loaded = load_pretrained(DEFAULT_MODEL, precision=precision)
        model, tokenizer = loaded.model, loaded.tokenizer

        def run(qs, new_tokens):
            if int(batch) == 1:  # one at a time, each reply's first token timed as it streams out
                done = []
                for q in qs:
                    began, stamp = time.perf_counter(), []
                    first = lambda index, delta, stamp=stamp, began=began: stamp or stamp.append(time.perf_counter() - began)  # noqa: E731
                    done += complete(model, tokenizer, [q], max_new_tokens=new_tokens, batch_size=1, seed=0, on_token=first)
                    first_token.append(stamp[0] if stamp else time.perf_counter() - began)  # the first text a streaming client sees
            else:
                done = complete(model, tokenizer, qs, max_new_tokens=new_tokens, batch_size=int(batch), seed=0)
            return [c.token_ids + ([tokenizer.eos_token_id] if c.finish_reason == "stop" else []) for c in done]  # count the end like generate does

    if impl != "llama.cpp":
        model.eval()
    run(questions[:1], 2)  # warm-up for both: thread pool, allocator, lazy initialisation
    first_token.clear()
    start = time.perf_counter()
    with torch.no_grad():
        outputs = run(questions, job.max_new_tokens)
    seconds = time.perf_counter() - start
    generated = sum(len(o) for o in outputs)
    ends = {tokenizer.eos_token_id}
    replies = [[t for t in o if t not in ends] for o in outputs]
    return {
        "side": side,
        "dtype": str(dtype).removeprefix("torch."),
        "generated_tokens": generated,
        "seconds": seconds,
        "tokens_per_s": generated / seconds,
        "first_token_s": median(first_token) if first_token else None,
        "peak_rss_mb": peak_rss_mb(),
        "token_ids": replies,
        "texts": [tokenizer.decode(r, skip_special_tokens=True).strip() for r in replies],
    }


def compare_outputs(reference: dict, other: dict, questions: list[str]) -> dict:
    """Share of identical greedy replies, and for each difference the first token where they part."""
    differences = []
    for i, (a, b) in enumerate(zip(reference["token_ids"], other["token_ids"])):
        if a == b:
            continue
        at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        differences.append(
            {"prompt": questions[i], "first_difference_at_token": at, reference["side"]: reference["texts"][i], other["side"]: other["texts"][i]}
        )
    n = len(reference["token_ids"])
    return {
        "reference": reference["side"],
        "other": other["side"],
        "identical": n - len(differences),
        "of": n,
        "share_identical": (n - len(differences)) / n,
        "differences": differences,
    }


def compare(job: Job, repeats: int = 3, progress=lambda message: None) -> dict:
    from tunesmith.bench.worker import alternate, spawn
    from tunesmith.models.precision import cpu_capability, resolve_precision

    cpu = cpu_capability()
    ours = resolve_precision("auto").name
    progress(f"CPU: {cpu['summary']}; tunesmith's precision here: {ours}")
    runs = alternate(
        "generate",
        job,
        TIMED,
        repeats,
        progress,
        lambda i, name, f: (
            f"run {i + 1}/{repeats} {name} ({TIMED[name]}, {f['dtype']}): {f['tokens_per_s']:.1f} tokens/s, {f['generated_tokens']} tokens in {f['seconds']:.1f} s"
        ),
        deadline_s=job.deadline_s,
    )
    from tunesmith.export.llama_cpp import unavailable

    anchor = {"skipped": unavailable()}
    if anchor["skipped"] is None:
        progress("single stream: llama.cpp (tunesmith's GGUF export, same precision class) against tunesmith at batch 1")
        single = alternate(
            "generate",
            job,
            SINGLE,
            repeats,
            progress,
            lambda i, name, f: (
                f"run {i + 1}/{repeats} {name} ({SINGLE[name]}, {f['dtype']}): {f['tokens_per_s']:.1f} tokens/s, "
                f"first token after {f['first_token_s'] * 1000:.0f} ms (median)"
            ),
            deadline_s=job.deadline_s,
        )
        runs.update(single)
        ours_1, theirs = (median([f["tokens_per_s"] for f in single[name]]) for name in ("tunesmith-1", "llama.cpp"))
        anchor = {
            "skipped": None,
            "speed_ratio": ours_1 / theirs,
            "outputs": compare_outputs(single["tunesmith-1"][0], single["llama.cpp"][0], prompts(job.prompts)),
        }
    setups = {**TIMED, **SINGLE}
    sides = {
        name: {
            "setup": setups[name],
            "dtype": figures[0]["dtype"],
            "tokens_per_s": median([f["tokens_per_s"] for f in figures]),
            "first_token_s": median([f["first_token_s"] for f in figures]) if figures[0].get("first_token_s") is not None else None,
            "peak_rss_mb": median([f["peak_rss_mb"] for f in figures]),
            "runs": [{k: f[k] for k in ("tokens_per_s", "generated_tokens", "seconds", "peak_rss_mb")} for f in figures],
        }
        for name, figures in runs.items()
    }
    ratio = sides["tunesmith"]["tokens_per_s"] / sides["hf-tuned"]["tokens_per_s"]
    vs_defaults = sides["tunesmith"]["tokens_per_s"] / sides["hf-defaults"]["tokens_per_s"]

    # outputs at the same precision: ours at batch 1 against the per-prompt loop, ours at batch 8 against the
    # loop and against transformers' own batched generate (the same left-padded shapes)
    questions = prompts(job.prompts)
    loops = {"fp32": runs["hf-defaults"][0]}
    comparisons = []
    for precision in dict.fromkeys(["fp32", ours]):
        if precision not in loops:
            loops[precision] = spawn("generate", f"hf:{precision}:1", job)
            progress(f"output check: hf loop {precision} done")
        batched = runs["tunesmith"][0] if precision == ours else spawn("generate", f"tunesmith:{precision}:8", job)
        hf_batched = runs["hf-tuned"][0] if precision == ours else spawn("generate", f"hf:{precision}:8", job)
        single = spawn("generate", f"tunesmith:{precision}:1", job)
        progress(f"output check: {precision} at batch 1 and 8 done")
        comparisons.append(
            {
                "precision": precision,
                "batch_1": compare_outputs(loops[precision], single, questions),
                "batch_8": compare_outputs(loops[precision], batched, questions),
                "batch_8_vs_hf_batch_8": compare_outputs(hf_batched, batched, questions),
            }
        )
    return {
        "benchmark": "generate",
        "cpu": cpu,
        "precision": {"tunesmith": ours},
        "job": asdict(job),
        "repeats": repeats,
        "rounds": len(runs["tunesmith"]),
        "sides": sides,
        "headline_baseline": "hf-tuned",
        "speed_ratio": ratio,
        "speed_ratio_vs_defaults": vs_defaults,
        "outputs": comparisons,
        "llama_cpp": anchor,
        "targets": {
            "speed >= 10x hf-defaults": vs_defaults >= 10.0,
            "faster than hf-tuned": ratio > 1.0,
            "batch 1 identical to the loop": all(c["batch_1"]["share_identical"] == 1.0 for c in comparisons),
            **({"single stream within 1.5x of llama.cpp": anchor["speed_ratio"] >= 1 / 1.5} if anchor.get("speed_ratio") else {}),
        },
    }


def report_lines(report: dict) -> list[str]:
    lines = [f"CPU: {report['cpu']['summary']}"]
    for name, side in report["sides"].items():
        first = f"  first token {side['first_token_s'] * 1000:4.0f} ms" if side.get("first_token_s") is not None else ""
        lines.append(f"{name:12} {side['tokens_per_s']:6.1f} tokens/s  peak {side['peak_rss_mb']:5.0f} MB{first}  ({side['setup']}, {side['dtype']})")
    lines.append(f"tunesmith: {report['speed_ratio']:.2f}x hf-tuned, {report['speed_ratio_vs_defaults']:.2f}x hf-defaults (median of {report['rounds']})")
    anchor = report.get("llama_cpp") or {}
    if anchor.get("skipped"):
        lines.append(f"llama.cpp side skipped: {anchor['skipped']}")
    elif anchor:
        o = anchor["outputs"]
        lines.append(f"single stream: tunesmith {anchor['speed_ratio']:.2f}x llama.cpp; greedy replies identical {o['identical']}/{o['of']}")
    for c in report["outputs"]:
        for key, label in (
            ("batch_1", "batch 1 vs the per-prompt loop"),
            ("batch_8", "batch 8 vs the per-prompt loop"),
            ("batch_8_vs_hf_batch_8", "batch 8 vs generate at batch 8"),
        ):
            r = c[key]
            lines.append(f"{c['precision']} {label}: {r['identical']}/{r['of']} replies identical")
            for d in r["differences"]:
                lines.append(f"  {d['prompt']!r}, first different token #{d['first_difference_at_token']}")
                lines.extend(f"    {k}: {text!r}" for k, text in d.items() if k not in ("prompt", "first_difference_at_token"))
    return lines
