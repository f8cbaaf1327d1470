"""``export_darts``: a trained darts ``RNNModel`` as an rnnstream model (ONNX + contract).

darts' ``RNNModel(model="RNN" | "LSTM" | "GRU")`` holds a torch module
(``darts.models.forecasting.rnn_model._RNNModule``) made of one ``nn.RNN``/``nn.LSTM``/``nn.GRU``
``.rnn`` (batch_first, torch's ``[layers, batch, hidden]`` state) and one ``nn.Linear`` ``.V``
applied at every step. What darts feeds it, in the units of the series it was trained on::

    x[t] = [target[t], future_covariates[t + 1]]       # [B, T, F]; F = targets + covariates
    y[t] = V(rnn(x)[t])                                 # [B, T, targets]: target[t + 1]
    predict(n=1, series=s): the last input_chunk_length points of s from the zero state;
        the prediction after the last point
    predict(n > 1): then one point at a time (its own prediction) with the carried state

An rnnstream stream is exactly that module with the state carried: ``Predictor.prime`` of the
last ``input_chunk_length`` points from a fresh (zero) state is darts' ``predict(n=1)``, and a
stream that goes on carries the state as darts' autoregressive steps do. The module is handed
to :func:`rnnstream.export.export_module` as ``forward(x, state) -> (y, state)``, which rebuilds
it as native ONNX ops and proves it equal to the module before anything is written.

A fitted darts ``Scaler`` (any affine scikit-learn scaler: MinMaxScaler, the default, with any
``feature_range``, StandardScaler, MaxAbsScaler, RobustScaler; ``columns=`` too) is folded in,
so the exported model takes and returns raw values. Its affine map is measured through the
Scaler itself rather than read from sklearn attributes, and a scaler that is not affine (a
clipping MinMaxScaler, a PowerTransformer) is refused.

Refused, with what to do instead: anything but an ``RNNModel``, an untrained one, one built on a
custom ``CustomRNNModule``, and a probabilistic one (a ``likelihood``: darts samples its
forecasts; rnnstream exports point forecasts, so train with ``likelihood=None``). A model
trained in float64 (on a float64 series) or on a GPU is exported as a float32 CPU model, as
every rnnstream model is.

darts is imported only inside these functions: ``import rnnstream.export`` never loads it.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ExportError

if TYPE_CHECKING:
    import torch

    from .exporter import ExportReport

__all__ = ["export_darts"]

# names of the covariate features: the point fed at time t carries the covariate of t + 1
COVARIATE_SUFFIX = "[t+1]"
# relative error allowed when checking that the Scaler is affine (float64 round trips are
# ~1e-15; a clipping or non-linear scaler is off by far more than this)
AFFINE_RTOL = 1e-9


def export_darts(
    model: Any,
    path: str | os.PathLike[str],
    *,
    scaler: Any = None,
    covariates_scaler: Any = None,
    sample: Any = None,
    features: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    **kwargs: Any,
) -> ExportReport:
    """Export a trained darts ``RNNModel`` to ``path`` (+ sidecar), proven equal to it.

    ``scaler``: the fitted darts ``Scaler`` of the target series (and ``covariates_scaler`` of
    the future covariates), folded in so the model takes and returns raw values; without them
    the model works in the units darts was trained on. Feature and target names default to the
    training series' components (covariates as ``"<name>[t+1]"``: the point fed at time t
    carries the covariate of t + 1, as darts feeds it). ``sample``: raw points the stream
    will be fed, for realistic parity inputs and the intervals' starting quantiles: a darts
    ``TimeSeries`` of the target (raw, as before the Scaler; its components name the model
    when it was trained on several series), or an array ``[time, F]`` of the features in order.
    Other keyword arguments go to :func:`rnnstream.export.export_module` (``metrics``,
    ``atol``, ``seed``, ``step_graph``, ...); ``metrics["source"]`` records the darts model.

    Raises ExportError (nothing written) for a model that is not an RNNModel, not trained,
    probabilistic (a ``likelihood``: rnnstream exports point forecasts) or built on a custom
    module, for a scaler that is not fitted or not affine, and for names of the wrong count.
    """
    module = _darts_module(model)
    n_targets = int(module.target_size)
    target_components = _target_components(model, sample, n_targets)
    covariate_components = _covariate_components(model, int(module.input_size) - n_targets)
    target_names = _names(targets, target_components, "targets", "the model's targets")
    feature_names = _names(features, target_components + [
        f"{c}{COVARIATE_SUFFIX}" for c in covariate_components],
        "features", "the targets, then the future covariates")
    scaling = _scaling(scaler, covariates_scaler, target_components, covariate_components)
    kwargs["metrics"] = _metrics(kwargs.get("metrics"), model, scaler, covariates_scaler)
    kwargs.setdefault("route", "native")  # darts' module is always rnn -> Linear: no tracing
    from .module import export_module  # torch, onnx: only when exporting

    return export_module(
        _adapter(module), path, sample=_sample_points(sample), features=feature_names,
        targets=target_names, horizon=1, batch_first=True, state_batch_axis=1,
        output_layout="btk", scaling=scaling, **kwargs,
    )


def _metrics(given: Any, model: Any, scaler: Any, covariates_scaler: Any) -> dict[str, Any]:
    """The user's metrics, with where the model came from under ``source``."""
    import darts

    metrics = dict(given or {})
    metrics["source"] = {
        "from": "export_darts",
        "darts": {
            "version": darts.__version__,
            "model": f"RNNModel(model={model.rnn_type_or_module!r})",
            # darts predicts from this many points run from the zero state
            "input_chunk_length": int(model.input_chunk_length),
            "training_length": int(model.training_length),
            "scaler": _describe(scaler),
            "covariates_scaler": _describe(covariates_scaler),
        },
        **dict(metrics.get("source") or {}),
    }
    return metrics


