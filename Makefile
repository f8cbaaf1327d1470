# rnnstream: two commands on a fresh machine.
#   make demo   train the sine forecaster, export it with a parity proof, stream it, plot it
#   make test   install what the tests need, run ruff, mypy, the docs site and the wheel build, and
#               the whole test suite
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
PKG_FILES := $(sort $(wildcard train/*.py export/*.py runtime/*.py cli/*.py spark/*.py serve/*.py */py.typed))
LINKED := $(VENV)/.stamp-linked-$(shell echo $(PKG_FILES) | cksum | cut -d' ' -f1)

WEBDIR := examples/web
CHROMIUM := /usr/bin/chromium

.PHONY: demo demo-image test lint typecheck pytest docs dist fuzz bench js-deps web-deps browser \
  web-screenshot clean install

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

# train + export + runtime: what `make demo` needs
$(VENV)/.stamp-train: pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet $(EDITABLE) -e ".[train]"
	touch $@

# + test tools, the optional Spark integration (pyspark, pandas, pyarrow) and the server
# (httptools, grpcio, tritonclient, uvloop)
$(VENV)/.stamp-test: $(VENV)/.stamp-train
	$(PIP) install --quiet $(EDITABLE) -e ".[train,test,spark,serve]"
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

# The web page's onnxruntime-web and the browser test's playwright-core (no install scripts
# that download anything: the wasm files ship inside the npm package).
$(WEBDIR)/node_modules/.stamp: $(WEBDIR)/package-lock.json
	@if command -v npm >/dev/null; then \
	  cd $(WEBDIR) && npm ci --prefer-offline --no-audit --no-fund --loglevel=error \
	  && touch node_modules/.stamp; \
	else echo "npm not found: the browser test will be skipped (outside CI)"; fi

web-deps: $(WEBDIR)/node_modules/.stamp

# Debian's Chromium for the browser test, where this machine allows installing it (root and
# apt-get); elsewhere the test is skipped with the reason, except under CI, where it fails.
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	else echo "$(CHROMIUM) is missing and apt-get is not usable here: the browser test will be skipped (outside CI)"; fi

demo: $(VENV)/.stamp-train $(LINKED)
	$(VENV)/bin/rnnstream demo --out $(OUT)

lint: $(VENV)/.stamp-test $(LINKED)
	$(VENV)/bin/ruff check .

# mypy over the installed packages (configured in pyproject.toml)
typecheck: $(VENV)/.stamp-test $(LINKED)
	$(VENV)/bin/mypy

pytest: $(VENV)/.stamp-test $(LINKED) js-deps web-deps browser
	$(PY) -m pytest -q

# the documentation site (mkdocs.yml, docs/): --strict makes every warning an error; built into
# a temporary folder and removed (nothing to commit). tests/docs/ runs the pages' code blocks.
docs: $(VENV)/.stamp-test
	@site=$$(mktemp -d) && $(VENV)/bin/mkdocs build --strict --quiet --site-dir $$site; \
	  rc=$$?; rm -rf $$site; exit $$rc

# the wheel and the sdist, as `pip install rnnstream` would get them, checked by twine; the wheel
# is built from the sdist, so a file missing from the sdist fails here. --no-isolation: the build
# requirements (setuptools) are in .venv already and no index is needed.
# tests/packaging/test_dist.py checks the wheel's file list.
dist: $(VENV)/.stamp-test
	@out=$$(mktemp -d) && $(PY) -m build --no-isolation --outdir $$out . >$$out/build.log 2>&1 \
	  || { cat $$out/build.log; rm -rf $$out; exit 1; }; \
	  $(VENV)/bin/twine check --strict $$out/*.whl $$out/*.tar.gz; rc=$$?; rm -rf $$out; exit $$rc

test: lint typecheck docs dist pytest

# coverage-guided fuzzing (atheris) of every reader of untrusted input, FUZZ_SECONDS each; the
# corpora in fuzz/corpus/ grow with what it finds; a finding is written to fuzz/findings/
FUZZ_SECONDS ?= 300
fuzz: $(VENV)/.stamp-test $(LINKED)
	mkdir -p fuzz/findings
	for h in grpc http http_wire line log model snapshot; do \
	  $(PY) fuzz/run.py $$h -max_total_time=$(FUZZ_SECONDS) -max_len=16384 \
	    -artifact_prefix=fuzz/findings/ fuzz/corpus/$$h || exit 1; done

# + what bench/quality.py needs (real series in pmdarima, statsmodels' ETS)
$(VENV)/.stamp-bench: $(VENV)/.stamp-test
	$(PIP) install --quiet $(EDITABLE) -e ".[train,test,spark,serve,bench]"
	touch $@

bench: $(VENV)/.stamp-bench $(LINKED) js-deps web-deps browser
	$(PY) bench/run_all.py

# the README's streaming plot: `make demo`'s streamed predictions with their 90 % interval
demo-image: $(VENV)/.stamp-train $(LINKED)
	$(VENV)/bin/rnnstream demo --out $(OUT) --no-progress
	cp $(OUT)/streaming.png docs/images/streaming.png

# the picture of the page in docs/contract.md: a trained sine model streamed in headless Chromium
web-screenshot: $(VENV)/.stamp-test web-deps browser
	$(PY) bench/bench_web.py --quick --screenshot docs/images/web.png

clean:
	rm -rf $(VENV) $(OUT) build .pytest_cache .ruff_cache .mypy_cache .hypothesis $(JSDIR)/node_modules \
	  $(WEBDIR)/node_modules
