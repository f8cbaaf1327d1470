"""Forecast quality on real series, measured on the future: rnnstream defaults vs baselines.

27 public series that ship inside ``pmdarima``, ``statsmodels``, ``sktime`` and ``matplotlib``
(nothing is downloaded): short monthly and quarterly series, multiplicative seasons, smooth
high-frequency demand with daily and weekly seasons (24, 48, 168, 336), weekly, cycles, series
with covariates (the target first, the others fed as features), and random walks. For each:
the first 80 % is handed to ``rnnstream.train.train`` with default settings (which itself
validates on the last 20 % of that part), the model is exported with its parity proof, and the
held-out last 20 % is streamed through ``rnnstream.runtime.Predictor`` one point at a time
(primed on the first 80 % in one call). Every one-step prediction is scored against:

* persistence (next = last value), the ratio every figure is divided by;
* seasonal naive (the value one season ago), where the series has a known season;
* statsmodels' Holt-Winters exponential smoothing with the trend (none, additive, damped) and
  season (none, additive, multiplicative where positive) of lowest AIC on the same first 80 %,
  applied to the whole series with those parameters and initial states, so its one-step
  predictions on the held-out part use only the past.

The goal (issue 19): rnnstream at most 1.05x the best of ETS and seasonal naive on every
series, at most 1.02x persistence on random walks, below ETS on the median.

Prediction intervals: the held-out part is also streamed through ``Predictor(...,
coverage=c)`` for c = 0.8, 0.9 and 0.95, each starting at the split from the model's state there
and the half-widths its contract stores (training's validation residuals), then calibrated
online. The table gives the share of held-out values each interval held (``Predictor.
realised_coverage``) and the mean width of the 90 % interval divided by the model's held-out
RMSE: an interval that holds its share only by being wide shows here (Gaussian errors would
give 3.29).

Run: ``python bench/quality.py`` (part of ``make bench``; needs the 'bench' extra:
``pip install 'rnnstream[bench]'``; 3-7 minutes on 2 busy cores). ``--only A,B`` runs those
series, ``--json FILE`` writes the table. Prints one row per series: MSE / persistence MSE of
each forecaster (lower is better), the ratio to the best of ETS and seasonal naive, the modes
chosen and what validated best, then the intervals' realised coverage.
"""

from __future__ import annotations

import argparse
import json
import math
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
    package: str  # where the data ships (nothing is downloaded)
    kind: str
    season: int | None  # for seasonal naive and ETS; training detects its own
    walk: bool = False  # a random walk: judged against persistence, not ETS


def _pmdarima(name: str) -> np.ndarray:
    import pmdarima.datasets as d

    if name == "msft":  # daily closes; the last 1,000 trading days (2013-2017)
        return d.load_msft()["Close"].to_numpy(np.float64)[-1000:]
    return np.asarray(getattr(d, f"load_{name}")(), dtype=np.float64)


def _taylor_hourly() -> np.ndarray:
    """Taylor's half-hourly demand summed to hours: 2,016 points, daily season 24, weekly 168."""
    return _pmdarima("taylor").reshape(-1, 2).sum(axis=1)


def _statsmodels(name: str) -> np.ndarray:
    import pandas as pd
    import statsmodels.api as sm

    if name.startswith("co2"):  # weekly, a few gaps: filled by linear interpolation
        co2 = sm.datasets.co2.load_pandas().data["co2"].interpolate()
        return (co2.resample("MS").mean() if name == "co2_monthly" else co2).to_numpy(np.float64)
    if name == "elnino":  # monthly sea temperatures 1950-2010, one row a year
        return sm.datasets.elnino.load_pandas().data.iloc[:, 1:].to_numpy(np.float64).ravel()
    if name == "nile":
        return sm.datasets.nile.load_pandas().data["volume"].to_numpy(np.float64)
    if name == "sunspots_yearly":
        return sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(np.float64)
    macro = sm.datasets.macrodata.load_pandas().data
    if name == "realgdp":  # with covariates: real consumption and investment
        return macro[["realgdp", "realcons", "realinv"]].to_numpy(np.float64)
    if name == "unemp":
        return macro["unemp"].to_numpy(np.float64)
    if name == "infl":
        return macro["infl"].to_numpy(np.float64)
    raise KeyError(name) from pd.errors.EmptyDataError(name)


