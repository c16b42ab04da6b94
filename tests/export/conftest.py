"""Export fixtures: a tiny model with a small vocabulary, and Go's text/template compiled once per session."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

# Ollama executes a TEMPLATE with text/template over a value whose .Messages is []api.Message
# (Role, Content, ...); `missingkey=zero` is how Ollama parses templates too.
GO_RENDER = r"""
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type Values struct {
	Messages []Message
	System   string
	Prompt   string
	Response string
}

func main() {
	text, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var messages []Message
	if err := json.NewDecoder(os.Stdin).Decode(&messages); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	tmpl, err := template.New("").Option("missingkey=zero").Parse(string(text))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	if err := tmpl.Execute(os.Stdout, Values{Messages: messages}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(4)
	}
}
"""


@pytest.fixture(scope="session")
def go_render(tmp_path_factory):
    """render(template, messages) -> the text Go's text/template produces (the binary is built once)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("the Go toolchain (`go`, Debian's golang-go) is not on PATH: the TEMPLATE cannot be run through text/template")
    folder = tmp_path_factory.mktemp("go-render")
    (folder / "main.go").write_text(GO_RENDER)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(folder), "GOCACHE": str(folder / "cache"), "GO111MODULE": "off", "CGO_ENABLED": "0"}
    subprocess.run([go, "build", "-o", str(folder / "render"), str(folder / "main.go")], cwd=folder, env=env, check=True, capture_output=True, timeout=120)

    def render(template: str, messages: list[dict]) -> str:
        file = folder / "template.txt"
        file.write_text(template, encoding="utf-8")
        done = subprocess.run([str(folder / "render"), str(file)], input=json.dumps(messages).encode(), capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode("utf-8")

    return render


@pytest.fixture(scope="session")
def small_vocab_dir(tmp_path_factory, smol_tokenizer):
    """A 2-layer Llama with a ~400-token byte-level BPE (ChatML specials, SmolLM2's chat template), untied, padded vocab.

    The real 49k-token vocabulary costs ~6 s per GGUF parse on a small CPU, and transformers parses a
    file three times to load it; this one parses in milliseconds, so every quant type can be checked.
    Untied embeddings (an output.weight tensor) and 8 padding rows cover what the tiny SmolLM2 fixture does not.
    """
    import torch
    from families import TINY, small_bpe
    from tokenizers import pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM

    words = (
        "the capital of France is Paris; give me a tip for staying healthy: drink water, sleep well. "
        "Write one sentence about the sea, the waves and the wind. What is 12 + 30? It is 42. "
    ) * 4
    tokenizer = small_bpe(words, pre_tokenizers.ByteLevel(add_prefix_space=False), bos_token="<|im_start|>", pad_token="<|im_end|>")
    tokenizer.chat_template = smol_tokenizer.chat_template
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer) + 8,
        **TINY,  # tests/families.py: 2 layers, hidden 64, 4 heads, 2 kv heads
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    path = tmp_path_factory.mktemp("small-vocab-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)