def _describe(scaler: Any) -> str | None:
    return None if scaler is None else type(getattr(scaler, "transformer", scaler)).__name__


def _sample_points(sample: Any) -> Any:
    """export_module's ``sample``: raw points [time, F] (a TimeSeries' values)."""
    values = getattr(sample, "values", None)
    return values(copy=False) if callable(values) else sample


# -- the model --------------------------------------------------------------------------------
def _darts_module(model: Any) -> Any:
    """The trained ``_RNNModule`` inside ``model``; ExportError when it cannot be exported."""
    from darts.models import RNNModel
    from darts.models.forecasting.rnn_model import _RNNModule

    if not isinstance(model, RNNModel):
        raise ExportError(
            f"export_darts exports a darts RNNModel (model='RNN', 'LSTM' or 'GRU'), got "
            f"{type(model).__module__}.{type(model).__qualname__}; for any other torch module "
            "with forward(x, state) -> (y, state) use rnnstream.export.export_module"
        )
    module = model.model
    if module is None or not model._fit_called:
        raise ExportError(
            "the RNNModel has not been trained: call model.fit(series) first, or load a "
            "trained one (RNNModel.load(path)), then export it"
        )
    if type(module) is not _RNNModule:
        raise ExportError(
            f"the RNNModel is built on a custom module ({type(module).__qualname__}); "
            "export_darts rebuilds only darts' own model='RNN', 'LSTM' or 'GRU'. Wrap your "
            "module as forward(x, state) -> (y, state) and use rnnstream.export.export_module"
        )
    _refuse_probabilistic(model, module)
    return module


def _refuse_probabilistic(model: Any, module: Any) -> None:
    # A likelihood model's head gives nr_params values per target (e.g. Gaussian mu, sigma
    # through a softplus) and darts' predict samples from them: no single point forecast to
    # prove the export equal to. Point forecasts only, said plainly.
    if model.likelihood is None and int(module.nr_params) == 1:
        return
    name = type(model.likelihood).__name__ if model.likelihood is not None else "a likelihood"
    raise ExportError(
        f"the RNNModel is probabilistic ({name}, {int(module.nr_params)} parameters per target); "
        "rnnstream exports point forecasts and darts samples this model's. Train it with "
        "likelihood=None (a loss_fn such as the default torch.nn.MSELoss()) to export it"
    )


