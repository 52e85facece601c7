# The two user commands: `make demo` and `make test`. Both install everything first (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# util-linux: prlimit + setpriv start the TeX/poppler tools of render jobs under their limits and uid
APT_PACKAGES := chromium chromium-driver util-linux
TEX_PACKAGES := texlive-latex-base texlive-latex-extra texlive-pictures poppler-utils
export XLA_PYTHON_CLIENT_PREALLOCATE ?= false

.PHONY: demo test test-all setup system-deps lint clean-venv

demo: setup
	$(PY) -m vinci_jax.launch --config configs/demo.py

test: setup
	$(PY) -m pytest -q

test-all: setup
	$(PY) -m pytest -q -m ''

lint: setup
	$(VENV)/bin/ruff check .

setup: system-deps $(STAMP)

# System packages: Debian's Chromium (driven by Playwright) and a slim TeX Live with poppler.
system-deps:
	@if command -v chromium >/dev/null && command -v pdflatex >/dev/null && command -v pdftoppm >/dev/null \
	    && command -v prlimit >/dev/null && command -v setpriv >/dev/null \
	    && kpsewhich standalone.cls >/dev/null && kpsewhich pgfplots.sty >/dev/null; then \
	  echo "system packages: present"; \
	else \
	  echo "system packages: installing (apt)"; \
	  apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES) && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(TEX_PACKAGES); \
	fi

# Python environment: the package (editable) with its dev extras. Re-runs only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
