"""``rnnstream demo``: the whole job on the built-in sine data, end to end.

train (TBPTT, carried state) -> export (ONNX + parity proof) -> stream (one point per call,
state carried by the runtime, a 90 % interval and live accuracy per point) -> plot. This is what
``make demo`` runs (``make demo-image`` also copies the streaming plot to docs/images/).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rnnstream.runtime.spec import CELLS

from ._common import fail, require_train_extra

COVERAGE = 0.9  # of the streamed predictions' intervals

DESCRIPTION = """\
Run rnnstream end to end on the lesson's sine wave: train an LSTM forecaster with truncated
back-propagation through time, export it to ONNX with a parity proof against torch, stream the
held-out part of the series through the runtime one point at a time (checking every prediction
against one full-sequence torch forward) with a 90 % prediction interval calibrated online and
live accuracy against persistence, forecast ahead by feeding predictions back, and write plots.
Takes well under a minute on 2 CPU cores.
"""

EPILOG = """\
writes:
  DIR/model.pt          checkpoint (weights, config, normalisation, metrics)
  DIR/training.png      loss curves and predicted vs actual on the validation data
  DIR/model.onnx        the exported model (+ model.onnx.json, its contract)
  DIR/streaming.png     streamed predictions with their 90 % interval and a free-running
                        forecast vs the truth

example:
  rnnstream demo --out demo-out && rnnstream inspect demo-out/model.onnx
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, export, stream and plot on the sine data",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo-out", metavar="DIR",
                   help="folder for the checkpoint, model and plots (default: demo-out)")
    p.add_argument("--cell", default="lstm", choices=sorted(CELLS),
                   help="recurrent cell (default: lstm)")
    p.add_argument("--hidden", type=int, default=32, help="hidden size (default: 32)")
    p.add_argument("--epochs", type=int, default=60,
                   help="upper bound on epochs; early stopping usually ends sooner (default: 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--forecast", type=int, default=40, metavar="N",
                   help="steps to forecast ahead after streaming (default: 40)")
    p.add_argument("--no-progress", action="store_true", help="hide the training progress bar")


def run(args: argparse.Namespace) -> int:
    require_train_extra("demo")
    from rnnstream.export import ExportError
    from rnnstream.runtime import RnnStreamError
    from rnnstream.train import DataError, TrainError

    try:
        return _demo(args)
    except (DataError, TrainError, ExportError, RnnStreamError) as exc:
        return fail(str(exc))


def _demo(args: argparse.Namespace) -> int:
    from rnnstream.export import export_model
    from rnnstream.train import ForecasterConfig, TrainConfig, sine_series

    from .train_cmd import train_to_dir

    out = Path(args.out)
    series = sine_series()
    print(f"[1/4] train  {args.cell}, hidden {args.hidden}, on the sine series "
          f"({len(series)} points, 20 per window of pi)")
    trained = train_to_dir(
        series,
        ForecasterConfig(cell=args.cell, hidden=args.hidden),
        TrainConfig(epochs=args.epochs, seed=args.seed, progress=not args.no_progress),
        out,
    )
    model = trained.result.model

    print("[2/4] export with parity proof")
    # parity proven on windows of the training part of the real series, as it will be used
    report = export_model(model, out / "model.onnx", metrics=trained.result.metrics,
                          sample=series.features[:trained.result.validation.start])
    for line in report.summary().splitlines():
        print(f"      {line}")
    print(f"      model: {report.path}  contract: {report.sidecar}")

    print("[3/4] stream the held-out points one at a time through rnnstream.runtime")
    figures = _stream(model, report.path, series.features, trained.result.validation.start,
                      args.forecast)
    print(f"      {figures['steps']} steps, p50 {figures['p50_us']:.1f} us/step with live scores; "
          f"max |runtime - torch full sequence| = {figures['max_diff']:.2e}; "
          f"RMSE vs truth {figures['rmse']:.2e}")
    print(f"      live accuracy: MAE model {figures['mae']:.3g}, persistence "
          f"{figures['persistence_mae']:.3g} ({figures['mae'] / figures['persistence_mae']:.3f}x); "
          f"{COVERAGE:.0%} interval held {figures['coverage']:.1%} of {figures['scored']} points, "
          f"mean width {figures['mean_width']:.3g}")

    print("[4/4] plot")
    plot = _plot(out / "streaming.png", figures)
    print(f"      training plot:  {trained.plot}")
    print(f"      streaming plot: {plot}")
    return 0


