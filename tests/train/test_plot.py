"""Plotting has no global side effects: the matplotlib backend and pyplot's figures stay the
user's (a notebook's inline backend must survive `import rnnstream.train` and a plot)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from rnnstream.cli.demo_cmd import _plot as plot_demo
from rnnstream.train import TrainResult, plot_training

PNG = b"\x89PNG\r\n\x1a\n"


def test_import_keeps_the_backend() -> None:
    code = ("import matplotlib; matplotlib.use('svg'); import rnnstream.train, "
            "rnnstream.cli.demo_cmd; print(matplotlib.get_backend())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    assert proc.stdout.strip() == "svg"


def test_plots_keep_the_backend_and_open_no_pyplot_figure(
        tmp_path: Path, sine_result: TrainResult) -> None:
    old = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        before = plt.get_fignums()
        plot_training(sine_result, tmp_path / "training.png")
        series = np.sin(np.arange(80) * 0.2)
        figures = {"series": series, "start": 40, "streamed": series[41:],
                   "future": series[:5], "max_diff": 1e-7, "p50_us": 6.5}
        plot_demo(tmp_path / "streaming.png", figures)
        band = np.stack([series[41:] - 0.1, series[41:] + 0.1], axis=1)
        future_band = np.full((5, 2), np.inf)  # beyond the stored steps: no interval drawn
        plot_demo(tmp_path / "banded.png", {
            **figures, "band": band, "future_band": future_band, "asked": 0.9,
            "coverage": 0.9, "scored": 38, "mae": 0.01, "persistence_mae": 0.1})
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == before
    finally:
        matplotlib.use(old)
    for name in ("training.png", "streaming.png", "banded.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG, name
