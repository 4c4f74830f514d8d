# The two commands that set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kdx-installed
TORCH_VERSION := 2.13.0

.PHONY: demo test lint install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# torch first, pinned, so that no later requirement pulls a CUDA build from the registry.
$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[train,dev]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check kdx tests benchmarks

test: $(STAMP) lint
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(VENV)/bin/kdx demo

clean:
	rm -rf $(VENV) build *.egg-info
