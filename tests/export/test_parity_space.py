"""The model space: briefly trained models, every one exported with default flags.

Every registered cell x hidden {8, 64, 128, 256, 512} x layers {1, 2, 3} once (15 exports per
cell: 60 for rnn, lstm, gru and mingru); the other
factors (features 1/3, targets 1/2, horizon 1/3, input/target modes level/level, level/delta and
delta/delta (delta inputs carry the `last` state), raw scale 1 / 5,000
(prices) / 1e6 (volumes)) are assigned by a covering design so that every value of each appears
with every cell and every hidden size. Each model is trained for one epoch on a short synthetic
series (rnnstream.train.train), so its weights, normalisation and cell states are those of a
real model, not of a random one. The figures are printed at the end of the run (conftest.py).
"""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

from rnnstream.export import export_model
from rnnstream.export import exporter as exporter_module
from rnnstream.train import TrainConfig, train
from rnnstream.train.data import from_arrays
from rnnstream.train.model import CELLS, ForecasterConfig

HIDDEN = (8, 64, 128, 256, 512)
LAYERS = (1, 2, 3)
SCALES = {"unit": (0.0, 1.0), "price": (5000.0, 40.0), "volume": (1e6, 2e5)}  # mean, spread
SERIES_STEPS = 240
# The matrix's streams are shorter than a real export's 1,000 steps (time budget, 2 cores).
MATRIX_STREAM_STEPS = 200


def design() -> list[dict]:
    """Covering design: (cell, hidden, layers) once each; with three layer values per (cell,
    hidden), index sums mod 2 and mod 3 give every value of the other factors in each pair."""
    rows = []
    for ci, cell in enumerate(sorted(CELLS)):
        for hi, hidden in enumerate(HIDDEN):
            for li, layers in enumerate(LAYERS):
                two = (ci + hi + li) % 2
                rows.append({
                    "cell": cell, "hidden": hidden, "layers": layers,
                    "features": (1, 3)[two], "targets": (1, 2)[(ci + li) % 2],
                    "horizon": (1, 3)[(hi + li + 1) % 2],
                    "mode": ("level/level", "level/delta", "delta/delta")[(ci + hi + li) % 3],
                    "scale": tuple(SCALES)[(hi + li) % 3],
                })
    return rows


DESIGN = design()


def test_the_design_covers_every_value_with_every_cell_and_hidden_size():
    size = len(CELLS) * len(HIDDEN) * len(LAYERS)
    assert len(DESIGN) == size
    assert len({(r["cell"], r["hidden"], r["layers"]) for r in DESIGN}) == size
    for factor in ("features", "targets", "horizon", "mode", "scale"):
        values = {r[factor] for r in DESIGN}
        for key in ("cell", "hidden"):
            for k in {r[key] for r in DESIGN}:
                assert {r[factor] for r in DESIGN if r[key] == k} == values, (factor, key, k)


def series(row: dict, seed: int):
    """Seasonal series around the row's scale; targets are the first features (so delta works)."""
    rng = np.random.default_rng(seed)
    mean, spread = SCALES[row["scale"]]
    t = np.arange(SERIES_STEPS)[:, None]
    phase = rng.uniform(0, 2 * np.pi, row["features"])
    x = mean + spread * (np.sin(t / 9 + phase) + 0.1 * rng.standard_normal(
        (SERIES_STEPS, row["features"])))
    targets = list(range(row["targets"] if row["targets"] <= row["features"] else 1))
    return from_arrays(x, x[:, targets], target_index=targets)


def row_id(row: dict) -> str:
    return (f"{row['cell']}-h{row['hidden']}-L{row['layers']}-F{row['features']}-"
            f"T{row['targets']}-H{row['horizon']}-{row['mode'].replace('/', '-')}-{row['scale']}")


@pytest.mark.slow
@pytest.mark.parametrize("row", DESIGN, ids=row_id)
def test_trained_model_exports_with_default_flags(row, tmp_path, monkeypatch, parity_figures):
    start = time.perf_counter()
    for name in ("verify_parity", "verify_step_parity"):
        monkeypatch.setattr(exporter_module, name, functools.partial(
            getattr(exporter_module, name), stream_steps=MATRIX_STREAM_STEPS))
    model_cfg = ForecasterConfig(cell=row["cell"], hidden=row["hidden"], layers=row["layers"])
    input_mode, target_mode = row["mode"].split("/")
    cfg = TrainConfig(epochs=1, progress=False, input_mode=input_mode, target_mode=target_mode,
                      horizon=row["horizon"], seed=row["hidden"] + row["layers"])
    model = train(series(row, seed=row["layers"]), model_cfg, cfg).model
    report = export_model(model, tmp_path / "m.onnx")
    parity = report.parity
    assert parity.failures() == []
    worst = max(((c, o) for c in parity.cases for o in parity.cases[c]),
                key=lambda co: parity.cases[co[0]][co[1]] / parity.bounds[co[0]][co[1]])
    c_max = max((np.float64(parity.bounds[c].get("c_out", 0.0)) for c in parity.bounds),
                default=0.0)
    parity_figures[row_id(row)] = {
        "ort": parity.max_abs_diff, "torch": parity.max_baseline_error,
        "bound": parity.bounds[worst[0]][worst[1]], "used": parity.bound_used,
        "c_max": float(c_max), "seconds": time.perf_counter() - start,
        "worst": f"{worst[0]}:{worst[1]}",
        "ratio": max(parity.cases[c][o] / parity.baseline_error[c][o]
                     for c in parity.cases for o in parity.cases[c]
                     if parity.baseline_error[c][o] > 0),
    }
