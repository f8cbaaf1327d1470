"""Soak: a million steps neither leak memory nor drift from a fresh full-sequence run.

Resident memory is read from /proc/self/statm after a warm-up (every buffer, arena and
onnxruntime allocation made), and again at the end; growth must stay under 5 MiB. At checkpoints
the streamed state and prediction are compared with ``prime`` over the same whole history in
one call (a different code path: one long sequence through the graph), atol 1e-5.
"""

from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest

from rnnstream.runtime import Predictor, StreamPool

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MIB = 1 << 20
ATOL = 1e-5
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]


def rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _inputs(model, n: int, seed: int, shape=()) -> np.ndarray:
    mean, std = model.model.x_mean.numpy(), model.model.x_std.numpy()
    rng = np.random.default_rng(seed)
    return (mean + std * rng.standard_normal((*shape, n, mean.size))).astype(np.float32)


def _drift(path, history: np.ndarray, state, y_last) -> float:
    """Max |difference| between a streamed state/prediction and prime over the history."""
    fresh = Predictor(path)
    ys = fresh.prime(history)
    ref = fresh.get_state()
    diffs = [np.abs(state[n] - ref[n]).max() for n in ref]
    diffs.append(np.abs(np.asarray(y_last) - np.asarray(ys[-1])).max())
    return float(max(diffs))


def test_million_predictor_steps(models, figures):
    model = models["uni"]
    steps, block = 1_000_000, 10_000
    xs = _inputs(model, steps, 21)[:, 0]
    checkpoints = {10_000, 100_000, steps}
    p = Predictor(model.path)
    for x in xs[:block].tolist():  # warm-up
        y = p.step(x)
    seen = {block: (p.get_state(), y)}  # steps -> (state, prediction), compared at the end
    base = rss()
    for start in range(block, steps, block):
        for x in xs[start:start + block].tolist():
            y = p.step(x)
        if start + block in checkpoints:
            seen[start + block] = (p.get_state(), y)
    growth = rss() - base
    drift = max(_drift(model.path, xs[:n], *seen[n]) for n in sorted(seen))
    figures("soak.predictor", steps=steps, rss_growth_kib=growth // 1024, max_drift=drift,
            checkpoints=sorted(seen))
    assert drift < ATOL, f"the streamed state drifted by {drift} from a full-sequence run"
    assert growth < 5 * MIB, f"resident memory grew by {growth / MIB:.2f} MiB"


def test_pool_of_thousand_streams_million_stream_steps(models, figures):
    model = models["multi"]
    streams, calls = 1000, 1000
    values = _inputs(model, streams, 22, shape=(calls,))  # [calls, streams, F]
    pool = StreamPool(model.path, capacity=streams)
    keys = [f"s{i}" for i in range(streams)]
    for k in keys:
        pool.add(k)
    warm = 50
    for t in range(warm):
        y = pool.step_many(keys, values[t])
    base = rss()
    for t in range(warm, calls):
        y = pool.step_many(keys, values[t])
    growth = rss() - base
    drift = max(_drift(model.path, values[:, i], pool.get_state(keys[i]), y[i])
                for i in (0, 499, 999))
    figures("soak.pool", streams=streams, calls=calls, stream_steps=streams * calls,
            rss_growth_kib=growth // 1024, max_drift=drift)
    assert drift < ATOL
    assert growth < 5 * MIB, f"resident memory grew by {growth / MIB:.2f} MiB"
