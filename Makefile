# rnnstream: two commands on a fresh machine.
#   make demo   train the sine forecaster, export it with a parity proof, stream it, plot it
#   make test   install what the tests need, run ruff and the whole test suite
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

.PHONY: demo test lint pytest bench js-deps clean install

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# train + export + runtime: what `make demo` needs
$(VENV)/.stamp-train: pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[train]"
	touch $@

# + test tools, the optional Spark integration (pyspark, pandas, pyarrow) and the server
# (httptools, grpcio, tritonclient)
$(VENV)/.stamp-test: $(VENV)/.stamp-train
	$(PIP) install --quiet -e ".[train,test,spark,serve]"
	touch $@

install: $(VENV)/.stamp-test

# onnxruntime-node's install script downloads CUDA files from outside the npm registry;
# ONNXRUNTIME_NODE_INSTALL=skip takes the CPU build that ships inside the package.
$(JSDIR)/node_modules/.stamp: $(JSDIR)/package-lock.json
	@if command -v npm >/dev/null; then \
	  cd $(JSDIR) && ONNXRUNTIME_NODE_INSTALL=skip npm ci --prefer-offline --no-audit --no-fund --loglevel=error \
	  && touch node_modules/.stamp; \
	else echo "npm not found: the JavaScript embedding test will be skipped (outside CI)"; fi

js-deps: $(JSDIR)/node_modules/.stamp

demo: $(VENV)/.stamp-train
	$(VENV)/bin/rnnstream demo --out $(OUT)

lint: $(VENV)/.stamp-test
	$(VENV)/bin/ruff check .

pytest: $(VENV)/.stamp-test js-deps
	$(PY) -m pytest -q

test: lint pytest

bench: $(VENV)/.stamp-test
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache .hypothesis $(JSDIR)/node_modules
