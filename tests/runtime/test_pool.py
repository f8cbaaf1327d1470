"""StreamPool numbers: batched steps equal independent Predictors and torch."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from rnnstream.runtime import InputError, Predictor, StreamKeyError, StreamPool


def test_pool_batch_equals_torch(model_file, torch_run):
    path, model = model_file(cell="gru", features=2, targets=1, hidden=16, layers=2, seed=5)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(5, 12, 2)).astype(np.float32)
    y_ref, s_ref = torch_run(model, xs)
    pool = StreamPool(path, capacity=2)
    for k in range(5):
        pool.add(k)
    ys = np.stack([pool.step_many(list(range(5)), xs[:, t]) for t in range(12)], axis=1)
    np.testing.assert_allclose(ys, y_ref, atol=1e-5)
    for k in range(5):
        np.testing.assert_allclose(pool.get_state(k)["h"], s_ref[0][k], atol=1e-5)


def test_interleaved_arrivals_equal_independent_predictors(lstm):
    path, _ = lstm
    rng = np.random.default_rng(1)
    keys = [f"s{i}" for i in range(7)]
    pool = StreamPool(path, auto_add=True, capacity=1)
    solo = {k: Predictor(path) for k in keys}
    for t in range(40):
        chosen = [k for k in keys if rng.random() < 0.5] or [keys[t % 7]]
        rng.shuffle(chosen)
        points = {k: float(rng.normal()) for k in chosen}
        if t % 2:
            got = pool.step(points)
        else:
            arr = pool.step_many(list(points), np.array(list(points.values()), np.float32))
            got = dict(zip(points, arr[:, 0].tolist(), strict=True))
        for k, v in points.items():
            assert got[k] == pytest.approx(solo[k].step(v), abs=1e-6)
        if t == 20:  # removal moves the last row; the others must not notice
            pool.remove("s3")
            solo["s3"].reset()
            pool.add("s3")
    for k in keys:
        np.testing.assert_allclose(pool.get_state(k)["c"], solo[k].get_state()["c"], atol=1e-6)


def test_membership(lstm):
    pool = StreamPool(lstm[0])
    pool.add("a")
    pool.add(7)
    assert "a" in pool
    assert 7 in pool
    assert "b" not in pool
    assert len(pool) == 2
    assert sorted(map(str, pool.keys())) == ["7", "a"]
    with pytest.raises(StreamKeyError, match="already exists"):
        pool.add("a")
    pool.step({"a": 1.0})
    pool.reset("a")
    np.testing.assert_array_equal(pool.get_state("a")["h"], np.zeros((1, 8), np.float32))
    pool.remove("a")
    assert "a" not in pool
    assert len(pool) == 1
    with pytest.raises(StreamKeyError, match="unknown stream 'a'"):
        pool.remove("a")


def test_bad_steps_change_nothing(lstm):
    pool = StreamPool(lstm[0])
    for k in "abc":
        pool.add(k)
    pool.step({"a": 0.5, "b": 0.1, "c": -0.3})
    before = {k: pool.get_state(k) for k in "abc"}
    cases = [
        (StreamKeyError, "unknown stream key 'zz'", lambda: pool.step({"a": 1.0, "zz": 1.0})),
        (StreamKeyError, "duplicate stream key 'a'",
         lambda: pool.step_many(["a", "b", "a"], np.ones((3, 1), np.float32))),
        (InputError, "stream 'b'.*non-finite", lambda: pool.step({"a": 1.0, "b": float("nan")})),
        (InputError, "stream 'a'", lambda: pool.step({"a": "x"})),
        (InputError, "3 keys but 2 rows", lambda: pool.step_many(list("abc"), [[1.0], [2.0]])),
        (InputError, "expected \\[count, 1\\]", lambda: pool.step_many(["a"], np.ones((1, 2)))),
        (InputError, "non-finite", lambda: pool.step_many(["a"], np.array([[np.inf]], np.float32))),
        (InputError, "no points", lambda: pool.step({})),
    ]
    for exc, match, call in cases:
        with pytest.raises(exc, match=match):
            call()
    assert len(pool) == 3
    for k in "abc":
        for name in ("h", "c"):
            np.testing.assert_array_equal(pool.get_state(k)[name], before[k][name])


def test_auto_add_and_eviction_with_injected_clock(lstm):
    now = [100.0]
    pool = StreamPool(lstm[0], auto_add=True, idle_timeout_s=10, clock=lambda: now[0])
    pool.step({"a": 1.0, "b": 1.0})
    now[0] += 6
    pool.step({"a": 1.0})
    now[0] += 6  # b idle for 12 s, a for 6 s
    assert pool.evict_idle() == ["b"]
    assert pool.keys() == ["a"]
    now[0] += 11
    pool.step({"c": 2.0})  # sweeping during a step evicts "a"
    assert pool.keys() == ["c"]


def test_an_owner_that_sweeps_itself_spares_keys_and_keeps_the_one_clock(lstm):
    """auto_evict=False: steps never evict; evict_idle(spare=...) leaves the spared keys
    (any container); the clock is read after each step that advanced a stream, at add, by
    touch(); a refused step touches nothing."""
    now = [100.0]
    pool = StreamPool(lstm[0], idle_timeout_s=10, clock=lambda: now[0], auto_evict=False)
    for key in "abcd":
        pool.add(key)
    assert pool.last_seen("a") == 100.0
    now[0] += 5
    pool.step({"a": 1.0})
    assert pool.last_seen("a") == 105.0
    now[0] += 1
    with pytest.raises(InputError):
        pool.step({"b": float("nan")})
    assert pool.last_seen("b") == 100.0
    pool.touch(["c"], at=103.0)
    assert pool.last_seen("c") == 103.0
    now[0] += 5  # 111: b, d idle 11 s; c 8 s; a 6 s
    pool.step({"a": 1.0})  # no sweep during steps
    assert sorted(pool.keys()) == list("abcd")

    class Busy:
        def __contains__(self, key: object) -> bool:
            return key == "d"

    assert pool.evict_idle(spare=Busy()) == ["b"]
    assert sorted(pool.keys()) == ["a", "c", "d"]
    now[0] += 100
    assert sorted(pool.evict_idle(spare={"a"})) == ["c", "d"]
    pool.touch()  # every stream, now
    assert pool.last_seen("a") == now[0]
    assert pool.evict_idle() == []
    with pytest.raises(StreamKeyError, match="unknown stream 'zz'"):
        pool.touch(["a", "zz"], at=0.0)  # checked whole: "a" keeps its time
    assert pool.last_seen("a") == now[0]
    for bad in (math.nan, math.inf, "5", True):
        with pytest.raises(InputError, match=r"touch\(at=.*\): expected a finite clock"):
            pool.touch(["a"], at=bad)
    assert pool.last_seen("a") == now[0]


def test_no_idle_timeout_never_evicts(lstm):
    now = [0.0]
    pool = StreamPool(lstm[0], auto_add=True, clock=lambda: now[0])
    pool.step({"a": 1.0})
    now[0] += 1e9
    pool.step({"b": 1.0})
    assert pool.evict_idle() == []
    assert pool.keys() == ["a", "b"]


def test_threads_never_cross_talk(lstm):
    path, _ = lstm
    pool = StreamPool(path, auto_add=True)
    rng = np.random.default_rng(3)
    n_threads, per_thread, steps = 4, 5, 60
    data = rng.normal(size=(n_threads, per_thread, steps)).astype(np.float32)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            keys = [f"t{t}k{i}" for i in range(per_thread)]
            for s in range(steps):
                if s % 3 == 0:
                    pool.step({k: float(data[t, i, s]) for i, k in enumerate(keys)})
                else:
                    for i, k in enumerate(keys):
                        pool.step_many([k], data[t, i, s].reshape(1, 1))
        except BaseException as exc:  # reported below; a thread cannot raise into pytest
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for t in range(n_threads):
        for i in range(per_thread):
            ref = Predictor(path)
            ref.prime(data[t, i])
            got = pool.get_state(f"t{t}k{i}")
            np.testing.assert_allclose(got["h"], ref.get_state()["h"], atol=1e-5)


def test_pool_snapshot_round_trip(lstm, tmp_path):
    pool = StreamPool(lstm[0], auto_add=True)
    pool.step({"a": 0.1, 2: 0.5})
    pool.save_state(tmp_path / "pool.npz")
    y_next = pool.step({"a": 0.3, 2: -0.1})
    fresh = StreamPool(lstm[0])
    fresh.load_state(tmp_path / "pool.npz")
    assert sorted(map(str, fresh.keys())) == ["2", "a"]
    assert fresh.step({"a": 0.3, 2: -0.1}) == y_next
    s = pool.get_state("a")
    fresh.set_state(2, s)
    np.testing.assert_array_equal(fresh.get_state(2)["h"], s["h"])


def test_pool_states_the_same_facts_as_a_predictor(model_file):
    path, _ = model_file(cell="gru", features=3, targets=2, hidden=8, seed=6)
    pool, p = StreamPool(path), Predictor(path)
    for fact in ("path", "contract", "features", "targets", "fingerprint", "state_pairs",
                 "uses_step_graph", "pairing"):
        assert getattr(pool, fact) == getattr(p, fact), fact
    assert pool.features == ["f0", "f1", "f2"]


def test_names_deprecated_in_0_3_are_gone(lstm):
    """max_idle_seconds=, save() and load() warned for one release (0.3) and are removed."""
    with pytest.raises(TypeError, match="max_idle_seconds"):
        StreamPool(lstm[0], max_idle_seconds=5)  # type: ignore[call-arg]
    pool = StreamPool(lstm[0])
    for old in ("save", "load", "max_idle_seconds"):
        assert not hasattr(pool, old), old


def test_bad_settings_are_config_errors(lstm):
    from rnnstream.runtime import ConfigError

    with pytest.raises(ConfigError, match="threads=0"):
        StreamPool(lstm[0], threads=0)
    with pytest.raises(ConfigError, match="idle_timeout_s=-1"):
        StreamPool(lstm[0], idle_timeout_s=-1)


def test_failed_call_forgets_the_streams_it_auto_added(lstm, monkeypatch):
    """onnxruntime failing mid-call: streams the call added for its new keys are gone again,
    and the existing ones keep their state bit for bit."""
    from rnnstream.runtime import InferenceError

    pool = StreamPool(lstm[0], auto_add=True)
    pool.step({"a": 0.5, "b": 0.1})
    before = {k: pool.get_state(k) for k in "ab"}

    def broken(*args, **kwargs):
        raise InferenceError("onnxruntime failed (injected)")

    monkeypatch.setattr(pool._runner, "run", broken)
    with pytest.raises(InferenceError, match="injected"):
        pool.step({"a": 1.0, "new": 2.0, "other": 3.0})
    assert pool.keys() == ["a", "b"]
    assert "new" not in pool
    monkeypatch.undo()
    for k in "ab":
        for name in ("h", "c"):
            np.testing.assert_array_equal(pool.get_state(k)[name], before[k][name])
    pool.step({"new": 2.0})  # the key can be added again, from a fresh state
    assert pool.keys() == ["a", "b", "new"]
