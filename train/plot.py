"""``training.png``: loss curves and predicted vs actual on the validation data."""

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
    fig = agg_figure(figsize=(9, 3.2 * (1 + len(names))))
    axes = fig.subplots(1 + len(names), 1, squeeze=False)
    _plot_losses(axes[0, 0], result)
    for j, name in enumerate(names):
        _plot_validation(axes[j + 1, 0], result, j, name, max_points)
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
    mode = metrics.get("target_mode", result.model.config.target_mode)
    ax.set_title(f"{result.model.config.cell.upper()} h={result.model.config.hidden}, "
                 f"target mode {mode!r}")
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
    ax.set_title(f"validation, target {name!r}, {result.metrics.get('horizon', 1)} step(s) ahead"
                 f" - MSE model {m['val_mse']:.3g} vs persistence {m['persistence_val_mse']:.3g}")
    ax.set_xlabel(f"time step (first {n} of {v.actual.shape[0]} validation steps)")
    ax.set_ylabel(name)
    ax.margins(y=0.3)  # headroom so the legend does not cover the curves
    ax.legend(loc="upper center", ncol=3, fontsize="small")
    ax.grid(alpha=0.3)
