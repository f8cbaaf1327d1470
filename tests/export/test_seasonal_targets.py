"""Models that predict the change from one season ago (target_mode="seasonal"): the `cycle`
state through export and runtime.

The checks: the graph's I/O is the one spec's, the contract says schema 4 and the season, the
export's parity proof passes (the parity draws include cycles with unseen slots), the runtime
(step by step, prime, StreamPool, snapshots) computes what the torch model computes over the
same stream, and a model whose correction is off predicts exactly seasonal naive, with
persistence standing in for the first season of a stream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from rnnstream.export import export_model
from rnnstream.runtime import ModelContract, Predictor, StateError, StreamPool
from rnnstream.runtime.errors import ContractError
from rnnstream.runtime.spec import graph_io
from rnnstream.train import Forecaster, ForecasterConfig, TrainConfig, from_arrays, train

SEASON = 7
T = np.arange(240)
# a weekly pattern on a rising level, with noise; positive
SERIES = 50 + 0.05 * T + 8 * np.sin(2 * np.pi * T / SEASON) + np.random.default_rng(5).normal(
    0, 0.5, T.size)


def _seasonal_naive(x: np.ndarray, season: int, horizon: int = 1) -> np.ndarray:
    """What a model with its correction off predicts for each row of x [T, Tg]: the value one
    season before the predicted time, or the last observed value where that was never seen."""
    out = x.copy()
    for t in range(x.shape[0]):
        back = t + horizon - season
        if back >= 0:
            out[t] = x[back]
    return out


@pytest.fixture(scope="module", params=[("lstm", "level"), ("gru", "delta")])
def exported(request, tmp_path_factory) -> tuple:
    cell, input_mode = request.param
    series = from_arrays(np.stack([SERIES, SERIES * 0.1 + 2], 1), feature_names=["y", "aux"],
                         target_names=["y"], targets=SERIES)
    result = train(series, ForecasterConfig(cell=cell, hidden=8),
                   TrainConfig(epochs=3, input_mode=input_mode, target_mode="seasonal",
                               season=SEASON, progress=False))
    path = tmp_path_factory.mktemp(cell) / "model.onnx"
    report = export_model(result.model, path)
    return result.model, path, report, series


def test_graph_io_and_contract_are_the_spec(exported) -> None:
    model, path, report, _ = exported
    cfg = model.config
    assert (cfg.target_mode, cfg.season) == ("seasonal", SEASON)
    ins, outs = graph_io(cfg.cell, layers=1, hidden=8, n_features=2, n_targets=1,
                         input_mode=cfg.input_mode, target_mode="seasonal", season=SEASON)
    graph = onnx.load(str(path))
    assert [v.name for v in graph.graph.input] == [t.name for t in ins]
    assert [v.name for v in graph.graph.output] == [t.name for t in outs]
    assert (ins[-1].name, ins[-1].shape) == ("cycle_in", ("batch", SEASON, 2))
    c = report.contract
    assert (c.target_mode, c.season, c.schema_version) == ("seasonal", SEASON, 4)
    assert [s.name for s in c.states][-1] == "cycle"
    again = ModelContract.from_json(c.to_json())
    assert (again.season, [s.shape for s in again.states]) == (SEASON,
                                                              [s.shape for s in c.states])


def test_contract_refuses_a_seasonal_model_without_its_season(exported) -> None:
    data = exported[2].contract.to_dict()
    del data["season"]
    with pytest.raises(ContractError, match="'season' is None"):
        ModelContract.from_dict(data)
    data = exported[2].contract.to_dict()
    data["schema_version"] = 3
    with pytest.raises(ContractError, match="'seasonal' or 'ets', which need schema_version 4"):
        ModelContract.from_dict(data)


def test_runtime_streams_what_torch_computes(exported) -> None:
    model, path, _, series = exported
    x = series.features.astype(np.float32)
    with torch.no_grad():
        ref, state = model(torch.from_numpy(x[None]))
    p = Predictor(path)
    steps = np.array([p.step(row) for row in x], np.float32)
    np.testing.assert_allclose(steps, ref[0, :, 0].numpy(), rtol=1e-5, atol=1e-4)
    # the cycle is exact: the last SEASON targets, copied, each flagged seen
    want = np.stack([x[-SEASON:, 0], np.ones(SEASON)], 1).astype(np.float32)
    np.testing.assert_array_equal(p.get_state()["cycle"], want)
    np.testing.assert_array_equal(state[-1][0].numpy(), want)
    primed = Predictor(path)
    np.testing.assert_allclose(primed.prime(x), steps, rtol=1e-6, atol=1e-5)
    pool = StreamPool(path, auto_add=True)
    pooled = np.array([pool.step({"a": list(map(float, row))})["a"] for row in x], np.float32)
    np.testing.assert_allclose(pooled, steps, rtol=1e-6, atol=1e-5)


def test_snapshot_restores_the_cycle(exported, tmp_path: Path) -> None:
    _, path, _, series = exported
    x = series.features.astype(np.float32)
    p = Predictor(path)
    p.prime(x[:100])
    p.save_state(tmp_path / "s.npz")
    expected = [p.step(r) for r in x[100:120]]
    q = Predictor(path)
    q.load_state(tmp_path / "s.npz")
    assert [q.step(r) for r in x[100:120]] == expected
    bad = dict(q.get_state())
    bad["cycle"] = np.zeros((SEASON + 1, 2), np.float32)
    with pytest.raises(StateError, match="state 'cycle'"):
        q.set_state(bad)


@pytest.mark.parametrize(("season", "horizon", "index"), [(SEASON, 1, [0]), (5, 2, [1, 0]),
                                                          (1, 1, [0])])
def test_correction_off_is_exactly_seasonal_naive(tmp_path, season, horizon, index) -> None:
    """Head zeroed (what a shrinkage factor 0 does): torch, the sequence graph and the step
    graph all give exactly the value one season back, persistence during the first season."""
    x = np.stack([SERIES, SERIES[::-1]], 1).astype(np.float32)
    cfg = ForecasterConfig(n_features=2, n_targets=len(index), target_index=index, hidden=4,
                           target_mode="seasonal", season=season, horizon=horizon)
    model = Forecaster(cfg)
    with torch.no_grad():
        model.out_layer.weight.zero_()
        model.out_layer.bias.zero_()
        y, _ = model(torch.from_numpy(x[None]))
    want = _seasonal_naive(x[:, index], season, horizon)
    np.testing.assert_array_equal(y[0].numpy(), want)
    export_model(model, tmp_path / "m.onnx")
    p = Predictor(tmp_path / "m.onnx")
    np.testing.assert_array_equal(np.asarray(p.prime(x)).reshape(want.shape), want)
    q = Predictor(tmp_path / "m.onnx")
    stepped = np.array([np.ravel(q.step(row)) for row in x])
    np.testing.assert_array_equal(stepped, want)


def test_bad_seasonal_configs() -> None:
    with pytest.raises(ValueError, match="needs season >= horizon 2"):
        ForecasterConfig(target_mode="seasonal", target_index=[0], season=1, horizon=2)
    with pytest.raises(ValueError, match="for target_mode 'seasonal' or 'ets' only"):
        ForecasterConfig(target_mode="delta", target_index=[0], season=12)
    with pytest.raises(ValueError, match="'seasonal' needs target_index"):
        ForecasterConfig(target_mode="seasonal", season=12)


# -- target_mode "ets": the ETS recurrence in the graph (the native RNN op, identity activation)
@pytest.fixture(scope="module", params=[SEASON, 0])
def exported_ets(request, tmp_path_factory) -> tuple:
    series = from_arrays(np.stack([SERIES * 0.1 + 2, SERIES], 1), feature_names=["aux", "y"],
                         target_names=["y"], targets=SERIES)
    result = train(series, ForecasterConfig(hidden=8),
                   TrainConfig(epochs=3, target_mode="ets", input_mode="level",
                               season=request.param, progress=False))
    path = tmp_path_factory.mktemp(f"ets{request.param}") / "model.onnx"
    report = export_model(result.model, path)
    return result.model, path, report, series


def test_ets_graph_io_contract_and_state(exported_ets) -> None:
    model, path, report, _ = exported_ets
    cfg = model.config
    size = cfg.season + 2
    assert cfg.target_mode == "ets"
    ins, _ = graph_io(cfg.cell, layers=1, hidden=8, n_features=2, n_targets=1,
                      target_mode="ets", season=cfg.season)
    graph = onnx.load(str(path))
    assert [v.name for v in graph.graph.input] == [t.name for t in ins]
    assert (ins[-1].name, ins[-1].shape) == ("ets_in", ("batch", size))
    ets = [n for n in graph.graph.node if n.name == "ets"]
    assert [n.op_type for n in ets] == ["RNN"]
    c = report.contract
    assert (c.target_mode, c.season, c.schema_version) == ("ets", cfg.season, 4)
    assert ModelContract.from_json(c.to_json()).season == cfg.season


def test_ets_runtime_streams_what_torch_computes(exported_ets) -> None:
    model, path, _, series = exported_ets
    x = series.features.astype(np.float32)
    with torch.no_grad():
        ref, state = model(torch.from_numpy(x[None]))
    p = Predictor(path)
    steps = np.array([p.step(row) for row in x], np.float32)
    np.testing.assert_allclose(steps, ref[0, :, 0].numpy(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(p.get_state()["ets"], state[-1][0].numpy(), rtol=1e-4, atol=1e-4)
    primed = Predictor(path)
    np.testing.assert_allclose(primed.prime(x), steps, rtol=1e-5, atol=1e-3)


def test_an_rnn_cell_with_ets_targets_exports(tmp_path) -> None:
    """The ETS's own RNN node (named after its state) is not one of an rnn cell's layers: the
    exporter's count of recurrent nodes looked at op types only and refused this model."""
    series = from_arrays(np.stack([SERIES * 0.1 + 2, SERIES], 1), feature_names=["aux", "y"],
                         target_names=["y"], targets=SERIES)
    result = train(series, ForecasterConfig(cell="rnn", hidden=8),
                   TrainConfig(epochs=2, target_mode="ets", input_mode="level", season=SEASON,
                               progress=False))
    report = export_model(result.model, tmp_path / "model.onnx")
    rnn = sorted(n.name for n in onnx.load(str(report.path)).graph.node if n.op_type == "RNN")
    assert rnn == ["ets", "rnn0"]
