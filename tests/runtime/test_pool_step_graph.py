"""StreamPool with the single-step graph: same numbers as without it, at every batch size and
chunking, refuses a stale companion, and a failing chunk changes no state."""

from __future__ import annotations

import hashlib
import logging
import shutil

import numpy as np
import onnx
import pytest
from model_files import contract_for, make_forecaster, write_model

from rnnstream.export.graph import build_graph
from rnnstream.export.step_graph import build_step_graph, step_path
from rnnstream.runtime import ContractError, InferenceError, Predictor, StreamPool
from rnnstream.runtime import pool as pool_module
from rnnstream.runtime.contract import ModelContract
from rnnstream.train.model import CELLS

BATCHES = [1, 2, 3, 5, 9, 13, 2, 13, 9, 1]  # repeats: first sightings run(), repeats are bound


def write_with_step(model, folder):
    """model.onnx + model.step.onnx with the contract naming the step file and its hash."""
    path = folder / "model.onnx"
    data = build_step_graph(model).SerializeToString()
    spath = folder / "model.step.onnx"
    spath.write_bytes(data)
    contract = contract_for(model, build_graph(model))
    contract.step_model = {"file": spath.name, "sha256": hashlib.sha256(data).hexdigest()}
    return write_model(model, path, contract)


@pytest.fixture
def small_thresholds(monkeypatch):
    """Tiny thresholds so that few streams cross them: 4-row chunks."""
    monkeypatch.setattr(pool_module, "CHUNK_GATE_FLOATS", 1)
    monkeypatch.setattr(pool_module, "MIN_CHUNK_ROWS", 4)


@pytest.fixture(scope="module", params=[("rnn", 1), ("lstm", 2), ("gru", 3), ("mingru", 2)],
                ids=lambda p: f"{p[0]}-L{p[1]}")
def pair(request, tmp_path_factory):
    cell, layers = request.param
    model = make_forecaster(cell=cell, features=2, targets=1, hidden=8, layers=layers, seed=7)
    with_step = write_with_step(model, tmp_path_factory.mktemp("step"))
    without = write_model(model, tmp_path_factory.mktemp("plain") / "model.onnx")
    return with_step, without


def test_every_cell_is_covered():
    assert {"rnn", "lstm", "gru", "mingru"} == set(CELLS)


def test_step_graph_pool_equals_plain_pool_and_predictors(pair, small_thresholds):
    with_step, without = pair
    fast, plain = StreamPool(with_step, capacity=2), StreamPool(without, capacity=2)
    assert fast.uses_step_graph
    assert not plain.uses_step_graph
    keys = [f"s{i}" for i in range(13)]
    solo = {k: Predictor(without) for k in keys}
    for p in (fast, plain):
        for k in keys:
            p.add(k)
    rng = np.random.default_rng(0)
    for t, n in enumerate(BATCHES * 2):
        chosen = keys[:n] if t % 2 else list(rng.permutation(keys)[:n])  # in order, shuffled
        x = rng.normal(size=(n, 2)).astype(np.float32)
        got, want = fast.step_many(chosen, x), plain.step_many(chosen, x)
        solo_y = np.array([[solo[k].step(x[i])] for i, k in enumerate(chosen)])
        np.testing.assert_allclose(got, want, atol=1e-5)
        np.testing.assert_allclose(got, solo_y, atol=1e-5)
    for k in keys:
        a, b, c = fast.get_state(k), plain.get_state(k), solo[k].get_state()
        for name in a.tensors:
            np.testing.assert_allclose(a[name], b[name], atol=1e-5)
            np.testing.assert_allclose(a[name], c[name], atol=1e-5)
    assert set(fast._runner._plans) == set(BATCHES)  # each size seen twice got bound buffers


def test_capacity_growth_rebinds(pair, small_thresholds):
    with_step, without = pair
    fast, plain = StreamPool(with_step, capacity=1), StreamPool(without, capacity=1)
    rng = np.random.default_rng(1)
    for n in (5, 5, 5, 9, 9, 17, 17):  # auto_add grows the buffers between bound calls
        keys = list(range(n))
        for p in (fast, plain):
            for k in keys:
                if k not in p:
                    p.add(k)
        x = rng.normal(size=(n, 2)).astype(np.float32)
        np.testing.assert_allclose(fast.step_many(keys, x), plain.step_many(keys, x), atol=1e-5)


