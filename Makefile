PYTHON ?= python3
VENV := .venv
RUNTIME := .venv-runtime
LABEL_STUDIO := .venv-label-studio
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
export HF_HUB_OFFLINE := 1
# Python writes a module's .pyc when it first imports it; this CI sets PYTHONDONTWRITEBYTECODE, which would
# have every process compile torch anew. With it cleared, pip need not compile every installed file up front.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: install test demo docs test-label-studio

install: $(STAMP)

# -qq: errors only (pip's build backend otherwise prints setuptools' notes on editable installs).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq --no-compile torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -qq --no-compile -e '.[train,dev,ray,review,sweep,serve]'
	touch $(STAMP)

# The runtime without torch, in a virtualenv of its own: the tests run infer.py and the service in it
# (RUNTIME_PYTHON), and fail if torch is imported there.
$(RUNTIME)/.installed: pyproject.toml
	test -x $(RUNTIME)/bin/python || $(PYTHON) -m venv $(RUNTIME)
	$(RUNTIME)/bin/python -m pip install -qq --no-compile -e '.[runtime,serve]'
	touch $(RUNTIME)/.installed

# The Label Studio server, in a virtualenv of its own: it pins numpy, pyarrow and pytz, and brings 118
# packages (Django among them) that nothing else needs.
$(LABEL_STUDIO)/bin/label-studio:
	$(PYTHON) -m venv $(LABEL_STUDIO)
	$(LABEL_STUDIO)/bin/python -m pip install -qq --no-compile label-studio==1.23.2

# Lint and format (ruff, configured in pyproject.toml), the documentation built strictly (a broken link or a page
# missing from the navigation fails; the second build says why), then two pytest workers, each taking whole test files
# (their module fixtures, e.g. the Ray cluster, stay in one), slowest first (tests/conftest.py orders them).
test: install $(RUNTIME)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet --site-dir $(VENV)/site-check \
		|| NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir $(VENV)/site-check
	RUNTIME_PYTHON=$(RUNTIME)/bin/python $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# The review loop against a real Label Studio server (its first start migrates a fresh database: over a minute).
test-label-studio: install $(LABEL_STUDIO)/bin/label-studio
	LABEL_STUDIO_BIN=$(LABEL_STUDIO)/bin/label-studio $(PY) -m pytest -q -m label_studio

# Check the demo archive, train on it, then predict its test archive and explain its 20 least confident records.
demo: install
	$(PY) -m pipeline.doctor data/demo/train --label-column category --label-column sentiment --label-column severity
	mkdir -p runs
	$(PY) train.py fit --config configs/demo.yaml | tee runs/demo-train.log
	$(PY) infer.py --checkpoint "$$(sed -n 's/^run: //p' runs/demo-train.log | tail -n 1)" \
		--input data/demo/test --output runs/demo-predictions.jsonl --overwrite --evaluate \
		--explain runs/demo-explanations --explain-limit 20

# The documentation site (MkDocs, Material theme) into site/; the reference pages come from the commands' --help.
docs: install
	$(PY) docs/generate_reference.py
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site
