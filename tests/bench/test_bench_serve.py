"""bench/bench_serve.py: its in-process parts run against today's serve API (no server, no
sockets): a changed ModelService signature once left `make bench` failing unnoticed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "bench_serve.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_serve", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


@pytest.mark.parametrize("coverage", [None, 0.9])
def test_in_process_parts_run(bench, tmp_path, coverage):
    model, _ = bench.build_model(str(tmp_path))
    parts = bench.cpu_per_request(model, 20, coverage)
    assert parts.shape == (4,)  # median µs: parse, queue + step, answer, the pool alone
    assert np.isfinite(parts).all()
    assert (parts >= 0).all()
    assert bench.batch_inprocess(model, 8, 3, coverage) > 0
