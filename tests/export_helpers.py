"""Shared helpers of the export tests: models with non-trivial normalisation, three opinions."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx.reference import ReferenceEvaluator

from rnnstream.runtime.contract import CELL_STATES, state_input_name, state_output_name
from rnnstream.train.model import Forecaster, ForecasterConfig

ATOL = 1e-5


def make_model(cell: str, layers: int = 1, ft: int = 1, *, hidden: int = 16, seed: int = 0,
               delta_index: list[int] | None = None, n_targets: int | None = None) -> Forecaster:
    """A random forecaster with deliberately non-trivial normalisation (means far from 0)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t = n_targets or ft
    cfg = ForecasterConfig(
        cell=cell, n_features=ft, n_targets=t, hidden=hidden, layers=layers,
        target_mode="delta" if delta_index is not None else "level",
        target_index=delta_index or [],
    )
    model = Forecaster(cfg).eval()
    model.set_normalization(rng.uniform(-20, 20, ft), rng.uniform(0.2, 5, ft),
                            rng.uniform(-20, 20, t), rng.uniform(0.2, 5, t))
    return model


def inputs(model: Forecaster, batch: int, time: int, seed: int = 1):
    """Raw x at the model's scale and a random non-zero initial state."""
    rng = np.random.default_rng(seed)
    mean, std = model.x_mean.numpy(), model.x_std.numpy()
    x = (mean + std * rng.standard_normal((batch, time, mean.size))).astype(np.float32)
    shape = (batch, model.config.layers, model.config.hidden)
    states = tuple(rng.uniform(-0.9, 0.9, shape).astype(np.float32)
                   for _ in CELL_STATES[model.config.cell])
    return x, states


def feeds(cell: str, x, states) -> dict:
    out = {"x": x}
    out.update({state_input_name(s): v for s, v in zip(CELL_STATES[cell], states, strict=True)})
    return out


def output_names(cell: str) -> list[str]:
    return ["y", *(state_output_name(s) for s in CELL_STATES[cell])]


def torch_opinion(model: Forecaster, x, states) -> dict[str, np.ndarray]:
    with torch.no_grad():
        y, nxt = model(torch.from_numpy(x), tuple(torch.from_numpy(s) for s in states))
    names = output_names(model.config.cell)
    return dict(zip(names, [t.numpy() for t in (y, *nxt)], strict=True))


def ort_opinion(graph: onnx.ModelProto, cell: str, x, states) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    names = output_names(cell)
    return dict(zip(names, sess.run(names, feeds(cell, x, states)), strict=True))


def reference_opinion(graph: onnx.ModelProto, cell: str, x, states) -> dict[str, np.ndarray]:
    names = output_names(cell)
    got = ReferenceEvaluator(graph).run(names, feeds(cell, x, states))
    return dict(zip(names, got, strict=True))


def disagreements(opinions: dict[str, dict[str, np.ndarray]], atol: float = ATOL) -> list[str]:
    """Every (pair, output) whose max difference exceeds atol, e.g. 'torch vs onnxruntime: y 3e-2'.

    With three opinions, the odd one out is the one named in both failing pairs.
    """
    found = []
    for (a, oa), (b, ob) in itertools.combinations(opinions.items(), 2):
        for name in oa:
            diff = float(np.max(np.abs(oa[name].astype(np.float64) - ob[name])))
            if not diff <= atol:
                found.append(f"{a} vs {b}: {name} {diff:.3g}")
    return found


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    return {k: float(np.max(np.abs(a[k].astype(np.float64) - b[k]))) for k in a}


def assert_streams_like(path, x: np.ndarray, want: np.ndarray, atol: float = ATOL) -> None:
    """The exported ``path`` streamed one point at a time, through Predictor and through a
    StreamPool on its step graph, gives ``want`` (torch's predictions for ``x``)."""
    from rnnstream.runtime import Predictor, StreamPool

    stream = Predictor(path)
    got = np.array([stream.step(row) for row in x])
    np.testing.assert_allclose(got.reshape(want.shape), want, atol=atol)
    pool = StreamPool(path, capacity=1)
    assert pool.uses_step_graph
    pool.add("a")
    pooled = np.array([pool.step_many(["a"], row[None])[0] for row in x])
    np.testing.assert_allclose(pooled.reshape(want.shape), want, atol=atol)