def _sktime(name: str) -> np.ndarray:
    import sktime.datasets as d

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "uschange":  # consumption with income, production, savings, unemployment
            y, x = d.load_uschange()
            return np.column_stack([y.to_numpy(np.float64), x.to_numpy(np.float64)])
        loader = {"pbs": d.load_PBS_dataset, "shampoo": d.load_shampoo_sales,
                  "airline": d.load_airline}[name]
        return loader().to_numpy(np.float64)


def _matplotlib(name: str) -> np.ndarray:
    import matplotlib.cbook as cbook

    if name == "goog":  # daily closes 2004-2008
        return cbook.get_sample_data("goog.npz")["price_data"]["adj_close"].astype(np.float64)
    if name == "membrane":  # a neuron's membrane potential, 10,000 samples: the timing case
        path = cbook.get_sample_data("membrane.dat", asfileobj=False)
        return np.fromfile(path, dtype="<f4").astype(np.float64)[:10_000]
    import pandas as pd

    stocks = pd.read_csv(cbook.get_sample_data("Stocks.csv", asfileobj=False), comment="#")
    column = {"ibm": "IBM", "gspc": "^GSPC"}[name.split("_")[1]]
    return stocks[column].dropna().to_numpy(np.float64)


def _load(case: Case) -> np.ndarray:
    """[time, F]: the target in column 0, covariates after it."""
    loader = {"pmdarima": _pmdarima, "statsmodels": _statsmodels, "sktime": _sktime,
              "matplotlib": _matplotlib}[case.package]
    values = _taylor_hourly() if case.name.startswith("taylor_hourly") else loader(
        case.name.removesuffix("_weekly"))
    return values.reshape(len(values), -1)


CASES = [
    # short monthly and quarterly (< 150 points), multiplicative seasons
    Case("airpassengers", "pmdarima", "monthly, multiplicative season, 144", 12),
    Case("austres", "pmdarima", "quarterly, trend, 89", 4),
    Case("woolyrnq", "pmdarima", "quarterly wool production, season, 119", 4),
    Case("shampoo", "sktime", "monthly sales, trend, 36", None),
    Case("lynx", "pmdarima", "annual trappings, ~10-year cycle, 114", None),
    Case("nile", "statsmodels", "annual river flow, level shift, 100", None),
    Case("heartrate", "pmdarima", "heart rate, 150", None),
    # monthly/quarterly with more points
    Case("wineind", "pmdarima", "monthly, season, 176", 12),
    Case("pbs", "sktime", "monthly scripts of one drug, counts 0-14 (44 % zeros), 204", 12),
    Case("co2_monthly", "statsmodels", "monthly CO2, trend + season, 526", 12),
    Case("elnino", "statsmodels", "monthly sea temperature, season, 732", 12),
    Case("unemp", "statsmodels", "quarterly US unemployment, smooth, 203", None),
    Case("infl", "statsmodels", "quarterly US inflation, noisy, 203", None),
    # covariates
    Case("realgdp", "statsmodels", "quarterly US GDP + consumption, investment, 203", None),
    Case("uschange", "sktime", "quarterly consumption change + 4 covariates, 187", None),
    # cycles
    Case("sunspots", "pmdarima", "monthly, 11-year cycle, 2,820", None),
    Case("sunspots_yearly", "statsmodels", "annual, 11-year cycle, 309", None),
    # weekly, daily, smooth high-frequency with long seasons
    Case("co2_weekly", "statsmodels", "weekly CO2, season 52, 2,284", 52),
    Case("taylor", "pmdarima", "half-hourly demand, season 48, 4,032", 48),
    Case("taylor_weekly", "pmdarima", "half-hourly demand, weekly season 336, 4,032", 336),
    Case("taylor_hourly", "pmdarima", "hourly demand, daily season 24, 2,016", 24),
    Case("taylor_hourly_weekly", "pmdarima", "hourly demand, weekly season 168, 2,016", 168),
    Case("membrane", "matplotlib", "neuron membrane potential, 10,000 samples", None),
    # random walks
    Case("msft", "pmdarima", "daily stock price, 1,000", None, walk=True),
    Case("goog", "matplotlib", "daily stock price, 1,047", None, walk=True),
    Case("stocks_ibm", "matplotlib", "monthly stock price, 2000-2017", None, walk=True),
    Case("stocks_gspc", "matplotlib", "monthly S&P 500 index", None, walk=True),
]
COVERAGES = (0.8, 0.9, 0.95)
LONG = 200  # held-out points; a share of 200 at 90 % has a binomial sd of 2.1 points
MIN_JUDGED = 20  # held-out points for a coverage verdict (issue 19's bar)


