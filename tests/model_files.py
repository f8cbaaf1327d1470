"""rnnstream model files built from seeded torch forecasters (helpers shared by the tests;
``tests/`` is on sys.path through pytest's ``pythonpath`` setting).

The files are made with ``build_graph`` plus the contract written here, so the runtime tests do
not depend on the exporter's parity step; ``rnnstream.export.export_model`` can replace
``write_model`` once it is stable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper

from rnnstream.export.graph import build_graph
from rnnstream.runtime._integrity import fingerprint as weights_fingerprint
from rnnstream.runtime._integrity import initializers
from rnnstream.runtime.contract import METADATA_KEY, ModelContract
from rnnstream.train.model import Forecaster, ForecasterConfig


def fingerprint(model: onnx.ModelProto, contract: ModelContract) -> str:
    """The real fingerprint (the runtime re-checks it at load)."""
    return weights_fingerprint(initializers(model.SerializeToString()), contract.states)


def make_forecaster(cell="lstm", features=1, targets=1, hidden=8, layers=1, seed=0,
                    target_mode="level") -> Forecaster:
    torch.manual_seed(seed)
    names = [f"f{i}" for i in range(features)]
    cfg = ForecasterConfig(cell=cell, n_features=features, n_targets=targets, hidden=hidden,
                           layers=layers, target_mode=target_mode,
                           target_index=list(range(targets)) if target_mode == "delta" else [],
                           feature_names=names,
                           target_names=names[:targets] if targets <= features else [])
    model = Forecaster(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    model.set_normalization(torch.randn(features, generator=g),
                            torch.rand(features, generator=g) + 0.5,
                            torch.randn(targets, generator=g),
                            torch.rand(targets, generator=g) + 0.5)
    return model


def contract_for(model: Forecaster, graph: onnx.ModelProto) -> ModelContract:
    cfg = model.config
    contract = ModelContract(cell=cfg.cell, layers=cfg.layers, hidden=cfg.hidden,
                             features=list(cfg.feature_names), targets=list(cfg.target_names),
                             target_mode=cfg.target_mode)
    contract.fingerprint = fingerprint(graph, contract)
    return contract


def write_model(model: Forecaster, path: Path, contract: ModelContract | None = None) -> Path:
    graph = build_graph(model)
    contract = contract or contract_for(model, graph)
    helper.set_model_props(graph, {METADATA_KEY: contract.to_json()})
    onnx.save(graph, str(path))
    return path


def torch_run(model: Forecaster, xs: np.ndarray, state=None):
    """Full-sequence torch reference: xs [B, T, F] -> (y [B, T, Tg], state arrays [B, L, H])."""
    with torch.no_grad():
        st = None if state is None else tuple(torch.from_numpy(s) for s in state)
        y, new = model(torch.from_numpy(xs), st)
    return y.numpy(), [s.numpy() for s in new]
