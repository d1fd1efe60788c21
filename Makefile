# cheeger: two commands on a fresh machine, `make train` and `make test`.
# Both create .venv when it is missing and install torch first (TORCH), then the
# project with its dev extra, constrained to that torch so pip never swaps it.

PYTHON ?= python3
TORCH  ?= torch==2.13.0
# A wheel index for TORCH, e.g. https://download.pytorch.org/whl/cu126 (empty: pip's own).
TORCH_INDEX ?=
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=

export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= offline

.PHONY: test-gpu gpu-check install train test test-slow lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel
	$(BIN)/python -m pip install $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -c "import torch; print('torch', torch.__version__)" \
	  && $(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/constraints.txt
	$(BIN)/python -m pip install -c $(VENV)/constraints.txt -e ".[dev]"
	touch $(STAMP)

train: install
	$(BIN)/python -m cheeger.train $(ARGS)

test: install
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

# The tests parametrized by the `device` fixture (tests/conftest.py), on the accelerator
# present; stops with a message when there is none.
test-gpu: install
	@$(BIN)/python -c "import sys, torch; mps = getattr(torch.backends, 'mps', None); ok = torch.cuda.is_available() or (mps is not None and mps.is_available()); sys.exit(0 if ok else 'make test-gpu: no CUDA or MPS device here (torch ' + torch.__version__ + '); install a CUDA build: make clean && make install TORCH_INDEX=https://download.pytorch.org/whl/cu126')"
	$(BIN)/python -m pytest -q -m "not slow" -k "cuda or mps" $(ARGS)

# The prepared check of an accelerator (experiments/gpu_check.py): tests, benchmarks, bf16
# steps, a training run against the CPU; writes experiments/results/gpu_check.md.
gpu-check: install
	$(BIN)/python experiments/gpu_check.py $(ARGS)

test-slow: install
	$(BIN)/python -m pytest -q -m slow $(ARGS)

lint: install
	$(BIN)/ruff check cheeger tests experiments

bench: install
	$(BIN)/python experiments/bench_ops.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
