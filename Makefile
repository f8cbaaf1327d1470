# rnnstream: two commands on a fresh machine.
#   make demo   train the sine forecaster, export it with a parity proof, stream it, plot it
#   make test   install what the tests need, run ruff, mypy and the whole test suite
#   make bench  run the benchmarks and print their tables
# Both create .venv on first use; second runs are quick (stamp files record what is installed).
# torch's CPU build is installed first, pinned: an unpinned torch on an empty environment
# resolves to a multi-GB CUDA build.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
TORCH  ?= torch==2.13.0
OUT    ?= demo-out
JSDIR  := examples/javascript
# Strict editable installs link every package file into build/__editable__.*/rnnstream/, a real
# package tree that mypy and editors follow (the default editable mode is an import hook they
# cannot see). A file added or removed needs a relink: the LINKED stamp is named after the list
# of package files, so a changed list relinks (a quick --no-deps install).
EDITABLE := --config-settings editable_mode=strict
PKG_FILES := $(sort $(wildcard train/*.py export/*.py runtime/*.py cli/*.py spark/*.py */py.typed))
LINKED := $(VENV)/.stamp-linked-$(shell echo $(PKG_FILES) | cksum | cut -d' ' -f1)

.PHONY: demo test lint typecheck pytest bench js-deps clean install

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# train + export + runtime: what `make demo` needs
$(VENV)/.stamp-train: pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet $(EDITABLE) -e ".[train]"
	touch $@

# + test tools and the optional Spark integration (pyspark, pandas, pyarrow)
$(VENV)/.stamp-test: $(VENV)/.stamp-train
	$(PIP) install --quiet $(EDITABLE) -e ".[train,test,spark]"
	touch $@

$(LINKED): $(VENV)/.stamp-train
	rm -f $(VENV)/.stamp-linked-*
	$(PIP) install --quiet --no-deps $(EDITABLE) -e .
	touch $@

install: $(VENV)/.stamp-test $(LINKED)

# onnxruntime-node's install script downloads CUDA files from outside the npm registry;
# ONNXRUNTIME_NODE_INSTALL=skip takes the CPU build that ships inside the package.
$(JSDIR)/node_modules/.stamp: $(JSDIR)/package-lock.json
	@if command -v npm >/dev/null; then \
	  cd $(JSDIR) && ONNXRUNTIME_NODE_INSTALL=skip npm ci --prefer-offline --no-audit --no-fund --loglevel=error \
	  && touch node_modules/.stamp; \
	else echo "npm not found: the JavaScript embedding test will be skipped (outside CI)"; fi

js-deps: $(JSDIR)/node_modules/.stamp

demo: $(VENV)/.stamp-train $(LINKED)
	$(VENV)/bin/rnnstream demo --out $(OUT)

lint: $(VENV)/.stamp-test $(LINKED)
	$(VENV)/bin/ruff check .

# mypy over the installed packages (configured in pyproject.toml)
typecheck: $(VENV)/.stamp-test $(LINKED)
	$(VENV)/bin/mypy

pytest: $(VENV)/.stamp-test $(LINKED) js-deps
	$(PY) -m pytest -q

test: lint typecheck pytest

# + what bench/quality.py needs (real series in pmdarima, statsmodels' ETS)
$(VENV)/.stamp-bench: $(VENV)/.stamp-test
	$(PIP) install --quiet $(EDITABLE) -e ".[train,test,spark,bench]"
	touch $@

bench: $(VENV)/.stamp-bench $(LINKED)
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) $(OUT) build .pytest_cache .ruff_cache .mypy_cache .hypothesis $(JSDIR)/node_modules
