"""``training.png``: loss curves, predicted vs actual on the validation data per target, and the
multi-step errors (forecasts fed back, horizons 1..n) against persistence and seasonal naive."""

from __future__ import annotations

from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .loop import TrainResult

__all__ = ["agg_figure", "plot_training"]

MAX_TARGET_PANELS = 3


def plot_training(result: TrainResult, path: str | Path, max_points: int = 300) -> Path:
    """Draw the loss curves and the first ``max_points`` validation steps; returns the path."""
    names = result.model.config.target_names[:MAX_TARGET_PANELS]
    multi = result.metrics.get("multi_step")
    panels = 1 + len(names) + (1 if multi else 0)
    fig = agg_figure(figsize=(9, 3.2 * panels))
    axes = fig.subplots(panels, 1, squeeze=False)
    _plot_losses(axes[0, 0], result)
    for j, name in enumerate(names):
        _plot_validation(axes[j + 1, 0], result, j, name, max_points)
    if multi:
        _plot_multi_step(axes[-1, 0], multi, result.metrics.get("season"))
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
    ax.plot(t, v.persistence[:n, j], color="tab:grey", linestyle=":",
            label="persistence (last value)")
    m = result.metrics
    s = m.get("per_target", {}).get(name)
    figures = (f"MSE {s['mse']:.3g} = {s['vs_persistence']:.3f}x persistence"
               + (f", {s['vs_seasonal_naive']:.3f}x seasonal naive"
                  if s.get("vs_seasonal_naive") is not None else "")) if s else ""
    ax.set_title(f"validation, target {name!r}, {m.get('horizon', 1)} step(s) ahead: {figures}",
                 fontsize="medium")
    ax.set_xlabel(f"time step (first {n} of {v.actual.shape[0]} validation steps)")
    ax.set_ylabel(name)
    ax.margins(y=0.3)  # headroom so the legend does not cover the curves
    ax.legend(loc="upper center", ncol=3, fontsize="small")
    ax.grid(alpha=0.3)


def _plot_multi_step(ax: Axes, multi: dict, season: int | None) -> None:
    steps = multi["steps"]
    ax.plot(steps, multi["model"], "o-", color="tab:red", label="model (predictions fed back)")
    ax.plot(steps, multi["persistence"], "s:", color="tab:grey", label="persistence")
    if multi.get("seasonal_naive"):
        ax.plot(steps, multi["seasonal_naive"], "^--", color="tab:green",
                label=f"seasonal naive (season {season})")
    ax.set_xlabel("steps ahead")
    ax.set_ylabel("MSE / target variance")
    ax.set_title(f"forecasting further ahead: error by horizon over {multi['origins']} "
                 "validation origins", fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
