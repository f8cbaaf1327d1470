"""StreamPool(threads=N): the same bits as one thread, all-or-nothing across threads, no leaks."""

from __future__ import annotations

import gc
import itertools
import os
import threading

import numpy as np
import pytest

from rnnstream.runtime import InferenceError, StreamPool
from rnnstream.runtime import pool as pool_module
from rnnstream.runtime._shards import Workers, default_threads, shards

# sizes seen once (run() per piece) and again (bound plans); 1 and 3 stay on one thread
SIZES = [1, 3, 8, 17, 40, 17, 40, 8, 3, 1, 40]


@pytest.fixture
def tiny_thresholds(monkeypatch):
    """4-row pieces, and a thread for every 4 rows: small batches cross every threshold."""
    monkeypatch.setattr(pool_module, "CHUNK_GATE_FLOATS", 1)
    monkeypatch.setattr(pool_module, "MIN_CHUNK_ROWS", 4)
    monkeypatch.setattr(pool_module, "parallel_rows", lambda contract: 4)


@pytest.fixture(params=[("lstm", 2), ("gru", 1)], ids=["lstm-L2", "gru-L1"])
def model(request, model_file):
    cell, layers = request.param
    return model_file(cell=cell, features=2, targets=1, hidden=8, layers=layers, seed=11)[0]


def _pools(path, counts, streams=40):
    pools = {n: StreamPool(path, threads=n) for n in counts}
    for p in pools.values():
        for k in range(streams):
            p.add(k)
    return pools


def _bytes(pool, keys):
    return [pool.get_state(k)[name].tobytes() for k in keys for name in ("h", "c")
            if name in pool.get_state(k).tensors]


def test_every_thread_count_gives_the_bits_of_one(model, tiny_thresholds):
    pools = _pools(model, (1, 2, 3, 5))
    assert pools[5]._runner.groups(40)
    assert len(pools[5]._runner.groups(40)) == 5
    rng = np.random.default_rng(0)
    keys = list(range(40))
    for t, n in enumerate(SIZES * 2):
        # every stream in order (ping-pong), a prefix in order (rows read in place), shuffled
        chosen = keys[:n] if t % 3 else [int(k) for k in rng.permutation(40)[:n]]
        x = rng.normal(size=(n, 2)).astype(np.float32)
        ys = {c: p.step_many(chosen, x) for c, p in pools.items()}
        for c in (2, 3, 5):
            assert ys[c].tobytes() == ys[1].tobytes(), (c, n)
    for c in (2, 3, 5):
        assert _bytes(pools[c], keys) == _bytes(pools[1], keys)
        pools[c].close()


def test_large_batches_use_the_threads_small_ones_do_not(model, tiny_thresholds):
    before = threading.active_count()
    with StreamPool(model, threads=3) as pool:
        for k in range(40):
            pool.add(k)
        pool.step_many([0, 1, 2], np.zeros((3, 2), np.float32))  # under 2 x 4 rows: no hop
        assert threading.active_count() == before
        assert pool._workers.alive == 0
        pool.step_many(list(range(40)), np.zeros((40, 2), np.float32))
        assert threading.active_count() == before + 2
        assert pool.threads == 3
    assert threading.active_count() == before
    assert pool.threads == 1  # closed: later steps run on the caller alone


