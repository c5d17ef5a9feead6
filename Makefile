# xBD Diffusion Lab — `make run` sets up and opens the app, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: setup run test browser demo-scenes bench clean cogvlm2

# The virtual environment, rebuilt when the requirements change.
# daam is the DAAM authors' reference that tests/unit/test_attention_oracle.py checks our
# attention maps against. Its own pins (diffusers 0.21.2, transformers 4.30.2) conflict with
# ours, hence --no-deps (what it imports, matplotlib and spacy, is in requirements-dev.txt).
$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade -r requirements-dev.txt
	$(BIN)/pip install --no-deps daam==0.2.0
	touch $@

setup: $(BIN)/.installed

run: setup
	$(BIN)/python app.py $(ARGS)

# Debian's chromium drives the real-browser tests (Playwright's own download is not used).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "Installing chromium for the browser tests (apt-get)"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) apt-get install -y -qq chromium; }

test: setup browser
	$(BIN)/python -m pytest

# CogVLM2's own environment (.venv-cogvlm2): transformers 4.41 for its remote code, the
# app's PyTorch reused (see core/captions/envs.py). INT4=1 adds bitsandbytes (CUDA only).
cogvlm2: setup
	$(BIN)/python -m core.captions.envs create $(if $(INT4),--int4,)

demo-scenes: setup
	$(BIN)/python -m core demo-scenes --out assets/demo-scenes

bench: setup
	$(BIN)/python bench/bench_index.py
	$(BIN)/python bench/bench_scoring.py
	$(BIN)/python bench/bench_generate.py
	$(BIN)/python bench/bench_switch.py
	$(BIN)/python bench/bench_startup.py
	$(BIN)/python bench/bench_training.py
	$(BIN)/python bench/bench_distributed.py

gpu-check:
	$(BIN)/python bench/gpu_check.py

clean:
	rm -rf lab-work .pytest_cache
