"""Helpers for the embedding tests: models of every cell, exported; the JS example's deps.

The JavaScript tests need ``node`` and ``npm``. Where they are missing the tests are skipped with
the reason, except under CI (the ``CI`` environment variable set), where a missing toolchain is
a failure: CI must prove the embedding example, not silently skip it.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="exporting a model needs torch: pip install 'rnnstream[train]'")

from rnnstream.export import export_model  # noqa: E402
from rnnstream.runtime import Predictor, StreamPool  # noqa: E402
from rnnstream.train.model import Forecaster, ForecasterConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
JS_DIR = REPO / "examples" / "javascript"
NPM_TIMEOUT_S = 300


@dataclass(frozen=True)
class Case:
    """One model to export: covers every cell, multi-layer, multi-feature, multi-target, delta."""

    cell: str
    n_features: int
    n_targets: int
    layers: int
    hidden: int = 8
    target_mode: str = "level"
    target_index: tuple[int, ...] = ()
    input_mode: str = "level"

    @property
    def id(self) -> str:
        return (f"{self.cell}-F{self.n_features}-T{self.n_targets}-L{self.layers}-"
                f"{self.target_mode}" + ("-delta-in" if self.input_mode == "delta" else ""))


CASES = [
    Case("rnn", n_features=1, n_targets=1, layers=2),
    Case("lstm", n_features=2, n_targets=2, layers=2),
    Case("gru", n_features=3, n_targets=2, layers=1, target_mode="delta", target_index=(0, 2)),
    # fed changes: a `last` state [batch, F + 1] beside h and c
    Case("lstm", n_features=2, n_targets=1, layers=1, target_mode="delta", target_index=(1,),
         input_mode="delta"),
]


def make_forecaster(case: Case, seed: int = 0) -> Forecaster:
    """A forecaster with random weights and a non-trivial normalisation (raw units != z-units)."""
    torch.manual_seed(seed)
    config = ForecasterConfig(
        cell=case.cell, n_features=case.n_features, n_targets=case.n_targets,
        hidden=case.hidden, layers=case.layers, target_mode=case.target_mode,
        target_index=list(case.target_index),
        input_mode=case.input_mode,
        feature_names=[f"sensor_{i}" for i in range(case.n_features)],
        target_names=[f"sensor_{i}_next" for i in range(case.n_targets)],
    )
    model = Forecaster(config).eval()
    f, t = case.n_features, case.n_targets
    if case.input_mode == "delta":  # changes of a level near 15 (see series())
        model.set_normalization(np.zeros(f), np.linspace(0.5, 0.8, f), np.linspace(-1, 1, t),
                                np.linspace(0.5, 1, t), np.full(f, 15.0), np.full(f, 3.0))
    else:
        model.set_normalization(np.linspace(10, 20, f), np.linspace(2, 3, f),
                                np.linspace(-5, 5, t), np.linspace(0.5, 4, t))
    return model


def series(case: Case, n: int = 200, seed: int = 1) -> np.ndarray:
    """``n`` raw points [n, F] at the scale of the normalisation above."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    phase = np.arange(case.n_features)[None, :]
    x = 15 + 3 * np.sin(0.1 * t + phase) + 0.5 * rng.standard_normal((n, case.n_features))
    return x.astype(np.float32)


def export(model: Forecaster, path: Path) -> Path:
    """Export with rnnstream's exporter: model + sidecar, after its parity proof."""
    export_model(model, path)
    return path


# -- streaming through the Python runtime ---------------------------------------------

def python_stream(model: Path, points: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Predictions [n, T] and final state {name: [layers, hidden]} from rnnstream's Predictor."""
    predictor = Predictor(model)
    preds = np.stack([np.asarray(predictor.step(p), np.float32).reshape(-1) for p in points])
    return preds, dict(predictor.get_state())


def pool_stream(model: Path, keys: list[str], points: np.ndarray):
    """Predictions [n, T], one stream per key, and final states {key: {name: array}}."""
    pool = StreamPool(model, auto_add=True)
    preds = [np.asarray(pool.step({k: p})[k], np.float32).reshape(-1)
             for k, p in zip(keys, points, strict=True)]
    return np.stack(preds), {k: dict(pool.get_state(k)) for k in dict.fromkeys(keys)}


# -- CSV in, predictions out -----------------------------------------------------------

def to_csv(points: np.ndarray, keys: list[str] | None = None,
           header: list[str] | None = None) -> str:
    # repr of the float64 holding a float32 reads back as exactly that float32, in JS too
    rows = [",".join(repr(float(v)) for v in p) for p in points.astype(np.float64)]
    if keys is not None:
        rows = [f"{k},{r}" for k, r in zip(keys, rows, strict=True)]
    if header is not None:
        rows.insert(0, ",".join(header))
    return "\n".join(rows) + "\n"


def parse_predictions(stdout: str, keyed: bool = False):
    lines = stdout.strip().splitlines()
    if not keyed:
        return np.array([[float(v) for v in line.split(",")] for line in lines], dtype=np.float32)
    keys = [line.split(",", 1)[0] for line in lines]
    values = np.array([[float(v) for v in line.split(",")[1:]] for line in lines], np.float32)
    return keys, values


# -- JavaScript toolchain --------------------------------------------------------------------

def missing_tool(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the JavaScript embedding test may not be skipped")
    pytest.skip(reason)


def install_js_deps() -> None:
    """``npm ci`` from the lock file, once; offline-safe once the npm cache has the packages.

    ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node's install script otherwise downloads optional
    CUDA files from outside the npm registry, which fails offline. The CPU build
    is inside the npm package itself.
    """
    if (JS_DIR / "node_modules" / "onnxruntime-node").is_dir():
        return
    env = {**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"}
    cmd = ["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund"]
    done = subprocess.run(cmd, cwd=JS_DIR, env=env, capture_output=True, text=True,
                          timeout=NPM_TIMEOUT_S, check=False)
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` in {JS_DIR} failed ({done.returncode}):\n"
                    f"{done.stdout}\n{done.stderr}")
