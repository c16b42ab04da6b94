"""Run an exported GGUF in llama.cpp itself (llama-cpp-python) and check it against the model it came from.

`verify_gguf` proves the weights through transformers' GGUF loader; llama.cpp is the client users run (Ollama runs it
too), and a file that transformers reads can still fail there: the pre-tokenizer's name, the chat template, the stop
tokens. Checked here, each as a row of figures (nothing is asserted):

- the file loads;
- llama.cpp's tokenizer gives the Hugging Face ids on STRINGS (plain, unicode, emoji, code, whitespace runs, chat
  turns with special tokens);
- the chat template stored in the GGUF, rendered by llama-cpp-python's Jinja formatter from the file's metadata,
  gives the model's own prompt, token for token, on CONVERSATIONS;
- greedy decoding gives tunesmith's tokens for the first `greedy` tokens (16 in f32; 8 in another type, against
  tunesmith with the same quantisation); then, both sides fed tunesmith's tokens, every position's pick is compared:
  f32 must agree everywhere, a quantised type may swap two tokens only where they are closer than its noise
  (TOLERANCE of the logit range: llama.cpp's quantised kernels also round the activations);
- every token tunesmith ends a reply at is end-of-generation for llama.cpp.

llama-cpp-python is built from source for the CPU it was built on (make setup-dev): a build for another CPU dies with
an illegal instruction on import, so `unavailable()` imports it in a subprocess first.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

from tunesmith.errors import ModelError

STRINGS = [
    "Hello, world!",
    "The capital of France is Paris.",
    "What is 12 + 30? It is 42.",
    "3 33 333 3333 3.14159 1,000,000 2024-12-04",
    "don't won't I'll we've they're it's 'quoted' \"double\"",
    "ALL CAPS and MiXeD cAsE words",
    "Ünïcödé: naïve café résumé Ångström",
    "日本語のテキストと中文字符",
    "Русский текст и ελληνικά",
    "emoji 🙂 🏴‍☠️ 👩‍👩‍👧‍👦 🚀🚀",
    "def f(x):\n    return x ** 2  # square",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "    four leading spaces",
    "trailing spaces    ",
    "tabs\tand\t\ttabs",
    "\n\nnewlines\n\n\nrun\n",
    "a  b   c    d",
    "<html><body class='x'>hi</body></html>",
    "https://example.com/path?query=1&x=y#frag",
    "user@example.com, +1 (555) 010-0199",
    "Arr, matey! Hoist the mainsail, ye scallywag.",
    "—– dashes … ellipsis “quotes” ‘single’",
    "$100.00 €50 £20 ¥1000",
    "x = [1, 2, 3]; y = {'a': 1}",
    "SELECT * FROM runs WHERE loss < 0.5;",
    "",
    " ",
    "a",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "ﬁ ligature and ½ fraction and ² superscript",
    "zero\u200bwidth space",
    "mixed\r\nline endings\r\n",
    "!!!???...,,,;;;",
    "CamelCaseIdentifier snake_case_identifier kebab-case",
    "1+1=2, 2*3=6, 10/2=5",
    "Ça va? Où est la bibliothèque?",
    "¿Dónde está? ¡Hola!",
    "한국어 텍스트",
    "עברית ועוד",
    "العربية",
    "हिन्दी पाठ",
    "A\u0301 combining accent",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nBe brief.<|im_end|>",
    "text <|im_end|> in the middle",
    "<|endoftext|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<|user|>\nHi<|end|>\n<|assistant|>\n",
    "[INST] Hi [/INST]",
]
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Tell me about the sea."}],
    [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "It is 4."},
        {"role": "user", "content": "And 3 + 3?"},
    ],
    [{"role": "user", "content": "Write code:\ndef f(x):\n    return x"}],
    [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Colour of the sky? 🙂"}],
]
GREEDY = {"f32": 16}  # tokens that must agree with tunesmith's fp32 greedy decoding; 8 for every other type


@functools.cache
def unavailable() -> str | None:
    """Why llama.cpp cannot run here (None when it can): not installed, or built for another CPU."""
    probe = "import llama_cpp; llama_cpp.llama_backend_init(); print(llama_cpp.__version__)"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "importing llama_cpp took over 2 minutes"
    if done.returncode == 0:
        return None
    if "No module named 'llama_cpp'" in done.stderr:
        return "llama-cpp-python is not installed (make setup-dev builds it for this CPU, best effort)"
    if done.returncode in (-4, 132):  # SIGILL
        return "the installed llama-cpp-python was built for another CPU (illegal instruction): make setup-dev builds one for this CPU"
    return f"llama_cpp does not import: {(done.stderr.strip().splitlines() or ['exit ' + str(done.returncode)])[-1]}"


def load(gguf_file, n_ctx: int = 1024):
    """The GGUF in llama.cpp (every position's logits kept, so greedy decoding can be compared), or a ModelError."""
    reason = unavailable()
    if reason:
        raise ModelError(f"llama.cpp cannot run here: {reason}", hint="pip install llama-cpp-python (built from source for this CPU), then try again")
    from llama_cpp import Llama

    try:
        return Llama(model_path=str(gguf_file), n_ctx=n_ctx, n_threads=os.cpu_count() or 1, logits_all=True, verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise ModelError(
            f"llama.cpp cannot load '{gguf_file}': {exc}",
            hint="run it with verbose output to see why: python -c \"from llama_cpp import Llama; Llama('FILE', verbose=True)\"",
        ) from None


def _chat_formatter(llm, template: str):
    """llama-cpp-python's Jinja formatter over the GGUF's own chat template (as its chat completions render prompts)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    text = lambda token: llm._model.token_get_text(token) if token >= 0 else ""  # noqa: E731
    return Jinja2ChatFormatter(template=template, eos_token=text(llm.token_eos()), bos_token=text(llm.token_bos()))


def _greedy(llm, prompt_ids: list[int], n: int) -> list[int]:
    """llama.cpp's `n` greedy tokens after `prompt_ids`."""
    import numpy as np

    llm.reset()
    llm.eval(prompt_ids)
    tokens = []
    for _ in range(n):
        tokens.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval(tokens[-1:])
    return tokens


def check_llama_cpp(gguf_file, model_dir, quant: str, *, greedy: int | None = None, llm=None) -> dict:
    """Run `gguf_file` in llama.cpp and compare it with `model_dir` (the model it was written from). Returns rows of
    figures and `passed`; greedy decoding is compared over GREEDY[quant] tokens (8 for a type other than f32)."""
    import torch

    from tunesmith.infer import SamplingParams
    from tunesmith.infer.generate import complete, encode_prompt, stop_token_ids
    from tunesmith.models import load_pretrained

    greedy = greedy or GREEDY.get(quant, 8)
    llm = llm or load(gguf_file)
    loaded = load_pretrained(str(model_dir), precision="fp32")
    tokenizer = loaded.tokenizer
    rows = {}

    ids = lambda text: llm.tokenize(text.encode(), add_bos=False, special=True)  # noqa: E731
    bad = [s for s in STRINGS if ids(s) != tokenizer(s, add_special_tokens=False)["input_ids"]]
    # transformers normalises text first where tokenizer.json says so (Qwen: NFC); llama.cpp does not, for any model
    normalizer = getattr(getattr(tokenizer, "backend_tokenizer", None), "normalizer", None)
    normalised = [s for s in bad if normalizer is not None and ids(normalizer.normalize_str(s)) == tokenizer(s, add_special_tokens=False)["input_ids"]]
    bad = [s for s in bad if s not in normalised]
    rows["tokenizer"] = {
        "passed": not bad,
        "checked": len(STRINGS),
        "differ": bad[:3],
        "normalised": normalised,
        "summary": f"{len(STRINGS) - len(bad) - len(normalised)}/{len(STRINGS)} strings give the same ids"
        + (f"; {len(normalised)} only after the tokenizer's normalisation, which llama.cpp does not apply (e.g. {normalised[0]!r})" if normalised else "")
        + (f"; differ: {bad[0]!r}" if bad else ""),
    }

    template = llm.metadata.get("tokenizer.chat_template")
    formatter = _chat_formatter(llm, template) if template else None
    prompts = []
    for messages in CONVERSATIONS:
        ours = encode_prompt(tokenizer, messages, chat=True)
        theirs = llm.tokenize(formatter(messages=messages).prompt.encode(), add_bos=False, special=True) if formatter else None
        prompts.append((messages, ours, theirs))
    same = sum(t == o for _, o, t in prompts)
    rows["chat template"] = {
        "passed": template is not None and same == len(prompts),
        "summary": f"{same}/{len(prompts)} conversations give the same prompt tokens" + ("" if template else " (the GGUF has no tokenizer.chat_template)"),
    }

    if quant != "f32":  # like for like: tunesmith's weights put through the quantisation the file holds
        from tunesmith.export.gguf import _quantize_like_the_file

        _quantize_like_the_file(loaded.model, quant)
    with torch.no_grad():
        ours = complete(loaded.model, tokenizer, [CONVERSATIONS[0]], SamplingParams(temperature=0.0), max_new_tokens=greedy)[0]
    prompt_ids, n = prompts[0][1], len(ours.token_ids)
    theirs = _greedy(llm, prompt_ids, n)
    parted = next((i for i, (a, b) in enumerate(zip(ours.token_ids, theirs)) if a != b), None)
    # and position by position under tunesmith's tokens (both sides fed the same text): where the picks differ, how close
    import numpy as np

    llm.reset()
    llm.eval(prompt_ids + ours.token_ids[:-1])
    picks = [int(np.argmax(llm.scores[len(prompt_ids) - 1 + i])) for i in range(n)]
    with torch.no_grad():
        logits = loaded.model(torch.tensor([prompt_ids + ours.token_ids])).logits[0, len(prompt_ids) - 1 : len(prompt_ids) - 1 + n]
    from tunesmith.export.gguf import TOLERANCE

    swaps = []
    for i, (a, b) in enumerate(zip(ours.token_ids, picks)):
        if a != b:
            gap, span = float(logits[i, a] - logits[i, b]), float(logits[i].max() - logits[i].min())
            swaps.append({"position": i, "tunesmith": a, "llama.cpp": b, "gap": gap, "near_tie": quant != "f32" and gap <= TOLERANCE[quant] * span})
    row = {"ours": ours.token_ids, "llama.cpp": theirs, "parted_at": parted, "swaps": swaps}
    # f32 must agree token for token; a quantised type may swap two tokens closer than its noise (llama.cpp's quantised
    # kernels also round the activations), nowhere else
    row["passed"] = len(theirs) >= min(greedy, n) and (parted is None if quant == "f32" else all(w["near_tie"] for w in swaps))
    agree = f"the same {n} greedy tokens" if parted is None else f"the first {parted} of {n} greedy tokens agree"
    row["summary"] = agree + (" (tunesmith stopped there)" if n < greedy else "")
    if swaps:
        worst = max(swaps, key=lambda w: w["gap"])
        row["summary"] += (
            f"; fed the same tokens, {n - len(swaps)}/{n} positions pick the same, "
            + ("the other is" if len(swaps) == 1 else f"the {len(swaps)} others are")
            + (("" if len(swaps) > 1 else " a") + (" near ties" if len(swaps) > 1 else " near tie") if all(w["near_tie"] for w in swaps) else " NOT near ties")
            + f" (widest gap {worst['gap']:.3g} in tunesmith's logits, at position {worst['position']})"
        )
    rows["greedy"] = row

    import llama_cpp

    stops = stop_token_ids(loaded.model, tokenizer)
    not_eog = [i for i in stops if not llama_cpp.llama_vocab_is_eog(llm._model.vocab, i)]
    rows["stop tokens"] = {
        "passed": not not_eog,
        "summary": f"{len(stops) - len(not_eog)}/{len(stops)} of tunesmith's stop tokens end llama.cpp's generation"
        + (f" (not: {tokenizer.convert_ids_to_tokens(not_eog)})" if not_eog else ""),
    }
    passed = all(r["passed"] for r in rows.values())
    return {"quant": quant, "passed": passed, "file": str(Path(gguf_file)), "rows": rows}
