"""``training.png``: loss curves, predicted vs actual on the validation data per target (with
the runtime's 90 % interval replayed on it, and the share of values it held), and the
multi-step errors (forecasts fed back, horizons 1..n) against persistence and seasonal naive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .loop import TrainResult
from .quality import BAND_COVERAGE

__all__ = ["agg_figure", "plot_training"]

MAX_TARGET_PANELS = 3


def plot_training(result: TrainResult, path: str | Path, max_points: int = 300) -> Path:
    """Draw the loss curves and the first ``max_points`` validation steps; returns the path."""
    names = result.model.config.target_names[:MAX_TARGET_PANELS]
    multi = result.metrics.get("multi_step")
    banded = result.validation.half_width is not None
    # per target: predictions, and (when there is an interval) the errors against it
    heights = [1.0] + [1.0, *([0.55] if banded else [])] * len(names) + ([1.0] if multi else [])
    fig = agg_figure(figsize=(9, 3.2 * sum(heights)))
    axes = fig.subplots(len(heights), 1, squeeze=False,
                        gridspec_kw={"height_ratios": heights})[:, 0]
    _plot_losses(axes[0], result)
    per = 2 if banded else 1
    for j, name in enumerate(names):
        _plot_validation(axes[1 + per * j], result, j, name, max_points)
        if banded:
            _plot_errors(axes[2 + per * j], result, j, name, max_points)
    if multi:
        _plot_multi_step(axes[-1], multi, result.metrics.get("season"))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def agg_figure(figsize: tuple[float, float]) -> Figure:
    """A figure drawn by Agg, outside pyplot: no global backend switch (a notebook user's
    backend stays theirs), no display needed, and nothing registered in pyplot's global list
    of figures (it is freed with its last reference)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _plot_losses(ax: Axes, result: TrainResult) -> None:
    history, metrics = result.history, result.metrics
    ax.plot(history["epoch"], history["train_loss"], label="train loss")
    ax.plot(history["epoch"], history["val_loss"], label="validation loss")
    best = metrics.get("best_epoch")
    if best:
        ax.axvline(best, color="grey", linestyle=":", label=f"best epoch {best}")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE, normalised units")
    cfg = result.model.config
    ax.set_title(f"{cfg.cell.upper()} h={cfg.hidden}, inputs {cfg.input_mode!r}, "
                 f"targets {cfg.target_mode!r}")
    ax.legend()
    ax.grid(alpha=0.3)


def _plot_validation(ax: Axes, result: TrainResult, j: int, name: str,
                     max_points: int) -> None:
    v = result.validation
    n = min(max_points, v.actual.shape[0])
    t = range(v.start, v.start + n)
    ax.plot(t, v.actual[:n, j], color="black", linewidth=2, alpha=0.6, label="actual")
    ax.plot(t, v.predicted[:n, j], color="tab:red", linestyle="--", label="model")
    _plot_band(ax, result, j, name, n)
    ax.plot(t, v.persistence[:n, j], color="tab:grey", linestyle=":",
            label="persistence (last value)")
    m = result.metrics
    s = m.get("per_target", {}).get(name)
    figures = (f"MSE {s['mse']:.3g} = {s['vs_persistence']:.3g}x persistence"
               + (f", {s['vs_seasonal_naive']:.3g}x seasonal naive"
                  if s.get("vs_seasonal_naive") is not None else "")) if s else ""
    ax.set_title(f"validation, target {name!r}, {m.get('horizon', 1)} step(s) ahead: {figures}",
                 fontsize="medium")
    ax.set_xlabel(f"time step (first {n} of {v.actual.shape[0]} validation steps)")
    ax.set_ylabel(name)
    ax.margins(y=0.45)  # headroom so the legend does not cover the curves
    ax.legend(loc="upper center", ncol=2, fontsize="small")
    ax.grid(alpha=0.3)


def _plot_band(ax: Axes, result: TrainResult, j: int, name: str, n: int,
               errors: bool = False) -> None:
    """The runtime's interval at BAND_COVERAGE around each validation prediction (``errors``:
    around 0, for the panel of actual - predicted), labelled with the share of the validation
    values it held."""
    v = result.validation
    if v.half_width is None:
        return
    t = np.arange(v.start, v.start + n)
    w = v.half_width[:n, j]
    centre = np.zeros(n) if errors else v.predicted[:n, j]
    cal = (result.metrics.get("calibration") or {}).get("validation") or {}
    levels = cal.get("levels") or []
    share = (cal["realised"][name][levels.index(BAND_COVERAGE)]
             if BAND_COVERAGE in levels else None)
    label = f"{BAND_COVERAGE:.0%} interval" + (
        f", held {share:.1%} of the validation values" if share is not None else "")
    ax.fill_between(t, centre - w, centre + w, where=np.isfinite(w), color="tab:red",
                    alpha=0.18, linewidth=0, label=label)


def _plot_errors(ax: Axes, result: TrainResult, j: int, name: str, max_points: int) -> None:
    """actual - predicted on the validation steps inside the interval's band; misses marked."""
    v = result.validation
    if v.half_width is None:
        return
    n = min(max_points, v.actual.shape[0])
    t = np.arange(v.start, v.start + n)
    err = v.actual[:n, j] - v.predicted[:n, j]
    _plot_band(ax, result, j, name, n, errors=True)
    ax.plot(t, err, color="black", linewidth=0.8, label="actual - model")
    miss = np.abs(err) > v.half_width[:n, j]
    ax.plot(t[miss], err[miss], "x", color="tab:red", markersize=4,
            label=f"outside ({int(miss.sum())} of {n} shown)")
    ax.axhline(0, color="grey", linewidth=0.6)
    ax.set_ylabel(f"error of {name}")
    ax.set_title("the runtime's interval (online quantile tracking started from the training "
                 "residuals), replayed on validation", fontsize="small")
    ax.margins(y=0.35)
    ax.legend(loc="upper center", ncol=3, fontsize="x-small")
    ax.grid(alpha=0.3)


def _plot_multi_step(ax: Axes, multi: dict, season: int | None) -> None:
    steps = multi["steps"]
    ax.plot(steps, multi["model"], "o-", color="tab:red", label="model (predictions fed back)")
    ax.plot(steps, multi["persistence"], "s:", color="tab:grey", label="persistence")
    if multi.get("seasonal_naive"):
        ax.plot(steps, multi["seasonal_naive"], "^--", color="tab:green",
                label=f"seasonal naive (season {season})")
    ax.set_xlabel("steps ahead")
    ax.set_yscale("log")  # a good model sits orders of magnitude below persistence
    ax.set_ylabel("MSE / target variance")
    ax.set_title(f"forecasting further ahead: error by horizon over {multi['origins']} "
                 "validation origins", fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