def stream_model(values: np.ndarray, cut: int, out: Path
                 ) -> tuple[np.ndarray, dict, Path, float]:
    """Train on values[:cut] ([time, F], the target first) with defaults, export, stream
    values[cut-1:] through the runtime; return the one-step predictions of values[cut:, 0],
    training's metrics, the model and the seconds ``train()`` took."""
    from rnnstream.export import export_model
    from rnnstream.runtime import Predictor
    from rnnstream.train import ForecasterConfig, TrainConfig, from_arrays, train

    names = ["value", *(f"x{i}" for i in range(1, values.shape[1]))]
    series = from_arrays(values[:cut], values[:cut, :1], feature_names=names,
                         target_names=["value"])
    start = time.perf_counter()
    result = train(series, ForecasterConfig(), TrainConfig(progress=False))
    seconds = time.perf_counter() - start
    export_model(result.model, out / "model.onnx", metrics=result.metrics)
    p = Predictor(out / "model.onnx")
    primed = np.asarray(p.prime(values[:cut].astype(np.float32))).reshape(cut, -1)
    preds = [float(primed[-1, 0])]  # predicts values[cut]
    preds += [float(np.ravel(p.step(v))[0]) for v in _points(values[cut:-1])]
    return np.asarray(preds), result.metrics, out / "model.onnx", seconds


def _points(values: np.ndarray) -> list:
    """What ``Predictor.step`` takes: a float per point for one feature, else a vector."""
    return [float(v[0]) for v in values] if values.shape[1] == 1 else list(
        values.astype(np.float32))


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
    for v in _points(values[cut - 1:-1]):  # each prediction is for the next value
        p.step(v)
        lower, upper = p.interval()
        widths.append(float(np.ravel(upper)[0] - np.ravel(lower)[0]))
    p.step(_points(values[-1:])[0])  # the last prediction's value arrives: it is scored too
    share, scored = p.realised_coverage()
    return share, scored, float(np.mean(widths))


