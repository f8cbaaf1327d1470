"""Threads × streams on one StreamPool: no cross-talk, no lost update, no deadlock.

Each thread owns a disjoint set of keys and drives them through random adds, removes, steps,
state round trips and file snapshots (while every other thread does the same to the shared
pool, including whole-pool ``save`` to its own file). Each thread keeps a sequential reference
per key (one Predictor per key, fed the same points); at the end every key's pool state must
equal its reference. Threads are joined with a timeout: one still alive is a deadlock.
"""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest

from rnnstream.runtime import Predictor, StreamPool

THREADS = 8
KEYS_PER_THREAD = 6
OPS_PER_THREAD = 400
ATOL = 1e-5  # batched (pool) and single (Predictor) runs differ in the last bits


def _worker(pool: StreamPool, path, tid: int, folder, failures: list, counts: list,
            finals: dict) -> None:
    rng = random.Random(tid)
    refs: dict[str, Predictor] = {}
    try:
        for op in range(OPS_PER_THREAD):
            kind = rng.choice(["step", "step", "step", "step_many", "add", "remove",
                               "roundtrip", "save"])
            live = list(refs)
            if kind == "add" or not live:
                key = f"t{tid}k{rng.randrange(KEYS_PER_THREAD)}"
                if key not in refs:
                    pool.add(key)
                    refs[key] = Predictor(path)
            elif kind == "remove":
                key = rng.choice(live)
                pool.remove(key)
                del refs[key]
            elif kind in ("step", "step_many"):
                keys = rng.sample(live, rng.randint(1, len(live)))
                xs = np.array([[rng.gauss(0, 30) for _ in range(3)] for _ in keys], np.float32)
                if kind == "step":
                    got = pool.step(dict(zip(keys, xs, strict=True)))
                    got = np.stack([got[k] for k in keys])
                else:
                    got = pool.step_many(keys, xs)
                want = np.stack([refs[k].step(x) for k, x in zip(keys, xs, strict=True)])
                np.testing.assert_allclose(got, want, atol=ATOL)
            elif kind == "roundtrip":
                key = rng.choice(live)
                state = pool.get_state(key)
                pool.set_state(key, state)  # must put back exactly what it read
            else:
                pool.save_state(folder / f"t{tid}.npz")
                other = StreamPool(path)
                other.load_state(folder / f"t{tid}.npz")  # a consistent snapshot of everything
                for k in refs:  # this thread's keys cannot move while it is saving
                    np.testing.assert_allclose(other.get_state(k)["h"],
                                               refs[k].get_state()["h"], atol=ATOL)
            counts[tid] = op + 1
        for k, p in refs.items():
            np.testing.assert_allclose(pool.get_state(k)["h"], p.get_state()["h"], atol=ATOL)
        finals[tid] = set(refs)
    except BaseException as exc:  # reported by the main thread
        failures.append((tid, repr(exc)))


@pytest.mark.slow
def test_threads_times_streams(models, tmp_path, figures):
    path = models["multi"].path
    pool = StreamPool(path, capacity=2)  # tiny: forces growth while threads run
    failures: list = []
    counts = [0] * THREADS
    finals: dict = {}
    threads = [threading.Thread(target=_worker, daemon=True,
                                args=(pool, path, t, tmp_path, failures, counts, finals))
               for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"deadlock or livelock: {alive} still running"
    assert not failures, failures
    figures("concurrency", threads=THREADS, ops=sum(counts),
            keys=THREADS * KEYS_PER_THREAD)
    assert sum(counts) == THREADS * OPS_PER_THREAD
    assert set(pool.keys()) == set().union(*finals.values())  # nothing lost, nothing extra
