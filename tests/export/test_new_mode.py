"""A new state of the MODEL (not of its cell), added through the mode registry alone.

Target mode ``mean`` exists only here: the network predicts the change from an exponentially
weighted mean of each target, kept in the model-level state ``ewm`` ``[B, Tg]``::

    m_t = m_t-1 + a * (y_t - m_t-1)   (y_t the observed targets of x[t], m starts at 0)
    y[t] = m_t + the network's output   (so a network that learnt nothing predicts the EWM)

``a`` is a buffer of the model (``ewm_alpha``, a fitted constant like ETS's recurrence). The
mode is one entry in each stage's table, registered for the test's duration:
``spec.TARGET_MODE_SPECS`` (its state's name, row shape, role facts), ``train.modes.
TORCH_TARGET_MODES`` (its reference and buffer in torch) and ``export.modes.
EXPORT_TARGET_MODES`` (its ONNX nodes: an ``RNN`` with the identity activation in the sequence
graph, one Gemm in the step graph). Nothing else names ``mean`` or ``ewm``: the training loop,
both graph builders, the parity proof (which draws ``ewm`` non-zero from its spec), the
contract, ``Predictor`` and ``rnnstream inspect`` read the tables. Source files changed to add
it: 0 (3 entries, here).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest
import torch
from export_helpers import assert_streams_like
from torch import Tensor

from rnnstream.export import export_model
from rnnstream.export import modes as export_modes
from rnnstream.export.cells import Builder
from rnnstream.export.verify import InputSpec, random_inputs
from rnnstream.runtime import Predictor, spec
from rnnstream.runtime.contract import ModelContract
from rnnstream.train import TrainConfig, train
from rnnstream.train import modes as train_modes
from rnnstream.train.data import from_arrays

ALPHA = 0.3  # the EWM's weight of the newest point
STATE = "ewm"


# -- the torch side -------------------------------------------------------------------------
def ewm_buffers(config) -> dict[str, Tensor]:
    return {"ewm_alpha": torch.full((1,), ALPHA)}


def ewm_reference(model, x: Tensor, m: Tensor | None) -> tuple[Tensor, Tensor]:
    """(x [B,T,F], ewm [B,Tg]) -> (the EWM after each point [B,T,Tg], the new ewm)."""
    assert m is not None  # the Forecaster hands a mode its own state
    a = model.get_buffer("ewm_alpha")
    targets = x.index_select(-1, model.target_index)
    means = []
    for t in range(x.shape[1]):
        m = m + a * (targets[:, t] - m)
        means.append(m)
    return torch.stack(means, dim=1), m


# -- the export side ------------------------------------------------------------------------
def ewm_weights(sd: Mapping[str, np.ndarray], cfg) -> dict[str, np.ndarray]:
    """m' = a y + (1 - a) m as ONNX's RNN (W = a I, R = (1 - a) I, no bias)."""
    a, eye = float(sd["ewm_alpha"][0]), np.eye(cfg.n_targets)
    return {"ewm_W": (a * eye)[None], "ewm_R": ((1 - a) * eye)[None],
            "ewm_B": np.zeros((1, 2 * cfg.n_targets))}


def ewm_sequence(b: Builder, targets: str, cfg, w: Mapping[str, np.ndarray]) -> str:
    """targets [B,T,Tg] -> the EWM [B,T,Tg]; reads ewm_in, writes ewm_out."""
    ax0 = b.const("ewm_axis0", np.array([0], np.int64))
    ax1 = b.const("ewm_axis1", np.array([1], np.int64))
    tbg = b.op("Transpose", [targets], "ewm_x", perm=[1, 0, 2])[0]
    h0 = b.op("Unsqueeze", [spec.state_input_name(STATE), ax0], "ewm_h0")[0]
    b.op("RNN", [tbg, "ewm_W", "ewm_R", "ewm_B", "", h0], ["ewm_Y", "ewm_h"], name="ewm",
         hidden_size=cfg.n_targets, activations=["Affine"], activation_alpha=[1.0],
         activation_beta=[0.0])
    b.op("Squeeze", ["ewm_h", ax0], spec.state_output_name(STATE))
    seq = b.op("Squeeze", ["ewm_Y", ax1], "ewm_seq")[0]
    return b.op("Transpose", [seq], "ewm_ref", perm=[1, 0, 2])[0]


def ewm_step(b: Builder, targets: str, cfg, w: Mapping[str, np.ndarray]) -> str:
    """targets [B,Tg] -> ewm_out = [y, m] @ [W'; R'] [B,Tg], the reference itself."""
    weight = np.concatenate([w["ewm_W"][0].T, w["ewm_R"][0].T], axis=0).astype(np.float32)
    b.op("Concat", [targets, spec.state_input_name(STATE)], "ewm_ym", axis=1)
    return b.op("MatMul", ["ewm_ym", b.const("ewm_WR", weight)],
                spec.state_output_name(STATE))[0]


@pytest.fixture
def mean_mode(monkeypatch):
    """Register target mode ``mean`` in each stage's table for one test."""
    mode = spec.ModeSpec(
        "mean", "predicts the change from an exponentially weighted mean", state=STATE,
        row=lambda f, t, s: (t,), draw="normal", reference=True, schema=5, dims=("Tg",),
        meaning="each target's exponentially weighted mean")
    monkeypatch.setitem(spec.TARGET_MODE_SPECS, "mean", mode)
    monkeypatch.setitem(train_modes.TORCH_TARGET_MODES, "mean",
                        train_modes.TorchTargetMode(ewm_reference, ewm_buffers))
    monkeypatch.setitem(export_modes.EXPORT_TARGET_MODES, "mean",
                        export_modes.ExportTargetMode(ewm_sequence, ewm_step, ewm_weights))
    return mode


