"""Fixtures of the command-line tests: one checkpoint exported by `rnnstream export`."""

from __future__ import annotations

import pytest
from export_helpers import make_model

from rnnstream.cli.main import main
from rnnstream.train.checkpoint import save_checkpoint

METRICS = {"val_mae": 0.0123, "val_rmse": 0.0456}


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """(checkpoint, model.onnx): a 2-layer GRU with 3 features, exported by the CLI."""
    folder = tmp_path_factory.mktemp("cli")
    ckpt = save_checkpoint(folder / "model.pt", make_model("gru", layers=2, ft=3), metrics=METRICS)
    out = folder / "model.onnx"
    assert main(["export", str(ckpt), "--out", str(out)]) == 0
    return ckpt, out