def test_missing_step_file_warns_and_uses_the_sequence_graph(pair, tmp_path, caplog):
    with_step, without = pair
    shutil.copy(with_step, tmp_path / "model.onnx")  # its contract names model.step.onnx
    with caplog.at_level(logging.WARNING, logger="rnnstream.runtime"):
        pool = StreamPool(tmp_path / "model.onnx")
    assert not pool.uses_step_graph
    assert "step graph" in caplog.text
    assert "using the sequence graph" in caplog.text
    ref = StreamPool(without)
    for p in (pool, ref):
        p.add("a")
    x = np.ones((1, 2), np.float32)
    np.testing.assert_allclose(pool.step_many(["a"], x), ref.step_many(["a"], x), atol=1e-5)


def test_stale_step_file_is_refused(pair, tmp_path):
    with_step, _ = pair
    shutil.copy(with_step, tmp_path / "model.onnx")
    other = make_forecaster(cell="lstm", features=2, hidden=8, seed=99)
    (tmp_path / "model.step.onnx").write_bytes(build_step_graph(other).SerializeToString())
    with pytest.raises(ContractError, match="stale or from another export"):
        StreamPool(tmp_path / "model.onnx")


def _failing_on_second_chunk(method):
    calls = {"n": 0}

    def run(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] % 2 == 0:  # the second chunk of every call
            raise RuntimeError("injected failure in chunk 2")
        return method(*args, **kwargs)

    return run


@pytest.mark.parametrize("in_order", [True, False], ids=["slice-rows", "gathered-rows"])
def test_failure_in_a_middle_chunk_leaves_every_state_unchanged(pair, small_thresholds,
                                                                monkeypatch, in_order):
    with_step, _ = pair
    pool = StreamPool(with_step)
    keys = list(range(10))  # 3 chunks of 4, 4, 2 rows
    for k in keys:
        pool.add(k)
    x = np.random.default_rng(2).normal(size=(10, 2)).astype(np.float32)
    pool.step_many(keys, x)  # a non-zero state
    before = {k: pool.get_state(k) for k in keys}
    session = pool._engine.step_session
    monkeypatch.setattr(session, "run", _failing_on_second_chunk(session.run))
    monkeypatch.setattr(session, "run_with_iobinding",
                        _failing_on_second_chunk(session.run_with_iobinding))
    chosen = keys if in_order else keys[::-1]
    for _ in range(3):  # first sighting of 10 rows: run(); then bound buffers
        with pytest.raises(InferenceError, match="injected failure in chunk 2"):
            pool.step_many(chosen, x)
    assert 10 in pool._runner._plans
    for k in keys:
        after = pool.get_state(k)
        for name in before[k].tensors:
            assert after[name].tobytes() == before[k][name].tobytes()


def test_step_path_naming():
    assert step_path("a/model.onnx") == "a/model.step.onnx"
    assert step_path("model") == "model.step.onnx"


def test_contract_step_model_is_optional_and_checked(pair):
    with_step, _ = pair
    data = onnx.load(str(with_step))
    text = next(p.value for p in data.metadata_props)
    c = ModelContract.from_json(text)
    assert c.step_model["file"] == "model.step.onnx"
    d = c.to_dict()
    assert ModelContract.from_dict(d) == c
    d.pop("step_model")
    assert ModelContract.from_dict(d).step_model == {}
    assert "step_model" not in ModelContract.from_dict(d).to_dict()
    for bad in ("model.step.onnx", {"file": "../x.onnx", "sha256": "0" * 64},
                {"file": "m.step.onnx", "sha256": "XYZ"}, {"file": "m.step.onnx"}):
        with pytest.raises(ContractError, match="step_model"):
            ModelContract.from_dict({**d, "step_model": bad})


def test_predictor_with_step_graph_equals_without(pair):
    with_step, without = pair
    fast, plain = Predictor(with_step), Predictor(without)
    assert fast.uses_step_graph
    assert not plain.uses_step_graph
    rng = np.random.default_rng(3)
    history = rng.normal(size=(20, 2)).astype(np.float32)
    np.testing.assert_allclose(fast.prime(history), plain.prime(history), atol=1e-5)
    for _ in range(50):
        point = rng.normal(size=2).astype(np.float32)
        assert fast.step(point) == pytest.approx(plain.step(point), abs=1e-5)
    a, b = fast.get_state(), plain.get_state()
    for name in a.tensors:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5)
