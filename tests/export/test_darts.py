"""export_darts: a trained darts RNNModel streams in rnnstream exactly as darts predicts.

Each model is trained once per module (hidden 16, a few epochs, seeded: well under a second)
on a float32 sine with a fitted Scaler, exported with the Scaler folded in (the file takes and
returns raw values), then held against darts itself:

(a) a fresh Predictor primed on the last ``input_chunk_length`` points is darts'
    ``predict(n=1)``, at every point from ``input_chunk_length`` on (``historical_forecasts``
    with ``retrain=False`` runs the same windows);
(b) one Predictor streaming the whole series is darts' own module fed point by point with its
    state carried (what darts does past its window when it predicts autoregressively), final
    state included; ``Predictor.forecast`` is darts' autoregressive ``predict(n > 1)``;
(c) refusals, each with nothing written.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from darts import TimeSeries
from darts.dataprocessing.transformers import Scaler
from darts.models import BlockRNNModel, RNNModel
from darts.models.forecasting.rnn_model import _RNNModule
from darts.utils.data.torch_datasets.utils import PLModuleInput
from darts.utils.likelihood_models.torch import GaussianLikelihood
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from rnnstream.export import ExportError, export_darts
from rnnstream.runtime import Predictor

# pytorch_lightning 2.6 calls an API that torch 2.13 deprecated, from inside its own fit loop
pytestmark = pytest.mark.filterwarnings("ignore:.*isinstance.treespec, LeafSpec.:FutureWarning")

L = 12  # input_chunk_length
N = 300  # points in the series
EPS32 = float(np.finfo(np.float32).eps)
# No validation set: Lightning's sanity check of an empty one warns, and the suite runs -W error.
TRAINER = {"accelerator": "cpu", "enable_progress_bar": False, "logger": False,
           "enable_model_summary": False, "enable_checkpointing": False,
           "num_sanity_val_steps": 0, "limit_val_batches": 0}


def loader() -> dict:
    """No pinned memory (no accelerator: pinning warns); a new dict each time, as darts'
    historical_forecasts adds to the predict_kwargs it is given."""
    return {"dataloader_kwargs": {"pin_memory": False}}


def bound(y: np.ndarray) -> float:
    """How far two float32 implementations of the same forecast may be apart.

    Each is a few float32 ulps (at the output's scale) from the exact value: the input scaled
    (one rounding), each recurrent step's dot products over 16 + F terms, whose rounding the
    recurrence damps rather than amplifies (sigmoid and tanh have slopes <= 1), the 16-term
    head, the inverse scaling (one rounding). Measured against float64: 0.8 to 1.5 ulps each;
    apart: 1.2 to 2.1 ulps (every model here; every window and the 300-point stream). 8 ulps is
    four times that, and still ~1e-6 of the output.
    """
    return 8 * EPS32 * float(np.max(np.abs(y)))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models train fastest on one thread; two spin-waiting threads on a busy 2-core
    machine made training ~20x slower. Put back after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def sine(n: int, period: float, level: float, name: str) -> TimeSeries:
    t = np.arange(n)
    v = level + 3 * np.sin(2 * np.pi * t / period) + 0.5 * np.sin(2 * np.pi * t / 7)
    return TimeSeries.from_values(v.astype(np.float32), columns=[name])


def train(cell, series: TimeSeries, covariates: TimeSeries | None = None, epochs: int = 8,
          **kwargs) -> RNNModel:
    model = RNNModel(model=cell, input_chunk_length=L, training_length=24, hidden_dim=16,
                     n_epochs=epochs, batch_size=16, random_state=0,
                     pl_trainer_kwargs=TRAINER, **kwargs)
    model.fit(series, future_covariates=covariates, verbose=False, **loader())
    return model


# (cell, layers): darts' three cells, and two layers with dropout between them (off in the export)
@pytest.fixture(scope="module", params=[("RNN", 1), ("LSTM", 1), ("GRU", 1), ("LSTM", 2)],
                ids=["RNN", "LSTM", "GRU", "LSTM-2-layers"])
def darts_export(request, tmp_path_factory):
    cell, layers = request.param
    raw = sine(N, 25, 10.0, "load")
    scaler = Scaler()  # sklearn MinMaxScaler, feature_range (0, 1)
    series = scaler.fit_transform(raw)
    model = train(cell, series, n_rnn_layers=layers, dropout=0.2 if layers > 1 else 0.0)
    path = tmp_path_factory.mktemp(cell) / "model.onnx"
    report = export_darts(model, path, scaler=scaler, sample=raw)
    return model, scaler, raw, series, report


def values(series: TimeSeries) -> np.ndarray:
    return series.values(copy=False)


def test_contract_names_the_series_components(darts_export):
    model, _, _, _, report = darts_export
    c = report.contract
    assert (c.features, c.targets, c.horizon) == (["load"], ["load"], 1)
    assert (c.cell, c.layers, c.hidden) == (model.rnn_type_or_module.lower(),
                                            model.n_rnn_layers, 16)
    source = c.metrics["source"]
    assert (source["from"], source["route"]) == ("export_darts", "native")
    assert source["darts"]["input_chunk_length"] == L
    assert source["darts"]["scaler"] == "MinMaxScaler"
    assert c.calibration is not None  # from the sample: intervals start from its residuals


def test_primed_predictor_is_darts_predict(darts_export):
    model, scaler, raw, series, report = darts_export
    forecasts = model.historical_forecasts(series, start=L, forecast_horizon=1, retrain=False,
                                           verbose=False, predict_kwargs=loader())
    assert forecasts.time_index.equals(series.time_index[L:])  # one forecast per point
    want = values(scaler.inverse_transform(forecasts))[:, 0]
    x = values(raw)[:, 0]
    pred = Predictor(report.path)
    got = []
    for t in range(L, N):  # 288 windows: the last L points, from the zero state
        pred.reset()
        got.append(pred.prime(x[t - L:t])[-1])
    assert np.max(np.abs(np.array(got) - want)) <= bound(want)


def darts_stream(module, x: np.ndarray) -> tuple[np.ndarray, tuple]:
    """darts' own module (its forward, as predict calls it) fed one point at a time with its
    state carried from the zero state; x and the result in the model's (scaled) units."""
    ys, state = [], None
    # eval as darts' predict runs it; each submodule's mode put back after, because darts'
    # default loss (a torch.nn.MSELoss() default argument) is one object shared by every model
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            for row in torch.from_numpy(x[:, None, None, :]):
                out = module(PLModuleInput(past_target=row, state=state))
                ys.append(out.prediction[0, -1, :, 0].numpy())
                state = out.state
    finally:
        for m, training in modes:
            m.training = training
    return np.array(ys), state if isinstance(state, tuple) else (state,)


def test_stream_is_darts_module_with_carried_state(darts_export):
    model, scaler, raw, series, report = darts_export
    y_scaled, state = darts_stream(model.model, values(series))
    want = values(scaler.inverse_transform(TimeSeries.from_values(y_scaled)))[:, 0]
    pred = Predictor(report.path)
    assert pred.uses_step_graph
    got = np.array([pred.step(v) for v in values(raw)[:, 0]])
    assert np.max(np.abs(got - want)) <= bound(want)
    # float64 says who is right: the stream is no further from it than darts' own float32
    exact = darts_stream(copy.deepcopy(model.model).double(),
                         values(scaler.transform(raw.astype(np.float64))))[0]
    exact = values(scaler.inverse_transform(TimeSeries.from_values(exact)))[:, 0]
    assert np.max(np.abs(got - exact)) <= 2 * np.max(np.abs(want - exact))
    pred_seq = Predictor(report.path)
    assert np.max(np.abs(pred_seq.prime(values(raw)) - want)) <= bound(want)  # one call
    final = pred.get_state()
    for name, tensor in zip([s.name for s in report.contract.states], state, strict=True):
        darts_state = tensor[:, 0, :].numpy()  # [layers, batch, hidden] -> one stream's row
        assert np.max(np.abs(final[name] - darts_state)) <= bound(darts_state)


def test_forecast_is_darts_autoregressive_predict(darts_export):
    model, scaler, raw, series, report = darts_export
    pred = Predictor(report.path)
    for t in (L, 150, N):
        pred.reset()
        pred.prime(values(raw)[t - L:t])
        darts = model.predict(n=25, series=series[:t], **loader())
        want = values(scaler.inverse_transform(darts))[:, 0]
        got = np.concatenate([[pred.get_state().last_output.item()], pred.forecast(24)])
        assert np.max(np.abs(got - want)) <= bound(want)


@pytest.fixture(scope="module")
def covariate_export(tmp_path_factory):
    # two target components and one future covariate, each group with its own scaler
    raw = sine(N, 25, 10.0, "load").stack(sine(N, 10, -4.0, "price"))
    raw_cov = sine(N + 1, 50, 20.0, "temp")
    scaler, cov_scaler = Scaler(), Scaler(StandardScaler())
    series, cov = scaler.fit_transform(raw), cov_scaler.fit_transform(raw_cov)
    model = train("GRU", series, cov)
    path = tmp_path_factory.mktemp("covariates") / "model.onnx"
    report = export_darts(model, path, scaler=scaler, covariates_scaler=cov_scaler)
    return model, scaler, (raw, raw_cov), (series, cov), report


def test_future_covariates_are_fed_one_step_ahead(covariate_export):
    model, scaler, (raw, raw_cov), (series, cov), report = covariate_export
    assert report.contract.features == ["load", "price", "temp[t+1]"]
    assert report.contract.targets == ["load", "price"]
    forecasts = model.historical_forecasts(series, future_covariates=cov, start=L,
                                           forecast_horizon=1, retrain=False, verbose=False,
                                           predict_kwargs=loader())
    want = values(scaler.inverse_transform(forecasts))
    x = np.column_stack([values(raw), values(raw_cov)[1:]])  # load[t], price[t], temp[t+1]
    pred = Predictor(report.path)
    got = []
    for t in range(L, N):
        pred.reset()
        got.append(pred.prime(x[t - L:t])[-1])
    assert np.max(np.abs(np.array(got) - want)) <= bound(want)


# -- refusals -------------------------------------------------------------------------------------
class _CustomGRU(_RNNModule):
    """A user's own CustomRNNModule (here darts' own code under another class)."""

    def __init__(self, **kwargs):
        super().__init__(name="GRU", **kwargs)


def _refused(tmp_path, match: str, model, **kwargs) -> None:
    with pytest.raises(ExportError, match=match):
        export_darts(model, tmp_path / "model.onnx", **kwargs)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_refuses_what_is_not_a_trained_rnn_model(tmp_path):
    _refused(tmp_path, r"exports a darts RNNModel .* got darts\..*BlockRNNModel.*export_module",
             BlockRNNModel(input_chunk_length=L, output_chunk_length=1))
    _refused(tmp_path, r"has not been trained: call model\.fit",
             RNNModel(model="LSTM", input_chunk_length=L))


def test_refuses_probabilistic_and_custom_models(tmp_path):
    series = sine(60, 25, 10.0, "load")
    gaussian = train("LSTM", series, epochs=1, likelihood=GaussianLikelihood())
    _refused(tmp_path, r"probabilistic \(GaussianLikelihood, 2 parameters .* likelihood=None",
             gaussian)
    _refused(tmp_path, r"custom module \(_CustomGRU\).*export_module",
             train(_CustomGRU, series, epochs=1))


@pytest.fixture(scope="module")
def small_model():
    return train("LSTM", Scaler().fit_transform(sine(60, 25, 10.0, "load")), epochs=1)


def test_refuses_scalers_it_cannot_fold(tmp_path, small_model):
    model, raw = small_model, sine(N, 25, 10.0, "load")
    _refused(tmp_path, r"scaler is not fitted", model, scaler=Scaler())
    clipping = Scaler(MinMaxScaler(clip=True))
    clipping.fit(raw)
    _refused(tmp_path, r"not an affine map .* clip=True", model, scaler=clipping)
    per_series = Scaler()
    per_series.fit([raw, raw * 2])
    _refused(tmp_path, r"fitted on 2 series .*Scaler\(global_fit=True\)", model, scaler=per_series)
    _refused(tmp_path, r"must be a fitted darts Scaler .* got MinMaxScaler", model,
             scaler=MinMaxScaler())
    _refused(tmp_path, r"covariates_scaler was given but the model has no such inputs", model,
             covariates_scaler=per_series)


def test_refuses_names_of_the_wrong_count(tmp_path, small_model):
    model = small_model
    _refused(tmp_path, r"targets \['a', 'b'\]: expected 1 distinct", model, targets=["a", "b"])
    _refused(tmp_path, r"features \[''\]: expected 1 distinct", model, features=[""])


def test_import_does_not_load_darts():
    code = "import sys, rnnstream.export; print('darts' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]
