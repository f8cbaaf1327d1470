# rnnstream: two commands on a fresh machine.
#   make demo   train the sine forecaster, export it with a parity proof, stream it, plot it
#   make test   install what the tests need, run ruff and the test suite
# Both create .venv on first use. torch's CPU build is installed first, pinned: an unpinned
# torch on an empty environment resolves to a multi-GB CUDA build.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
OUT    ?= demo-out

.PHONY: demo test lint bench js clean install

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[train,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/rnnstream demo --out $(OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache .hypothesis examples/javascript/node_modules