def _series(n: int = 300):
    """Two features (a level that wanders and a wave), one target: the level."""
    rng = np.random.default_rng(0)
    t = np.arange(n, dtype=np.float64)
    level = 5 + np.cumsum(rng.normal(0, 0.1, n))
    wave = np.sin(t / 5)
    x = np.stack([wave, level + 0.5 * wave], axis=1)
    return from_arrays(x, x[:, 1], feature_names=["wave", "level"], target_names=["level"])


def test_a_model_level_state_trains_exports_and_streams(mean_mode, tmp_path):
    series = _series()
    result = train(series, None, TrainConfig(epochs=3, target_mode="mean", input_mode="level",
                                             network_min_val=0, progress=False, seed=1))
    model = result.model
    cfg = model.config
    assert (cfg.target_mode, cfg.state_names) == ("mean", ("h", "c", STATE))
    assert model.initial_state(3)[-1].shape == (3, 1)

    # the parity proof: the derived bound, a batch-3 stream, from a non-zero ewm
    report = export_model(model, tmp_path / "model.onnx")
    assert report.parity.baseline == "torch float32"  # the derived bound, not an atol
    assert "ewm_out" in report.parity.cases["stream1000_batch3"]
    assert "ewm_out" in report.step_parity["vs_torch"].cases["stream1000_batch3"]
    _, states = random_inputs(InputSpec.from_model(model), 3, 5, np.random.default_rng(0))
    assert np.abs(states[-1]).min() > 0  # drawn as its spec says ("normal"), not zeros
    assert [s.name for s in report.contract.states] == ["h", "c", STATE]
    assert report.contract.states[-1].row_shape == (1,)
    assert ModelContract.from_json(report.contract.to_json()).target_mode == "mean"
    assert report.contract.required_schema == 5

    # Predictor streams it (step graph) like torch, the ewm carried between calls
    xs = series.features[-80:].astype(np.float32)
    with torch.no_grad():
        want, state = model(torch.from_numpy(xs)[None])
    assert_streams_like(report.path, xs, want.numpy(), 1e-4)
    predictor = Predictor(report.path)
    for row in xs:
        predictor.step(row)
    np.testing.assert_allclose(predictor.get_state()[STATE][0], state[-1][0].numpy(), rtol=1e-5)


def test_the_mode_is_described_from_its_spec(mean_mode):
    """What inspect and the generated loops read: the spec's plain data, no code of its own."""
    assert mean_mode.describe((2,)) == "Tg=2: each target's exponentially weighted mean"
    assert spec.mode_of_state(STATE) is mean_mode
    assert spec.state_names("gru", "level", "mean") == ("h", STATE)
    assert spec.state_row_shape(STATE, layers=1, hidden=4, n_features=3, n_targets=2) == (2,)
