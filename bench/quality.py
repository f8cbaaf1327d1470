"""Forecast quality on real series, measured on the future: rnnstream defaults vs baselines.

For each series (real data that ships inside the ``pmdarima`` package, so nothing is downloaded):
the first 80 % is handed to ``rnnstream.train.train`` with default settings (which itself
validates on the last 20 % of that part), the model is exported with its parity proof, and the
held-out last 20 % is streamed through ``rnnstream.runtime.Predictor`` one point at a time
(primed on the first 80 % in one call). Every one-step prediction is scored against:

* persistence (next = last value), the ratio every figure is divided by;
* seasonal naive (the value one season ago), where the series has a season;
* statsmodels' exponential smoothing (state-space ETS: damped additive trend, additive season
  where there is one), fitted on the same first 80 % and applied to the whole series with the
  same parameters, so its one-step predictions on the held-out part use only the past.

Run: ``python bench/quality.py`` (part of ``make bench``; needs the 'bench' extra:
``pip install 'rnnstream[bench]'``). ``--only NAME`` runs one series, ``--json FILE`` writes the
table. Prints one row per series: MSE / persistence MSE of each forecaster (lower is better).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Case:
    name: str
    kind: str
    season: int | None  # for seasonal naive and ETS; training detects its own


def _load(name: str) -> np.ndarray:
    import pmdarima.datasets as d

    if name == "msft":  # daily closes; the last 1,000 trading days (2013-2017)
        return d.load_msft()["Close"].to_numpy(np.float64)[-1000:]
    return np.asarray(getattr(d, f"load_{name}")(), dtype=np.float64)


CASES = [
    Case("airpassengers", "monthly, trend + season, 144 points", 12),
    Case("austres", "quarterly, trend, 89 points", None),
    Case("wineind", "monthly, season, 176 points", 12),
    Case("taylor", "half-hourly demand, 4,032 points", 48),
    Case("sunspots", "monthly, 11-year cycle, 2,820 points", None),
    Case("msft", "daily stock price (random walk), 1,000 points", None),
]
RANDOM_WALKS = {"msft"}  # "forecastable" means any series but these


def stream_model(values: np.ndarray, cut: int, out: Path) -> tuple[np.ndarray, dict]:
    """Train on values[:cut] with defaults, export, stream values[cut-1:] through the runtime;
    return the one-step predictions of values[cut:] and training's metrics."""
    from rnnstream.export import export_model
    from rnnstream.runtime import Predictor
    from rnnstream.train import ForecasterConfig, TrainConfig, from_arrays, train

    series = from_arrays(values[:cut, None], feature_names=["value"])
    result = train(series, ForecasterConfig(), TrainConfig(progress=False))
    export_model(result.model, out / "model.onnx", metrics=result.metrics)
    p = Predictor(out / "model.onnx")
    primed = p.prime(values[:cut].astype(np.float32))
    preds = [float(primed[-1])]  # predicts values[cut]
    preds += [p.step(float(v)) for v in values[cut:-1]]
    return np.asarray(preds), result.metrics


def ets_predictions(values: np.ndarray, cut: int, season: int | None) -> np.ndarray:
    """One-step predictions of values[cut:] from statsmodels' state-space ETS fitted on [:cut]."""
    from statsmodels.tsa.statespace.exponential_smoothing import ExponentialSmoothing

    kwargs = {"trend": True, "damped_trend": True}
    if season:
        kwargs["seasonal"] = season
    with warnings.catch_warnings():  # convergence chatter; the figure is what counts
        warnings.simplefilter("ignore")
        fitted = ExponentialSmoothing(values[:cut], **kwargs).fit(disp=False)
        applied = fitted.apply(values)
    return np.asarray(applied.fittedvalues)[cut:]


def run_case(case: Case, tmp: Path) -> dict:
    values = _load(case.name)
    cut = round(0.8 * len(values))
    truth = values[cut:]
    start = time.perf_counter()
    model, metrics = stream_model(values, cut, tmp)
    seconds = time.perf_counter() - start
    persistence = values[cut - 1:-1]
    p_mse = float(np.mean((persistence - truth) ** 2))
    row = {"series": case.name, "kind": case.kind, "points": len(values),
           "held_out": len(truth), "train_seconds": round(seconds, 1),
           "model": float(np.mean((model - truth) ** 2)) / p_mse,
           "modes": f"{metrics['input_mode']}/{metrics['target_mode']}",
           "season_detected": metrics.get("season")}
    if case.season:
        snaive = values[cut - case.season:len(values) - case.season]
        row["seasonal_naive"] = float(np.mean((snaive - truth) ** 2)) / p_mse
    row["ets"] = float(np.mean((ets_predictions(values, cut, case.season) - truth) ** 2)) / p_mse
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run one series by name")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if args.only in (None, c.name)]
    rows = []
    print("one-step MSE on the held-out last 20 %, divided by persistence's (lower is better)")
    print(f"{'series':<14} {'points':>6} {'rnnstream':>10} {'ETS':>8} {'s-naive':>8}  "
          f"{'modes':<12} {'train s':>7}")
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="rnnstream-quality-") as tmp:
            row = run_case(case, Path(tmp))
        rows.append(row)
        snaive = f"{row['seasonal_naive']:.3f}" if "seasonal_naive" in row else "-"
        print(f"{row['series']:<14} {row['points']:>6} {row['model']:>10.3f} {row['ets']:>8.3f} "
              f"{snaive:>8}  {row['modes']:<12} {row['train_seconds']:>7.1f}", flush=True)
    forecastable = [r for r in rows if r["series"] not in RANDOM_WALKS]
    wins = sum(r["model"] <= r["ets"] for r in rows)
    print(f"rnnstream at or below ETS on {wins} of {len(rows)} series; worst forecastable ratio "
          f"{max((r['model'] for r in forecastable), default=float('nan')):.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
