"""The package surface: exports and the message when the 'train' extra is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

import rnnstream.train as rt
from rnnstream.train import ForecasterConfig, TrainConfig, from_arrays, plot_training, train


def test_public_names_exist() -> None:
    for name in rt.__all__:
        assert hasattr(rt, name), name


def test_missing_torch_says_how_to_install() -> None:
    # sys.modules["torch"] = None makes `import torch` fail as if torch were not installed.
    code = "import sys; sys.modules['torch'] = None; import rnnstream.train"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode != 0
    assert "pip install 'rnnstream[train]'" in proc.stderr


def test_plot_with_several_targets(tmp_path: Path) -> None:
    t = np.arange(300) * 0.2
    x = np.stack([np.sin(t), np.cos(t), t % 3], axis=1)
    result = train(from_arrays(x, feature_names=["s", "c", "saw"]), ForecasterConfig(hidden=4),
                   TrainConfig(epochs=1, progress=False))
    path = plot_training(result, tmp_path / "p.png")
    assert path.stat().st_size > 10_000
    assert result.validation.actual.shape == (result.metrics["n_val"], 3)