def _failing_off_the_caller(run):
    caller = threading.get_ident()

    def wrapped(*args, **kwargs):
        if threading.get_ident() != caller:
            raise RuntimeError("injected failure on a worker thread")
        return run(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("which", ["all-in-order", "prefix-in-order", "shuffled"])
def test_a_failure_on_one_thread_leaves_every_state_as_it_was(model, tiny_thresholds,
                                                              monkeypatch, which):
    pool = StreamPool(model, threads=3)
    keys = list(range(40))
    for k in keys:
        pool.add(k)
    x = np.random.default_rng(2).normal(size=(40, 2)).astype(np.float32)
    pool.step_many(keys, x)
    pool.step_many(keys, x)  # a non-zero state, swapped once each way
    chosen = {"all-in-order": keys, "prefix-in-order": keys[:24],
              "shuffled": keys[::-1]}[which]
    before = _bytes(pool, keys)
    session = pool._engine.step_session or pool._engine.session
    monkeypatch.setattr(session, "run", _failing_off_the_caller(session.run))
    monkeypatch.setattr(session, "run_with_iobinding",
                        _failing_off_the_caller(session.run_with_iobinding))
    pool._runner._plans.clear()  # plans bound before the patch call the real method
    for _ in range(3):  # first sighting: run(); then bound buffers
        with pytest.raises(InferenceError, match="injected failure on a worker thread"):
            pool.step_many(chosen, x[:len(chosen)])
        assert _bytes(pool, keys) == before
    assert len(chosen) in pool._runner._plans
    monkeypatch.undo()
    pool._runner._plans.clear()
    pool.close()


def test_close_is_idempotent_and_the_pool_goes_on_on_one_thread(model, tiny_thresholds):
    before = threading.active_count()
    ref = _pools(model, (1,))[1]
    pool = StreamPool(model, threads=2)
    for k in range(40):
        pool.add(k)
    x = np.ones((40, 2), np.float32)
    pool.step_many(list(range(40)), x)
    ref.step_many(list(range(40)), x)
    pool.close()
    pool.close()
    assert threading.active_count() == before
    y = pool.step_many(list(range(40)), x)
    assert threading.active_count() == before
    assert y.tobytes() == ref.step_many(list(range(40)), x).tobytes()


def test_a_pool_collected_unclosed_stops_its_threads(model, tiny_thresholds):
    before = threading.active_count()
    pool = StreamPool(model, threads=4)
    for k in range(40):
        pool.add(k)
    pool.step_many(list(range(40)), np.ones((40, 2), np.float32))
    assert threading.active_count() == before + 3
    del pool
    gc.collect()
    assert threading.active_count() == before


def test_threads_argument(model):
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads="):
            StreamPool(model, threads=bad)
    assert StreamPool(model).threads == default_threads(pool_module.MAX_THREADS)
    assert 1 <= default_threads(pool_module.MAX_THREADS) <= len(os.sched_getaffinity(0))
    assert default_threads(1) == 1


@pytest.mark.parametrize(("n", "chunk", "threads", "min_rows"), [
    (1, 4, 2, 4), (7, 4, 2, 4), (8, 4, 2, 4), (9, 4, 2, 4), (100, 7, 3, 4), (4096, 1024, 2, 512),
    (4097, 1024, 16, 256), (1024, 256, 2, 64), (50, 1000, 8, 1)])
def test_shards_are_contiguous_balanced_and_bounded(n, chunk, threads, min_rows):
    groups = shards(n, chunk, threads, min_rows)
    assert 1 <= len(groups) <= threads
    assert len(groups) == 1 or all(sum(j - i for i, j in g) >= min_rows for g in groups)
    pieces = [p for g in groups for p in g]
    assert pieces[0][0] == 0
    assert pieces[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    assert all(0 < j - i <= chunk for i, j in pieces)
    sizes = [sum(j - i for i, j in g) for g in groups]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(("n", "threads", "lead"), [(4096, 2, 92), (1024, 2, 4), (100, 3, 9),
                                                    (10, 2, 50), (4097, 8, 92)])
def test_the_callers_block_leads_by_the_hand_off(n, threads, lead):
    groups = shards(n, 1024, threads, 1, lead)
    sizes = [sum(j - i for i, j in g) for g in groups]
    assert sum(sizes) == n
    assert groups[0][0][0] == 0
    assert groups[-1][-1][1] == n
    workers = sizes[1:]
    assert max(workers) - min(workers) <= 1
    assert sizes[0] - max(workers) <= min(lead, n // threads) + 1
    assert sizes[0] - min(workers) >= min(lead, n // threads) - 1


def test_workers_raise_the_first_failure_after_every_task_returned():
    done = []

    def ok(i):
        return lambda: done.append(i)

    def bad():
        raise KeyError("boom")

    workers = Workers(3)
    with pytest.raises(KeyError, match="boom"):
        workers.run([ok(0), bad, ok(2)])
    assert sorted(done) == [0, 2]
    workers.run([ok(3), ok(4), ok(5)])
    assert sorted(done) == [0, 2, 3, 4, 5]
    workers.close()
    assert workers.alive == 0
