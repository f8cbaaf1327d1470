"""Run one soak in a process of its own (run as a script) and print one JSON line.

    python _soak_child.py predictor MODEL INPUTS.npy
    python _soak_child.py pool MODEL INPUTS.npy

Resident memory is a property of the whole process. Measured inside pytest's process it also
counts whatever earlier tests left running (threads, arenas, sessions), which once put 6 MiB of
somebody else's allocations on this soak. Here the process holds only numpy, the runtime and
this loop. ``rss`` lists resident memory (bytes) after the warm-up and after each block, so the
test can tell a leak (growth that goes on with the steps) from a one-off allocation.
"""

from __future__ import annotations

import gc
import json
import os
import sys

import numpy as np

from rnnstream.runtime import Predictor, StreamPool

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def drift(path: str, history: np.ndarray, state, y_last) -> float:
    """Max |difference| between a streamed state/prediction and prime over the history."""
    fresh = Predictor(path)
    ys = fresh.prime(history)
    ref = fresh.get_state()
    diffs = [float(np.abs(state[n] - ref[n]).max()) for n in ref]
    diffs.append(float(np.abs(np.asarray(y_last) - np.asarray(ys[-1])).max()))
    return max(diffs)


def predictor(path: str, xs: np.ndarray) -> dict:
    """xs: [steps] of a one-feature model, stepped with plain floats, 10,000 at a time."""
    steps, block = xs.shape[0], 10_000
    checkpoints = {10_000, 100_000, steps}
    p = Predictor(path)
    values = xs.tolist()
    for x in values[:block]:  # warm-up
        y = p.step(x)
    seen = {block: (p.get_state(), y)}
    sizes = [rss()]
    for start in range(block, steps, block):
        for x in values[start:start + block]:
            y = p.step(x)
        if start + block in checkpoints:
            seen[start + block] = (p.get_state(), y)
        sizes.append(rss())
    worst = max(drift(path, xs[:n, None], *seen[n]) for n in sorted(seen))
    return {"rss": sizes, "drift": worst, "checkpoints": sorted(seen)}


def pool(path: str, values: np.ndarray) -> dict:
    """values: [calls, streams, F], one step_many over every stream per call."""
    calls, streams = values.shape[:2]
    p = StreamPool(path, capacity=streams)
    keys = [f"s{i}" for i in range(streams)]
    for k in keys:
        p.add(k)
    warm = 50
    for t in range(warm):
        y = p.step_many(keys, values[t])
    sizes = [rss()]
    for t in range(warm, calls):
        y = p.step_many(keys, values[t])
        if (t + 1) % 50 == 0:
            sizes.append(rss())
    worst = max(drift(path, values[:, i], p.get_state(keys[i]), y[i]) for i in (0, 499, 999))
    return {"rss": sizes, "drift": worst}


if __name__ == "__main__":
    kind, model, inputs = sys.argv[1:4]
    run = {"predictor": predictor, "pool": pool}[kind]
    print(json.dumps(run(model, np.load(inputs))))