def ets_predictions(values: np.ndarray, cut: int, season: int | None
                    ) -> tuple[np.ndarray, str]:
    """One-step predictions of values[cut:] from statsmodels' Holt-Winters exponential smoothing
    whose trend (none, additive, damped) and season (none, additive, multiplicative where the
    series is positive) have the lowest AIC on values[:cut]; the model is then run over the
    whole series with the fitted parameters and initial states, so each held-out prediction
    uses only the past. Returns the predictions and the chosen form, e.g. ``"A_d,M"``."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    train = values[:cut]
    seasons: list[str | None] = [None]
    if season and cut >= 2 * season + 2:
        seasons += ["add", *(["mul"] if train.min() > 0 else [])]
    best, best_aic, best_form = None, np.inf, ""
    # long seasons: the initial seasonal states from the first cycles rather than optimised
    # (168+ extra parameters make each fit minutes long); the same for every form compared
    init = "heuristic" if season and season > 24 and cut >= 4 * season else "estimated"
    for trend, damped in ((None, False), ("add", False), ("add", True)):
        for seasonal in seasons:
            with warnings.catch_warnings():  # convergence chatter; the AIC is what counts
                warnings.simplefilter("ignore")
                try:
                    fit = ExponentialSmoothing(
                        train, trend=trend, damped_trend=damped, seasonal=seasonal,
                        seasonal_periods=season if seasonal else None,
                        initialization_method=init if seasonal else "estimated").fit()
                except (ValueError, np.linalg.LinAlgError):
                    continue
            if np.isfinite(fit.aic) and fit.aic < best_aic:
                form = f"{'N' if not trend else 'A_d' if damped else 'A'},"
                form += {None: "N", "add": "A", "mul": "M"}[seasonal]
                best, best_aic, best_form = fit, fit.aic, form
    if best is None:
        raise RuntimeError("no exponential smoothing model could be fitted")
    return _apply(best, values)[cut:], best_form


def _apply(fit, values: np.ndarray) -> np.ndarray:
    """One-step predictions of every point of ``values`` by the fitted Holt-Winters model
    ``fit`` with its parameters and initial states fixed (statsmodels' holtwinters has no
    ``apply``: the same model is set up as 'known' and not optimised)."""
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    m = fit.model
    p = fit.params
    kwargs = {"initial_level": p["initial_level"]}
    if m.trend:
        kwargs["initial_trend"] = p["initial_trend"]
    if m.seasonal:
        kwargs["initial_seasonal"] = p["initial_seasons"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = ExponentialSmoothing(values, trend=m.trend, damped_trend=m.damped_trend,
                                     seasonal=m.seasonal, seasonal_periods=m.seasonal_periods,
                                     initialization_method="known", **kwargs)
        used = ("smoothing_level", *(("smoothing_trend",) if m.trend else ()),
                *(("smoothing_seasonal",) if m.seasonal else ()),
                *(("damping_trend",) if m.damped_trend else ()))
        fixed = {k: float(p[k]) for k in used}
        out = again.fit(optimized=False, **fixed)
    return np.asarray(out.fittedvalues)


def run_case(case: Case, tmp: Path) -> dict:
    values = _load(case)
    target = values[:, 0]
    cut = round(0.8 * len(values))
    truth = target[cut:]
    model, metrics, path, seconds = stream_model(values, cut, tmp)
    persistence = target[cut - 1:-1]
    p_mse = float(np.mean((persistence - truth) ** 2))
    baseline = metrics.get("baseline") or {}
    row = {"series": case.name, "package": case.package, "kind": case.kind,
           "points": len(values), "held_out": len(truth), "train_seconds": round(seconds, 1),
           "model": float(np.mean((model - truth) ** 2)) / p_mse,
           "modes": f"{metrics['input_mode']}/{metrics['target_mode']}",
           "season_detected": metrics.get("season"), "walk": case.walk,
           "validation_best": baseline.get("best"),
           "model_is_baseline": baseline.get("model_is_baseline"),
           "shrink": (metrics.get("candidates", {}).get(
               f"{metrics['input_mode']}/{metrics['target_mode']}") or {}).get("shrink")}
    if case.season:
        snaive = target[cut - case.season:len(target) - case.season]
        row["seasonal_naive"] = float(np.mean((snaive - truth) ** 2)) / p_mse
    ets, form = ets_predictions(target, cut, case.season)
    row["ets"] = float(np.mean((ets - truth) ** 2)) / p_mse
    row["ets_form"] = form
    # the goal: at most 1.05x the best of ETS and seasonal naive (1.02x persistence on walks)
    row["reference"] = 1.0 if case.walk else min(row["ets"], row.get("seasonal_naive", np.inf))
    row["vs_reference"] = row["model"] / row["reference"]
    row["meets_goal"] = row["vs_reference"] <= (1.02 if case.walk else 1.05)
    rmse = float(np.sqrt(np.mean((model - truth) ** 2)))
    # the share of exact predictions: every interval around the prediction holds at least these
    row["exact_share"] = float(np.mean(model == truth))
    for c in COVERAGES:
        share, scored, width = stream_intervals(path, values, cut, c)
        # None: no finite interval was issued (fewer validation residuals than c needs, and
        # too few held-out points to start from the stream's own)
        row[f"coverage_{c:g}"] = share if scored else None
        row[f"width_{c:g}_vs_rmse"] = width / rmse if np.isfinite(width) and rmse > 0 else None
        row[f"scored_{c:g}"] = scored
    validation = (metrics.get("calibration") or {}).get("validation") or {}
    row["validation_coverage"] = (validation.get("realised") or {}).get("value")
    return row


def coverage_verdict(row: dict) -> str:
    """"yes" when the realised coverage at every level in COVERAGES is within two binomial
    standard errors of the asked one, "no" when not, "-" with fewer than MIN_JUDGED points."""
    n = row["held_out"]
    if n < MIN_JUDGED:
        return "-"
    for c in COVERAGES:
        share = row[f"coverage_{c:g}"]
        if share is None or abs(share - c) > 2 * math.sqrt(c * (1 - c) / n):
            return "no"
    return "yes"


def _line(row: dict) -> str:
    snaive = f"{row['seasonal_naive']:.3f}" if "seasonal_naive" in row else "-"
    mark = "" if row["meets_goal"] else " *"
    return (f"{row['series']:<21} {row['points']:>6} {row['model']:>9.3f} {row['ets']:>7.3f} "
            f"{row['ets_form']:<6} {snaive:>7} {row['vs_reference']:>7.3f}  "
            f"{row['modes']:<16} {row['season_detected'] or '-':>6} "
            f"{row['validation_best'] or '-':<14} {row['train_seconds']:>7.1f}{mark}")


def _share(value: float | None) -> str:
    return f"{'-':>7}" if value is None else f"{value:>7.1%}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="run these series only (names, comma-separated)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else None
    unknown = sorted((wanted or set()) - {c.name for c in CASES})
    if unknown:
        parser.error(f"--only: no series named {', '.join(unknown)}; the series are "
                     f"{', '.join(c.name for c in CASES)}")
    cases = [c for c in CASES if wanted is None or c.name in wanted]
    rows = []
    print("one-step MSE on the held-out last 20 %, divided by persistence's (lower is better); "
          "goal: rnnstream <= 1.05x min(ETS, s-naive), <= 1.02x persistence on random walks")
    print(f"{'series':<21} {'points':>6} {'rnnstream':>9} {'ETS':>7} {'form':<6} {'s-naive':>7} "
          f"{'vs best':>7}  {'modes':<16} {'season':>6} {'val best':<14} {'train s':>7}")
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="rnnstream-quality-") as tmp:
            row = run_case(case, Path(tmp))
        rows.append(row)
        print(_line(row), flush=True)
    missed = [r["series"] for r in rows if not r["meets_goal"]]
    ets_ratios = [r["model"] / r["ets"] for r in rows if not r["walk"]]
    print(f"goal met on {len(rows) - len(missed)} of {len(rows)} series"
          + (f"; missed: {', '.join(missed)}" if missed else "")
          + (f"; median rnnstream/ETS {np.median(ets_ratios):.3f}" if ets_ratios else ""))
    print("\nprediction intervals on the held-out part, streamed through Predictor(coverage=c) "
          "(calibrated online from the contract's validation widths): share of values held; "
          "width of the 90 % interval / model RMSE (Gaussian errors: 3.29)")
    print(f"{'series':<21} {'held':>5} {'80 %':>7} {'90 %':>7} {'95 %':>7} {'width/RMSE':>11}  "
          f"{'2 SE':>5}  training's validation replay 80/90/95 %")
    verdicts = {}
    for row in rows:
        shares = " ".join(_share(row[f"coverage_{c:g}"]) for c in COVERAGES)
        replay = row["validation_coverage"] or []
        replay_text = " ".join(f"{v:.1%}" if v is not None else "-" for v in replay) or "-"
        width = row["width_0.9_vs_rmse"]
        verdicts[row["series"]] = verdict = coverage_verdict(row)
        print(f"{row['series']:<21} {row['held_out']:>5} {shares} "
              f"{'-' if width is None else f'{width:.2f}':>11}  {verdict:>5}  {replay_text}")
    print("(-: no finite interval, the validation had fewer residuals than that coverage needs; "
          "2 SE: every coverage within two binomial standard errors of the asked one)")
    judged = [k for k, v in verdicts.items() if v != "-"]
    within = [k for k in judged if verdicts[k] == "yes"]
    off = [f"{k} ({next(r for r in rows if r['series'] == k)['exact_share']:.0%} of its "
           "predictions exact)" for k in judged if k not in within]
    print(f"coverage within two binomial standard errors at {', '.join(map(str, COVERAGES))} on "
          f"{len(within)} of {len(judged)} series with at least {MIN_JUDGED} held-out points"
          + (f"; missed: {', '.join(off)}" if off else ""))
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
