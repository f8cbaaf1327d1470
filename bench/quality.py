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

Prediction intervals: the held-out part is also streamed through ``Predictor(...,
coverage=c)`` for c = 0.8, 0.9 and 0.95, each starting at the split from the model's state there
and the half-widths its contract stores (training's validation residuals), then calibrated
online. The table gives the share of held-out values each interval held (``Predictor.
realised_coverage``) and the mean width of the 90 % interval divided by the model's held-out
RMSE: an interval that holds its share only by being wide shows here (Gaussian errors would
give 3.29).

Run: ``python bench/quality.py`` (part of ``make bench``; needs the 'bench' extra:
``pip install 'rnnstream[bench]'``). ``--only NAME`` runs one series, ``--json FILE`` writes the
table. Prints one row per series: MSE / persistence MSE of each forecaster (lower is better),
then the intervals' realised coverage.
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
COVERAGES = (0.8, 0.9, 0.95)
LONG = 200  # held-out points; a share of 200 at 90 % has a binomial sd of 2.1 points


def stream_model(values: np.ndarray, cut: int, out: Path) -> tuple[np.ndarray, dict, Path]:
    """Train on values[:cut] with defaults, export, stream values[cut-1:] through the runtime;
    return the one-step predictions of values[cut:], training's metrics and the model."""
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
    return np.asarray(preds), result.metrics, out / "model.onnx"


def stream_intervals(path: Path, values: np.ndarray, cut: int, coverage: float
                     ) -> tuple[float, int, float]:
    """Stream values[cut-1:] through ``Predictor(path, coverage=coverage)`` whose live scores
    start at the split: ``(realised coverage, intervals scored, mean width)`` over the
    predictions of values[cut:], each scored when its value arrives."""
    from rnnstream.runtime import Predictor

    p = Predictor(path, coverage=coverage)
    _, state = p.run_sequence(values[:cut - 1].astype(np.float32))  # live scores untouched
    p.set_state(state)
    widths = []
    for v in values[cut - 1:-1]:  # each prediction is for the next value, values[cut:]
        p.step(float(v))
        lower, upper = p.interval()
        widths.append(upper - lower)
    p.step(float(values[-1]))  # the last prediction's value arrives: it is scored too
    share, scored = p.realised_coverage()
    return share, scored, float(np.mean(widths))


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
    model, metrics, path = stream_model(values, cut, tmp)
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
    rmse = float(np.sqrt(np.mean((model - truth) ** 2)))
    for c in COVERAGES:
        share, scored, width = stream_intervals(path, values, cut, c)
        # None: no finite interval was issued (fewer validation residuals than c needs, and
        # too few held-out points to start from the stream's own)
        row[f"coverage_{c:g}"] = share if scored else None
        row[f"width_{c:g}_vs_rmse"] = width / rmse if np.isfinite(width) else None
        row[f"scored_{c:g}"] = scored
    validation = (metrics.get("calibration") or {}).get("validation") or {}
    row["validation_coverage"] = (validation.get("realised") or {}).get("value")
    return row


def _share(value: float | None) -> str:
    return f"{'-':>7}" if value is None else f"{value:>7.1%}"


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
    # forecastable one step ahead: a series on which some forecaster here reaches 0.75x
    forecastable = [r for r in rows if min(r["ets"], r.get("seasonal_naive", 9.0)) <= 0.75
                    and r["series"] not in RANDOM_WALKS]
    wins = sum(r["model"] <= r["ets"] for r in rows)
    walks = ", ".join(f"{r['series']} {r['model']:.3f}" for r in rows
                      if r["series"] in RANDOM_WALKS)
    print(f"rnnstream at or below ETS on {wins} of {len(rows)} series; worst ratio on the "
          f"forecastable ones (ETS or seasonal naive <= 0.75: "
          f"{', '.join(r['series'] for r in forecastable)}) "
          f"{max((r['model'] for r in forecastable), default=float('nan')):.3f}; "
          f"random walks: {walks or '-'}")
    print("\nprediction intervals on the held-out part, streamed through Predictor(coverage=c) "
          "(calibrated online from the contract's validation widths): share of values held; "
          "width of the 90 % interval / model RMSE (Gaussian errors: 3.29)")
    print(f"{'series':<14} {'held':>5} {'80 %':>7} {'90 %':>7} {'95 %':>7} {'width/RMSE':>11}  "
          f"training's validation replay 80/90/95 %")
    for row in rows:
        shares = " ".join(_share(row[f"coverage_{c:g}"]) for c in COVERAGES)
        replay = row["validation_coverage"] or []
        replay_text = " ".join(f"{v:.1%}" if v is not None else "-" for v in replay) or "-"
        width = row["width_0.9_vs_rmse"]
        print(f"{row['series']:<14} {row['held_out']:>5} {shares} "
              f"{'-' if width is None else f'{width:.2f}':>11}  {replay_text}")
    print("(-: no finite interval, the validation had fewer residuals than that coverage needs)")
    for label, group in (("long", [r for r in rows if r["held_out"] >= LONG]),
                         ("short", [r for r in rows if r["held_out"] < LONG])):
        gaps = [abs(r[f"coverage_{c:g}"] - c) for r in group for c in COVERAGES
                if r[f"coverage_{c:g}"] is not None]
        if gaps:
            print(f"largest |realised - asked| on the {label} held-out parts "
                  f"({', '.join(r['series'] for r in group)}): {max(gaps) * 100:.1f} points")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
