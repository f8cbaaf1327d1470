"""Fixtures for the embedding tests (helpers live in ``_support``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ._support import (
    CASES,
    CHROMIUM,
    WEB_DIR,
    Case,
    export,
    install_js_deps,
    install_npm_deps,
    make_forecaster,
    missing_tool,
)


@pytest.fixture(scope="session", params=CASES, ids=lambda c: c.id)
def exported(request, tmp_path_factory) -> tuple[Case, Path]:
    """(case, path of model.onnx with its sidecar model.onnx.json), once per session."""
    case = request.param
    folder = tmp_path_factory.mktemp(case.id)
    return case, export(make_forecaster(case), folder / "model.onnx")


@pytest.fixture(scope="session")
def rnn_model(tmp_path_factory) -> Path:
    """The one-feature model of CASES[0] (feature "sensor_0"), for tests of messages."""
    folder = tmp_path_factory.mktemp("rnn")
    return export(make_forecaster(CASES[0]), folder / "model.onnx")


@pytest.fixture(scope="session")
def node() -> str:
    """Path of ``node``, with the example's dependencies installed."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        missing_tool("node and npm are needed for the JavaScript embedding test "
                     "(install Node.js >= 20.19)")
    install_js_deps()
    return node


@pytest.fixture(scope="session")
def browser() -> str:
    """Path of ``node``, with examples/web's packages installed and Chromium present."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        missing_tool("node and npm are needed for the browser tests (install Node.js >= 20.19)")
    if not CHROMIUM.exists():
        missing_tool(f"{CHROMIUM} is needed for the browser tests: apt-get install chromium "
                     "(make test does it where apt-get is allowed)")
    install_npm_deps(WEB_DIR, "playwright-core")
    return node