@functools.cache
def _adapter_type() -> type[torch.nn.Module]:
    import torch

    class DartsRNN(torch.nn.Module):
        """darts' ``_RNNModule`` as ``forward(x, state) -> (y, state)``.

        x: [B, T, F] (batch_first, as darts runs it); state: h, or (h, c) for an LSTM, each
        [layers, B, hidden] (torch's layout); y: [B, T, targets] (darts' [B, T, targets, 1]
        without its nr_params axis, which is 1 for a point forecast).
        """

        def __init__(self, rnn: torch.nn.Module, head: torch.nn.Linear) -> None:
            super().__init__()
            self.rnn = rnn
            self.head = head

        def forward(self, x: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
            out, state = self.rnn(x, state)  # out: [B, T, hidden]
            return self.head(out), state

    return DartsRNN


def _adapter(module: Any) -> torch.nn.Module:
    """A float32 CPU copy of darts' recurrent layers and head, in eval mode (dropout off); the
    user's model is left as it was."""
    rnn = copy.deepcopy(module.rnn).cpu().float().eval()
    head = copy.deepcopy(module.V).cpu().float().eval()
    return _adapter_type()(rnn, head).eval()


# -- names ------------------------------------------------------------------------------------
def _target_components(model: Any, sample: Any, n: int) -> list[str]:
    """The target series' components: the training series', else ``sample``'s, else made up."""
    for series in (getattr(model, "training_series", None), sample):
        components = _components(series)
        if components is not None:
            return _names(components, [], "the series' components", "the model's targets", n)
    return [f"target_{i}" for i in range(n)] if n > 1 else ["target"]


def _covariate_components(model: Any, n: int) -> list[str]:
    components = _components(getattr(model, "future_covariate_series", None))
    if components is not None and len(components) == n:
        return components
    return ["covariate"] if n == 1 else [f"covariate_{i}" for i in range(n)]


def _components(series: Any) -> list[str] | None:
    components = getattr(series, "components", None)
    return None if components is None else [str(c) for c in components]


def _names(given: Sequence[str] | None, default: list[str], what: str, expected: str,
           n: int | None = None) -> list[str]:
    """``given`` (checked: ``n`` distinct non-empty strings) or ``default``."""
    n = len(default) if n is None else n
    names = list(default if given is None else given)
    if (len(names) != n or len(set(names)) != n
            or not all(isinstance(s, str) and s for s in names)):
        raise ExportError(f"{what} {names!r}: expected {n} distinct non-empty names ({expected})")
    return names


# -- scaling ----------------------------------------------------------------------------------
def _scaling(scaler: Any, covariates_scaler: Any, target_components: list[str],
             covariate_components: list[str]) -> dict[str, list[float]] | None:
    """export_module's ``scaling``: the model sees (x - mean) / std and y * std + mean is raw."""
    if scaler is None and covariates_scaler is None:
        return None
    t_mean, t_std = _affine(scaler, target_components, "scaler")
    c_mean, c_std = _affine(covariates_scaler, covariate_components, "covariates_scaler")
    return {
        "feature_mean": t_mean + c_mean,
        "feature_std": t_std + c_std,
        "target_mean": t_mean,
        "target_std": t_std,
    }


def _affine(scaler: Any, components: list[str], what: str) -> tuple[list[float], list[float]]:
    """``(mean, std)`` per component with ``scaler.transform(x) == (x - mean) / std``, measured
    through the Scaler; identity for no scaler (or no components)."""
    n = len(components)
    if scaler is None or n == 0:
        if scaler is not None:
            raise ExportError(f"{what} was given but the model has no such inputs")
        return [0.0] * n, [1.0] * n
    _check_fitted(scaler, what)
    # scaled points beyond feature_range on both sides: a clipping scaler shows itself there
    z = np.array([0.0, 1.0, -3.0, -0.5, 0.25, 2.0, 7.5])[:, None].repeat(n, axis=1)
    raw = _run(scaler, "inverse_transform", z, components, what)
    mean, std = raw[0], raw[1] - raw[0]
    back = _run(scaler, "transform", raw, components, what)
    affine = np.allclose(raw, mean + std * z, rtol=AFFINE_RTOL, atol=0.0)
    if not (affine and np.allclose(back, z, rtol=AFFINE_RTOL, atol=AFFINE_RTOL)
            and np.all(np.isfinite(std)) and np.all(std != 0.0)):
        raise ExportError(
            f"{what} is not an affine map x -> (x - mean) / std (a MinMaxScaler with "
            "clip=True, or a non-linear transformer); rnnstream folds only affine scaling "
            "into the model. Refit with an affine scaler (MinMaxScaler(clip=False), "
            "StandardScaler, ...), or export without it and scale the stream yourself"
        )
    return [float(v) for v in mean], [float(v) for v in std]


def _check_fitted(scaler: Any, what: str) -> None:
    from darts.dataprocessing.transformers import Scaler

    if not isinstance(scaler, Scaler):
        raise ExportError(
            f"{what} must be a fitted darts Scaler (darts.dataprocessing.transformers.Scaler), "
            f"got {type(scaler).__qualname__}"
        )
    if not scaler._fit_called:
        raise ExportError(f"{what} is not fitted: pass the Scaler you called fit (or "
                          "fit_transform) on with the training series")
    fitted = scaler._fitted_params
    if fitted is not None and len(fitted) > 1:
        raise ExportError(
            f"{what} was fitted on {len(fitted)} series (one scaling each, global_fit=False); "
            "a stream has one: fit a Scaler on the series you will stream, or use "
            "Scaler(global_fit=True)"
        )


def _run(scaler: Any, method: str, values: np.ndarray, components: list[str],
         what: str) -> np.ndarray:
    from darts import TimeSeries

    series = TimeSeries.from_values(values.astype(np.float64), columns=components)
    try:
        out = getattr(scaler, method)(series)
    except Exception as exc:  # darts/sklearn raise ValueError, KeyError, ... for a misfit
        raise ExportError(
            f"{what}.{method} failed on a series with the model's components {components}: "
            f"{exc}. Pass the Scaler fitted on the series the model was trained with"
        ) from exc
    return np.asarray(out.values(copy=False), dtype=np.float64)
