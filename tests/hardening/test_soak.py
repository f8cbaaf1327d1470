"""Soak: a million steps neither leak memory nor drift from a fresh full-sequence run.

Each soak runs in a process of its own (``_soak_child.py``): resident memory is a property of
the whole process, and inside pytest's it also counts what earlier tests left behind. The child
reads /proc/self/statm after a warm-up (every buffer, arena and onnxruntime allocation made)
and after each block; growth from the warm-up to the end must stay under 5 MiB (about 5 bytes a
step). The growth over the second half is reported beside it: a leak goes on with the steps,
a one-off arena extension (about 0.6 MiB, seen once, at varying steps) does not. At
checkpoints the streamed state and prediction are compared with ``prime`` over the same whole
history in one call (a different code path: one long sequence through the graph), atol 1e-5.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
MIB = 1 << 20
ATOL = 1e-5
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def _inputs(model, n: int, seed: int, shape=()) -> np.ndarray:
    mean, std = model.model.x_mean.numpy(), model.model.x_std.numpy()
    rng = np.random.default_rng(seed)
    return (mean + std * rng.standard_normal((*shape, n, mean.size))).astype(np.float32)


def _soak(kind: str, model, values: np.ndarray, tmp_path) -> dict:
    inputs = tmp_path / f"{kind}.npy"
    np.save(inputs, values)
    out = subprocess.run([sys.executable, "-W", "error", str(HERE / "_soak_child.py"), kind,
                          str(model.path), str(inputs)], capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check_memory(sizes: list[int]) -> tuple[int, int]:
    """(growth over the whole run, growth over its second half), in bytes."""
    growth = sizes[-1] - sizes[0]
    late = sizes[-1] - sizes[len(sizes) // 2]
    assert growth < 5 * MIB, (f"resident memory grew by {growth / MIB:.2f} MiB "
                              f"({late / MIB:.2f} MiB over the second half)")
    return growth, late


def test_million_predictor_steps(models, figures, tmp_path):
    model = models["uni"]
    steps = 1_000_000
    xs = _inputs(model, steps, 21)[:, 0]
    res = _soak("predictor", model, xs, tmp_path)
    drift = res["drift"]
    assert drift < ATOL, f"the streamed state drifted by {drift} from a full-sequence run"
    growth, late = _check_memory(res["rss"])
    figures("soak.predictor", steps=steps, rss_growth_kib=growth // 1024,
            late_growth_kib=late // 1024, max_drift=drift, checkpoints=res["checkpoints"])


def test_pool_of_thousand_streams_million_stream_steps(models, figures, tmp_path):
    model = models["multi"]
    streams, calls = 1000, 1000
    values = _inputs(model, streams, 22, shape=(calls,))  # [calls, streams, F]
    res = _soak("pool", model, values, tmp_path)
    drift = res["drift"]
    assert drift < ATOL
    growth, late = _check_memory(res["rss"])
    figures("soak.pool", streams=streams, calls=calls, stream_steps=streams * calls,
            rss_growth_kib=growth // 1024, late_growth_kib=late // 1024, max_drift=drift)
