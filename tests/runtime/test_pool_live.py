"""StreamPool(coverage=...): every stream's live scores equal a Predictor's, bit for bit."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rnnstream.runtime import Predictor, StateError, StreamKeyError, StreamPool, UnsupportedError


@pytest.fixture
def two(model_file):
    """Features f0, f1; targets f0, f1; horizon 1."""
    return model_file(cell="lstm", features=2, targets=2, hidden=8, seed=6)[0]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k], equal_nan=True) for k in a)


def _live_row(pool: StreamPool, key) -> dict:
    return pool._live.take([pool._rows[key]])


def test_pool_live_scores_equal_predictors_through_adds_removes_and_growth(two):
    rng = np.random.default_rng(7)
    keys = [f"s{i}" for i in range(9)]
    pool = StreamPool(two, auto_add=True, capacity=2, coverage=0.9, season=3)
    solo = {k: Predictor(two, coverage=0.9, season=3) for k in keys}
    for t in range(80):
        # every fifth step one stream alone (the pool's one-row path)
        chosen = ([k for k in keys if rng.random() < 0.6] if t % 5 else []) or [keys[t % 9]]
        rng.shuffle(chosen)
        x = rng.normal(size=(len(chosen), 2)).astype(np.float32)
        y = pool.step_many(chosen, x)
        lower, upper = pool.interval(chosen)  # the step's keys: its cached rows
        for i, (k, row, yk) in enumerate(zip(chosen, x, y, strict=True)):
            assert np.array_equal(solo[k].step(row), yk)
            assert (lower[i].tolist(), upper[i].tolist()) == tuple(
                v.tolist() for v in solo[k].interval())
        if t == 40:  # a removed stream's row is refilled by the last one
            pool.remove("s3")
            solo["s3"] = Predictor(two, coverage=0.9, season=3)
        if t == 50:
            pool.reset("s5")
            solo["s5"].reset()
    for k in pool.keys():  # noqa: SIM118 - a pool is not a mapping
        assert _same(_live_row(pool, k), solo[k]._live.state_arrays()), k
    lower, upper = pool.interval(pool.keys())
    for i, k in enumerate(pool.keys()):
        lo, hi = solo[k].interval()
        assert np.array_equal(lower[i], lo)
        assert np.array_equal(upper[i], hi)
    acc = pool.accuracy()
    share, scored = pool.realised_coverage()
    for i, k in enumerate(pool.keys()):
        assert np.array_equal(acc["model"]["mae"][i], solo[k].accuracy()["model"]["mae"])
        assert np.array_equal(acc["seasonal"]["recent_mse"][i],
                              solo[k].accuracy()["seasonal"]["recent_mse"], equal_nan=True)
        s, n = solo[k].realised_coverage()
        assert np.array_equal(share[i], s, equal_nan=True)
        assert np.array_equal(scored[i], n)


def test_step_mapping_and_sub_blocks_score_like_step_many(two):
    a = StreamPool(two, capacity=8, coverage=0.8)
    b = StreamPool(two, capacity=8, coverage=0.8)
    for k in range(6):
        a.add(k)
        b.add(k)
    rng = np.random.default_rng(3)
    for t in range(30):
        x = rng.normal(size=(6, 2)).astype(np.float32)
        sub = [0, 1, 2] if t % 3 else list(range(6))  # rows 0..2: a block, updated in place
        a.step_many(sub, x[sub])
        b.step({k: x[k].tolist() for k in sub})
    assert _same(a._live.take(np.arange(6)), b._live.take(np.arange(6)))


_CONTINUE = """
import json, sys
import numpy as np
from rnnstream.runtime import StreamPool
path, snap, xs = sys.argv[1], sys.argv[2], np.array(json.loads(sys.argv[3]), np.float32)
pool = StreamPool(path, coverage=0.9, season=3)
pool.load_state(snap)
keys = pool.keys()
out = []
for x in xs:
    y = pool.step_many(keys, x)
    lo, hi = pool.interval(keys)
    out.append([y.tolist(), lo.tolist(), hi.tolist()])
acc = pool.accuracy()
print(json.dumps({"steps": out, "mae": acc["model"]["mae"].tolist(),
                  "recent": acc["persistence"]["recent_mse"].tolist(),
                  "share": pool.realised_coverage()[0].tolist()}))
