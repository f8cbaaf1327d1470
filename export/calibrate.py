"""Validation residual quantiles from a sample of the series, for models rnnstream did not train.

A model that ``rnnstream.train`` trained carries ``metrics["calibration"]`` from its validation
range (:func:`rnnstream.train.quality.calibration`), so its intervals are right from the first
point. A model brought from elsewhere (:func:`~rnnstream.export.export_module`,
:func:`~rnnstream.export.wrap_onnx`, darts) gets the same table from the ``sample`` its export
was proven on: the model is run over the sample from the zero state, each prediction ``y[t]`` is
compared with the target ``horizon`` points later, and the split-conformal half-widths of the
absolute residuals (:func:`rnnstream.runtime.live.conformal_half_widths`, the runtime's own
reader of the format) are stored for every target that is also a feature. The first
``warmup`` predictions are left out: they are made from a state that has not yet seen the series.

These residuals are in-sample when the sample is the training data, so the starting width can be
narrow; the runtime's quantile tracking widens it as live errors arrive (docs: "Intervals").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rnnstream.runtime.live import CALIBRATION_LEVELS, conformal_half_widths

__all__ = ["MIN_RESIDUALS", "sample_calibration"]

MIN_RESIDUALS = 20  # fewer residuals than this give no table (the quantiles would mean little)


def sample_calibration(
    predict: Callable[[np.ndarray], np.ndarray],
    sample: np.ndarray,
    features: Sequence[str],
    targets: Sequence[str],
    horizon: int = 1,
    warmup: int | None = None,
) -> dict[str, Any] | None:
    """``metrics["calibration"]`` from ``predict(sample [time, F]) -> [time, T]`` (raw units).

    None when some target is not a feature (its truth is not in the sample) or when fewer than
    :data:`MIN_RESIDUALS` residuals remain after the warm-up (default: a tenth of the sample, at
    most 50 points).
    """
    x = np.asarray(sample, np.float64)
    if any(t not in features for t in targets):
        return None
    n = x.shape[0]
    warmup = min(50, n // 10) if warmup is None else warmup
    pred = np.asarray(predict(x.astype(np.float32)), np.float64).reshape(n, len(targets))
    cols = [list(features).index(t) for t in targets]
    truth = x[horizon:, cols]
    res = np.abs(pred[warmup:n - horizon] - truth[warmup:])
    if res.shape[0] < MIN_RESIDUALS or not np.all(np.isfinite(res)):
        return None
    rows = {t: [conformal_half_widths(res[:, j], CALIBRATION_LEVELS)]
            for j, t in enumerate(targets)}
    return {"levels": list(CALIBRATION_LEVELS), "half_widths": rows,
            "residuals": int(res.shape[0]), "origins": None, "source": "sample"}
