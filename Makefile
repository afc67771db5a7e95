# Two commands on a fresh machine: `make demo` and `make test`. Both create or reuse .venv and only
# reinstall when pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tac-installed
EXPLORE_STAMP := $(VENV)/.tac-explore-installed
DATASET ?=
MODEL ?=
PRETRAINED ?=
SOURCE ?=
# Passed to recipes through the environment and quoted there ("$$DATASET"), never pasted into the shell
# command line: a name holding quotes or ';' stays one plain argument.
VERBOSE ?=
export DATASET MODEL PRETRAINED SOURCE VERBOSE METHOD FORMAT TO APP_PORT
PORT ?= 3000
# The FiftyOne App of make explore.
APP_PORT ?= 5151
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install test lint demo cluster reproduce ui export explore

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The optional explore extra (FiftyOne, its database, umap-learn): make explore and the tests need it, the rest not.
$(EXPLORE_STAMP): $(STAMP)
	@echo "Installing the explore extra (FiftyOne, its database, umap-learn)..."
	$(PY) -m pip install --quiet -e '.[explore]'
	@touch $(EXPLORE_STAMP)

test: $(STAMP) $(EXPLORE_STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

$(DAGSTER_HOME):
	@mkdir -p $(DAGSTER_HOME)

# The commands replace the recipe's shell (exec), so a signal to make, or make's death, reaches them: a stopped
# make stops the command, and the command stops its run.
demo: $(STAMP) $(DAGSTER_HOME)
	exec $(PY) -m tac_pipeline.cli demo $(if $(MODEL),--model "$$MODEL") $(if $(PRETRAINED),--pretrained "$$PRETRAINED")

cluster: $(STAMP) $(DAGSTER_HOME)
	@test -n "$$DATASET" || { echo "usage: make cluster DATASET=<folder in data/drops> [REFIT=1] [MODEL=<open_clip model>]"; exit 2; }
	exec $(PY) -m tac_pipeline.cli cluster "$$DATASET" $(if $(filter-out 0,$(REFIT)),--refit) $(if $(MODEL),--model "$$MODEL") $(if $(PRETRAINED),--pretrained "$$PRETRAINED")

# A clustered drop as folders of hard links, a CSV or a Parquet table, with its names and metrics (docs/EXPLORE.md).
export: $(STAMP) $(DAGSTER_HOME)
	@test -n "$$DATASET" || { echo "usage: make export DATASET=<name> [METHOD=tac_image] [FORMAT=folders|csv|parquet] [TO=<folder>]"; exit 2; }
	exec $(PY) -m tac_pipeline.cli export "$$DATASET" $(if $(METHOD),--method "$$METHOD") $(if $(FORMAT),--format "$$FORMAT") $(if $(TO),--to "$$TO")

# One of the paper's datasets, prepared, clustered and compared with the paper (no DATASET: the list).
reproduce: $(STAMP) $(DAGSTER_HOME)
	exec $(PY) -m tac_pipeline.cli reproduce $(if $(DATASET),"$$DATASET") $(if $(SOURCE),--source "$$SOURCE") $(if $(MODEL),--model "$$MODEL") $(if $(PRETRAINED),--pretrained "$$PRETRAINED")

# The Dagster UI, on this machine only. First: the project's dagster.yaml in $(DAGSTER_HOME) (one run per
# dataset at a time, run monitoring) and runs whose process is gone reported failed.
ui: $(STAMP) $(DAGSTER_HOME)
	$(PY) -m tac_pipeline.runs
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p $(PORT) -w workspace.yaml

# The clustered drop in the FiftyOne App on 127.0.0.1:$(APP_PORT) (docs/EXPLORE.md); installs the explore extra
# (FiftyOne, its database, umap-learn) the first time.
explore: $(EXPLORE_STAMP) $(DAGSTER_HOME)
	@test -n "$$DATASET" || { echo "usage: make explore DATASET=<name> [APP_PORT=5151]"; exit 2; }
	exec $(PY) -m tac_pipeline.cli explore "$$DATASET" --port "$$APP_PORT"