def _stream(model, path: Path, values, start: int, horizon: int) -> dict:
    """Prime on the training part, step through the rest with live scores, compare with
    torch, forecast with intervals."""
    import numpy as np
    import torch

    from rnnstream.runtime import Predictor

    series = values[:, 0].astype(np.float32)
    p = Predictor(path, coverage=COVERAGE)
    # the state at the split point in one call through the graph; run_sequence leaves the live
    # scores alone, so they score the held-out points only, from the contract's calibration
    _, state = p.run_sequence(series[:start])
    p.set_state(state)
    held_out = series[start:-1]
    streamed, took = np.empty(len(held_out), dtype=np.float32), []
    band = np.empty((len(held_out), 2))
    for i, point in enumerate(held_out):
        t0 = time.perf_counter_ns()
        streamed[i] = p.step(float(point))
        took.append(time.perf_counter_ns() - t0)
        band[i] = p.interval()
    with torch.inference_mode():  # the reference: one full-sequence forward in torch
        full, _ = model(torch.from_numpy(series[None, :-1, None]))
    reference = full[0, start:, 0].numpy()
    # an interval is scored when the value it was for arrives: all but the latest one
    share, scored = p.realised_coverage()
    accuracy = p.accuracy()
    future, f_lower, f_upper = p.forecast_interval(horizon)
    return {
        "steps": len(held_out),
        "p50_us": float(np.median(took)) / 1000,
        "max_diff": float(np.abs(streamed - reference).max()),
        "rmse": float(np.sqrt(np.mean((streamed - series[start + 1:]) ** 2))),
        "mae": accuracy["model"]["mae"], "persistence_mae": accuracy["persistence"]["mae"],
        "coverage": share, "scored": scored, "asked": COVERAGE,
        "mean_width": float(np.mean(band[:, 1] - band[:, 0])),
        "series": series, "start": start, "streamed": streamed, "band": band,
        "future": np.asarray(future, dtype=np.float32),
        "future_band": np.stack([f_lower, f_upper], axis=1),
    }


def _plot(path: Path, f: dict) -> Path:
    import numpy as np

    from rnnstream.train.plot import agg_figure  # Agg, no pyplot: no global backend switch

    series, start, streamed, future = f["series"], f["start"], f["streamed"], f["future"]
    t = np.arange(len(series))
    banded = "band" in f
    fig = agg_figure(figsize=(10, 6.4 if banded else 4))
    axes = fig.subplots(2 if banded else 1, 1, squeeze=False,
                        gridspec_kw={"height_ratios": [1.6, 1] if banded else [1]})[:, 0]
    ax = axes[0]
    lo = max(0, start - 60)
    ahead = np.arange(len(series), len(series) + len(future))
    if banded:
        ax.fill_between(t[start + 1:], f["band"][:, 0], f["band"][:, 1], color="tab:blue",
                        alpha=0.25, lw=0, label=f"{f['asked']:.0%} interval, calibrated online: "
                        f"held {f['coverage']:.1%} of {f['scored']}")
        fb = f["future_band"]
        ok = np.isfinite(fb).all(axis=1)
        ax.fill_between(ahead, fb[:, 0], fb[:, 1], where=ok, color="tab:orange", alpha=0.2,
                        lw=0, label="forecast interval (validation k-step / 1-step widths)")
    ax.plot(t[lo:], series[lo:], color="0.6", lw=3, label="truth")
    ax.plot(t[start + 1:], streamed, color="tab:blue", lw=1.2,
            label="streamed one step ahead (rnnstream.runtime)")
    ax.plot(ahead, future, color="tab:orange", lw=1.5, ls="--",
            label=f"forecast {len(future)} steps, predictions fed back")
    ax.axvline(start, color="k", lw=0.8, ls=":")
    low, high = float(series[lo:].min()), float(series[lo:].max())
    span = high - low or 1.0
    ax.set_ylim(low - (0.75 if banded else 0.1) * span, high + 0.1 * span)  # room: legend
    ax.text(start, ax.get_ylim()[1], " held-out data starts", va="top", fontsize=8)
    ax.set_xlabel("time step")
    ax.set_title(f"Streaming the exported model: max |runtime - torch| = {f['max_diff']:.1e}, "
                 f"p50 {f['p50_us']:.1f} us/step")
    ax.legend(loc="lower center" if banded else "lower left", ncol=2 if banded else 1,
              fontsize=8)
    if banded:
        _plot_errors(axes[1], f)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _plot_errors(ax, f: dict) -> None:
    """truth - streamed prediction inside the interval's half-widths, misses marked: at the
    series' scale a good model's interval is thinner than the line."""
    import numpy as np

    series, start, streamed, band = f["series"], f["start"], f["streamed"], f["band"]
    t = np.arange(start + 1, len(series))
    err = series[start + 1:] - streamed
    half = (band[:, 1] - band[:, 0]) / 2
    ax.fill_between(t, -half, half, color="tab:blue", alpha=0.25, lw=0,
                    label=f"{f['asked']:.0%} interval (half-width, tracked online)")
    ax.plot(t, err, color="black", lw=0.8, label="truth - streamed prediction")
    miss = np.abs(err) > half
    ax.plot(t[miss], err[miss], "x", color="tab:red", ms=4,
            label=f"outside: {int(miss.sum())} of {len(t)}")
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("time step")
    ax.set_ylabel("error")
    ax.set_title(f"live accuracy: MAE {f['mae']:.2g} (persistence {f['persistence_mae']:.2g}); "
                 f"realised coverage {f['coverage']:.1%} at {f['asked']:.0%}",
                 fontsize="medium")
    ax.margins(y=0.3)
    ax.legend(loc="upper center", ncol=3, fontsize=8)
