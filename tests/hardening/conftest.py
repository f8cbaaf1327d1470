"""Fixtures of the hardening suite: small exported models and the figures the tests reach.

The models are made by ``rnnstream.export.export_model`` (the real exporter, parity proven) from
seeded random forecasters whose normalisation is far from the identity, so a runtime that skipped
it, or applied it twice, would give visibly different numbers.

Each test records the figures it reached (calls tried, kills, RSS growth...) with ``figures``;
they are printed at the end of the run and, when ``RNNSTREAM_HARDENING_FIGURES`` names a file,
written there as JSON (docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnstream.export import export_model
from rnnstream.train.model import Forecaster, ForecasterConfig

FIGURES: dict[str, dict] = {}


@dataclass(frozen=True)
class Exported:
    path: Path
    model: Forecaster

    @property
    def features(self) -> list[str]:
        return list(self.model.config.feature_names)


def make_forecaster(cell: str, features: list[str], targets: list[str], *, hidden: int,
                    layers: int, seed: int) -> Forecaster:
    torch.manual_seed(seed)
    cfg = ForecasterConfig(cell=cell, n_features=len(features), n_targets=len(targets),
                           hidden=hidden, layers=layers, feature_names=features,
                           target_names=targets)
    model = Forecaster(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    nf, nt = len(features), len(targets)
    model.set_normalization(torch.randn(nf, generator=g) * 50,
                            torch.rand(nf, generator=g) * 4 + 0.3,
                            torch.randn(nt, generator=g) * 50,
                            torch.rand(nt, generator=g) * 4 + 0.3)
    return model


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Exported]:
    """``uni``: LSTM, 2 layers, one feature that is also the target (fast path, forecast).
    ``multi``: GRU, features a, b, c and targets a, b (named points, vector predictions)."""
    folder = tmp_path_factory.mktemp("hardening-models")
    out = {}
    for name, cell, feats, targets, layers, seed in (
        ("uni", "lstm", ["v"], ["v"], 2, 7),
        ("multi", "gru", ["a", "b", "c"], ["a", "b"], 1, 8),
    ):
        model = make_forecaster(cell, feats, targets, hidden=8, layers=layers, seed=seed)
        path = folder / f"{name}.onnx"
        export_model(model, path)
        out[name] = Exported(path, model)
    return out


def assert_same_state(a, b) -> None:
    """Bit-for-bit equality of two states (``State`` or name -> array)."""
    assert sorted(a) == sorted(b)
    for name in a:
        x, y = np.asarray(a[name]), np.asarray(b[name])
        assert x.dtype == y.dtype, name
        assert x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), f"state {name!r} differs"


@pytest.fixture(scope="session")
def figures():
    """record(test, **numbers): figures for the report (see the module docstring)."""

    def record(test: str, **numbers) -> None:
        FIGURES.setdefault(test, {}).update(numbers)

    return record


def pytest_terminal_summary(terminalreporter) -> None:
    if not FIGURES:
        return
    terminalreporter.section("hardening figures")
    bad_input = [n for t, n in FIGURES.items() if t.startswith("bad_input.")]
    if bad_input:
        FIGURES["bad_input.total"] = {k: sum(n.get(k, 0) for n in bad_input)
                                      for k in ("calls", "invalid")}
    for test, numbers in FIGURES.items():
        terminalreporter.write_line(f"{test}: " + ", ".join(f"{k}={v}" for k, v in numbers.items()))
    target = os.environ.get("RNNSTREAM_HARDENING_FIGURES")
    if target:
        Path(target).write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")