"""


def test_a_snapshot_restored_in_a_new_process_continues_exactly(two, tmp_path):
    rng = np.random.default_rng(11)
    xs = rng.normal(size=(60, 4, 2)).astype(np.float32)
    keys = ["a", "b", "c", "d"]
    pool = StreamPool(two, coverage=0.9, season=3)
    for k in keys:
        pool.add(k)
    for x in xs[:30]:
        pool.step_many(keys, x)
    pool.save_state(tmp_path / "pool.npz")
    want = []
    for x in xs[30:]:
        y = pool.step_many(keys, x)
        lo, hi = pool.interval(keys)
        want.append([y.tolist(), lo.tolist(), hi.tolist()])
    done = subprocess.run([sys.executable, "-c", _CONTINUE, str(two), str(tmp_path / "pool.npz"),
                           json.dumps(xs[30:].tolist())], capture_output=True, text=True,
                          check=True)
    got = json.loads(done.stdout)
    assert got["steps"] == want  # predictions and bands, exactly (JSON floats round-trip)
    acc = pool.accuracy()
    assert got["mae"] == acc["model"]["mae"].tolist()
    assert got["recent"] == acc["persistence"]["recent_mse"].tolist()
    assert got["share"] == pool.realised_coverage()[0].tolist()


def test_a_misfit_live_snapshot_changes_nothing(two, tmp_path):
    pool = StreamPool(two, coverage=0.9)
    pool.add("a")
    pool.step_many(["a"], np.ones((1, 2), np.float32))
    pool.save_state(tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["live.q"] = -arrays["live.q"] - 1
    np.savez(tmp_path / "bad.npz", **arrays)
    other = StreamPool(two, coverage=0.9)
    other.add("x")
    other.step_many(["x"], np.full((1, 2), 2.0, np.float32))
    before = other._live.state_arrays()
    with pytest.raises(StateError, match=r"bad\.npz: live state 'q' holds a negative value"):
        other.load_state(tmp_path / "bad.npz")
    assert other.keys() == ["x"]
    assert _same(other._live.state_arrays(), before)
    # a snapshot saved without coverage: the streams continue, their live scores start afresh
    plain = StreamPool(two)
    plain.add("p")
    plain.step_many(["p"], np.ones((1, 2), np.float32))
    plain.save_state(tmp_path / "plain.npz")
    other.load_state(tmp_path / "plain.npz")
    assert other.accuracy()["model"]["count"].tolist() == [[0, 0]]
    assert np.array_equal(other.get_state("p")["h"], plain.get_state("p")["h"])


def test_without_coverage_there_are_no_live_scores(two):
    pool = StreamPool(two)
    pool.add(1)
    for call in (lambda: pool.interval([1]), pool.accuracy, pool.realised_coverage):
        with pytest.raises(UnsupportedError, match=r"needs live scores: create the pool with "
                                                   r"coverage=0\.9"):
            call()


def test_the_mask_free_path_equals_predictors(two):
    """With initial half-widths (as trained models store) and targets that are features, a
    warm pool takes LiveScores' mask-free path: still the Predictors' numbers, bit for bit."""
    opts = {"live_options": {"initial_quantiles": [0.3, 0.2]}, "coverage": 0.9, "season": 2}
    pool = StreamPool(two, capacity=4, **opts)
    solo = {k: Predictor(two, **opts) for k in range(4)}
    for k in range(4):
        pool.add(k)
    rng = np.random.default_rng(9)
    for t in range(40):
        x = rng.normal(size=(4, 2)).astype(np.float32)
        keys = [0, 1, 2, 3] if t % 5 else [2, 0]  # mostly the whole block, in row order
        y = pool.step_many(keys, x[keys])
        for k, yk in zip(keys, y, strict=True):
            assert np.array_equal(solo[k].step(x[k]), yk)
    assert pool.live._steady_possible
    for k in range(4):
        assert _same(_live_row(pool, k), solo[k]._live.state_arrays())


def test_settings_and_set_state(two, tmp_path):
    pool = StreamPool(two, coverage=0.9)
    pool.add("a")
    pool.step_many(["a"], np.ones((1, 2), np.float32))
    pool.step_many(["a"], np.ones((1, 2), np.float32))
    pool.save_state(tmp_path / "s.npz")
    other = StreamPool(two, coverage=0.8)  # other settings: the scores start afresh, warned
    with pytest.warns(UserWarning, match="saved with .*'coverage': 0.9.*start afresh"):
        other.load_state(tmp_path / "s.npz")
    assert other.accuracy()["model"]["count"].tolist() == [[0, 0]]
    assert np.array_equal(other.get_state("a")["h"], pool.get_state("a")["h"])
    pool.set_state("a", pool.get_state("a"))  # a State holds no live scores
    assert pool.accuracy()["model"]["count"].tolist() == [[0, 0]]
    with pytest.raises(StreamKeyError, match="duplicate stream keys"):
        pool.interval(["a", "a"])


def test_get_live_and_set_live_carry_one_streams_scores(two):
    pool = StreamPool(two, coverage=0.9)
    pool.add("a")
    pool.add("b")
    x = np.random.default_rng(3).normal(size=(30, 2, 2)).astype(np.float32)
    for t in range(30):
        pool.step_many(["a", "b"], x[t])
    kept, state = pool.get_live("a"), pool.get_state("a")
    pool.set_state("a", state)  # starts the live scores afresh ...
    assert int(pool.get_live("a")["seen"][0]) == 0
    pool.set_live("a", kept)  # ... and set_live puts them back
    assert _same(pool.get_live("a"), kept)
    before = pool.get_live("b")
    with pytest.raises(StateError, match=r"set_live|put"):
        pool.set_live("b", {**kept, "q": kept["q"][:, :1]})
    assert _same(pool.get_live("b"), before)
    with pytest.raises(StreamKeyError):
        pool.get_live("nobody")
    with pytest.raises(UnsupportedError, match="get_live\\(\\) needs live scores"):
        StreamPool(two).get_live("a")


def test_interval_of_a_key_that_compares_as_an_array_is_a_key_error(two):
    pool = StreamPool(two, coverage=0.9)
    pool.add("a")
    pool.add("b")
    pool.step_many(["a", "b"], np.ones((2, 2), np.float32))
    with pytest.raises(StreamKeyError):
        pool.interval([np.array([1, 2]), "b"])
