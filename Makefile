# fiffdepth — two commands: `make reproduce` and `make test` (both install into .venv first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU install path: this pin takes the CPU wheel (a bare `torch` may pull a multi-GB CUDA build).
TORCH_SPEC ?= torch==2.13.0
# GPU install path: PyTorch's wheel index for your CUDA version, e.g.
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cu126 TORCH_SPEC=torch
TORCH_INDEX ?=
PRESET ?= tiny
OUT ?= outputs
PYTEST_ARGS ?=
# pytest-xdist workers (one per core: `auto`; 0 runs the tests in one process); files stay whole on a worker
TEST_WORKERS ?= auto
REPRO_ARGS ?=
DATA ?=
SEEDS ?= 1
LAB_DIR ?= notebooks
LAB_ARGS ?=

.PHONY: install test reproduce lab notebooks clean-outputs help

help:
	@echo "make reproduce   install, then run the embedded-default reproduction into $(OUT)/ (SEEDS=3: ablations over 3 seeds)"
	@echo "make test        install, then run the whole test suite"
	@echo "make lab         install, then JupyterLab on $(LAB_DIR)/ with this environment's kernel"
	@echo "make notebooks   sync each notebooks/NN_*.ipynb with its jupytext pair NN_*.py (edit either, then run this)"
	@echo "make install     create $(VENV) and install fiffdepth (idempotent, fast when nothing changed)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when the dependency list changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -e ".[dev,notebooks]"
	@touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

reproduce: install
	$(BIN)/python -m fiffdepth.reproduce --preset $(PRESET) --out $(OUT) --seeds $(SEEDS) $(if $(DATA),--data $(DATA)) $(REPRO_ARGS)

# The kernel is the venv's own python3 (JUPYTER_PREFER_ENV_PATH: before any user-level one), and
# kernels start in the repository root, as under `make reproduce`, so outputs/ and figures/ in the
# notebooks mean the same folders.
lab: install
	JUPYTER_PREFER_ENV_PATH=1 $(BIN)/jupyter lab --ServerApp.root_dir="$(LAB_DIR)" \
		--MappingKernelManager.root_dir="$(CURDIR)" $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# The notebooks are jupytext pairs: NN_name.py (py:percent, the reviewed source) and NN_name.ipynb.
# --sync brings the older file of each pair up to date with the newer one.
notebooks: install
	$(BIN)/jupytext --sync notebooks/[0-9][0-9]_*.py

clean-outputs:
	rm -rf $(OUT)
