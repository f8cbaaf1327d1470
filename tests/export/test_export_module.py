"""export_module: users' own torch modules get the contract, proven equal to the module itself.

Each model is exported, then streamed 200 points through ``Predictor`` and compared with the
module itself run in float64 and stepped one point a call with its carried state (the way a
user would run it). The bound is the export's own: the derived bound (8 x torch float32's error
+ 8 ulps, :mod:`rnnstream.export.verify`) that the export computed for its 1,000-step stream.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from lesson_models import (
    LessonLSTM,
    LessonRNN,
    SkipConnection,
    ThreeFeatures,
    TimeFirstGRU,
    WithDropout,
    sine,
    train_lesson,
)
from torch import nn

from rnnstream.export import ExportError, export_module
from rnnstream.export.module import probe_layout
from rnnstream.runtime import Predictor, StreamPool
from rnnstream.runtime.contract import ModelContract

STEPS = 200


def stream_bound(report) -> float:
    """The export's derived bound on y for its step-by-step stream case."""
    case = next(c for c in report.parity.bounds if c.startswith("stream"))
    return report.parity.bounds[case]["y"]


def module_stream(module, points: np.ndarray, batch_first: bool = True, state=None
                  ) -> np.ndarray:
    """The module in float64, one point a call, its state carried: [STEPS, K]."""
    m = copy.deepcopy(module).double().eval()
    state = None if state is None else state.double()
    ys = []
    with torch.no_grad():
        for p in points:
            x = torch.from_numpy(p.astype(np.float64))[None, None]  # [1, 1, F]
            y, state = m(x if batch_first else x.transpose(0, 1), state)
            ys.append(y.reshape(-1).numpy())
    return np.stack(ys)


def export_and_stream(module, tmp_path, points, batch_first=True, **kw):
    path = tmp_path / "model.onnx"
    report = export_module(module, path, sample=points, **kw)
    predictor = Predictor(str(path))
    got = np.array([np.atleast_1d(predictor.step(p)) for p in points[:STEPS]])
    want = module_stream(module, points[:STEPS], batch_first, kw.get("state_example"))
    return report, float(np.max(np.abs(got - want))), path


CASES = {
    "lesson_rnn": (lambda: train_lesson(LessonRNN(1, 1, 32, 1), sine()), 1, True, "rnn", {}),
    "lesson_lstm": (lambda: train_lesson(LessonLSTM(1, 1, 32, 2), sine()), 1, True, "lstm",
                    {}),
    "time_first_gru_mlp_head": (lambda: TimeFirstGRU(), 1, False, "gru", {}),
    "dropout": (lambda: WithDropout().train(), 1, True, "lstm", {}),
    "three_features": (lambda: ThreeFeatures(), 3, True, "lstm",
                       {"features": ["a", "b", "c"], "targets": ["a", "b"]}),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_streams_equal_the_module(name, tmp_path):
    make, features, batch_first, cell, kw = CASES[name]
    torch.manual_seed(1)
    module = make()
    was_training = module.training
    points = sine(400, features)
    report, diff, _path = export_and_stream(module, tmp_path, points, batch_first, **kw)
    assert module.training == was_training  # exported in eval mode, left as it was
    bound = stream_bound(report)
    assert diff <= bound, (name, diff, bound)
    contract = report.contract
    assert contract.cell == cell  # recognised: native recurrent ops, step graph
    assert report.step_path is not None
    assert report.step_path.exists()
    assert contract.metrics["source"]["route"] == "native"
    assert contract.calibration is not None  # intervals from the first point
    print(f"export_module[{name}]: onnxruntime vs module float64 {report.parity.max_abs_diff:.3g}"
          f" ({report.parity.bound_used:.0%} of the bound); 200 Predictor steps vs the module "
          f"{diff:.3g} (bound {bound:.3g}); {report.seconds:.2f} s")


def test_traced_module_streams_equal(tmp_path):
    torch.manual_seed(2)
    module = SkipConnection()
    points = sine(300)
    report, diff, path = export_and_stream(module, tmp_path, points)
    assert report.contract.cell == "custom"
    assert [s.name for s in report.contract.states] == ["h"]
    assert diff <= stream_bound(report)
    assert any("traced" in n for n in report.notes)
    # the pool runs the custom model too, equal to the single stream
    pool = StreamPool(str(path))
    pool.add("a")
    pool.add("b")
    ys = [pool.step({"a": float(p[0]), "b": float(-p[0])}) for p in points[:20]]
    single = Predictor(str(path))
    want = [single.step(float(p[0])) for p in points[:20]]
    np.testing.assert_allclose([float(np.ravel(y["a"])[0]) for y in ys], want, rtol=0,
                               atol=1e-6)


def test_lesson_at_raw_values_near_5000(tmp_path):
    """The user trained on scaled values and passes the scaling: the file takes raw values."""
    torch.manual_seed(3)
    raw = sine(400, scale=40.0, offset=5000.0)
    mean, std = float(raw.mean()), float(raw.std())
    module = train_lesson(LessonRNN(1, 1, 32, 2), (raw - mean) / std)
    path = tmp_path / "m.onnx"
    report = export_module(module, path, sample=raw, features=["price"], targets=["price"],
                           scaling={"feature_mean": [mean], "feature_std": [std],
                                    "target_mean": [mean], "target_std": [std]})
    p = Predictor(str(path))
    got = np.array([p.step(float(v)) for v in raw[:STEPS, 0]])
    m = copy.deepcopy(module).double()
    state, want = None, []
    with torch.no_grad():
        for v in raw[:STEPS, 0]:
            y, state = m(torch.tensor([[[(float(v) - mean) / std]]], dtype=torch.float64), state)
            want.append(float(y) * std + mean)
    assert np.max(np.abs(got - np.array(want))) <= stream_bound(report)
    assert report.contract.normalization["feature_mean"] == pytest.approx([mean])
    assert report.contract.features == ["price"]


def test_layout_is_probed_and_said():
    layout, notes = probe_layout(TimeFirstGRU(), 1)
    assert (layout.batch_first, layout.output, layout.state_batch_axes) == (False, "tbk", (1,))
    assert layout.state_rows == ((2, 24),)
    layout, notes = probe_layout(LessonRNN(1, 1, 8, 2), 1)
    assert layout.per_stream
    assert layout.output == "flat_bt"
    assert any("one stream a call" in n for n in notes)


def test_contract_and_sidecar(tmp_path):
    module = LessonLSTM(1, 1, 8, 1)
    report = export_module(module, tmp_path / "m.onnx", sample=sine(200))
    side = json.loads((tmp_path / "m.onnx.json").read_text())
    contract = ModelContract.from_dict(side)
    assert contract == report.contract
    assert contract.features == ["f0"]
    assert contract.targets == ["f0"]
    assert [s.name for s in contract.states] == ["h", "c"]


# -- refusals ---------------------------------------------------------------------------------
class NoState(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(1, 4, batch_first=True)

    def forward(self, x):
        return self.rnn(x)[0]


class DictState(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(1, 4, batch_first=True)
        self.fc = nn.Linear(4, 1)

    def forward(self, x, state):
        out, h = self.rnn(x, None if state is None else state["h"])
        return self.fc(out), {"h": h}


class LastStepOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(1, 4, batch_first=True)
        self.fc = nn.Linear(4, 1)

    def forward(self, x, state):
        out, state = self.rnn(x, state)
        return self.fc(out[:, -1]), state


class MixesTime(nn.Module):
    """A bidirectional layer: y[t] depends on later points (not streamable)."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(1, 4, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(8, 1)

    def forward(self, x, h):
        out, h = self.rnn(x, h)
        return self.fc(out), h


@pytest.mark.parametrize(("module", "match"), [
    (NoState(), r"module\(x, state\) failed"),
    (DictState(), r"state the module returns is a dict"),
    (LastStepOnly(), r"not one prediction per point.*fc\(r_out\)"),
    (MixesTime(), r"mixes time steps or streams"),
    ("not a module", r"expected a torch.nn.Module"),
])
def test_refusals_say_what_to_do(module, match, tmp_path):
    with pytest.raises(ExportError, match=match):
        export_module(module, tmp_path / "m.onnx", features=["v"])
    assert not list(tmp_path.iterdir())  # nothing written


def test_bad_arguments(tmp_path):
    module = LessonLSTM(1, 1, 8, 1)
    with pytest.raises(ExportError, match=r"names 2 input\(s\).*takes 1"):
        export_module(module, tmp_path / "m.onnx", features=["a", "b"], sample=sine(100))
    with pytest.raises(ExportError, match=r"scaling\['feature_std'\] must be positive"):
        export_module(module, tmp_path / "m.onnx", scaling={"feature_std": [0.0]})
    with pytest.raises(ExportError, match="route='native'"):
        export_module(SkipConnection(), tmp_path / "m.onnx", route="native")
    assert not list(tmp_path.iterdir())


# -- other layouts ----------------------------------------------------------------------------
class BatchFirstState(nn.Module):
    """Keeps its state batch-first ([B, L, H]) and refuses a None state."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(2, 10, 2, batch_first=True)
        self.fc = nn.Linear(10, 2)

    def forward(self, x, h):
        out, h = self.rnn(x, h.transpose(0, 1).contiguous())
        return self.fc(out), h.transpose(0, 1)


class HandWrittenCell(nn.Module):
    """No torch recurrent layer: an exponential-smoothing cell written by hand, state [B, H]."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(1, 6)
        self.out = nn.Linear(6, 1)
        self.logit = nn.Parameter(torch.linspace(-2.0, 2.0, 6))

    def forward(self, x, h):
        a = torch.sigmoid(self.logit)
        ys = []
        for t in range(x.shape[1]):
            h = a * h + (1 - a) * torch.tanh(self.inp(x[:, t]))
            ys.append(self.out(h))
        return torch.stack(ys, dim=1), h


def test_state_batch_axis_0_and_no_none(tmp_path):
    module = BatchFirstState()
    example = torch.zeros(1, 2, 10)
    points = sine(300, 2)
    report, diff, _ = export_and_stream(module, tmp_path, points, state_example=example,
                                        state_batch_axis=0)
    assert report.contract.cell == "gru"
    assert diff <= stream_bound(report)


def test_hand_written_cell_is_traced(tmp_path):
    module = HandWrittenCell()
    with pytest.raises(ExportError, match="state_example="):
        export_module(module, tmp_path / "m.onnx", features=["v"])
    points = sine(300)
    report, diff, path = export_and_stream(module, tmp_path, points,
                                           state_example=torch.zeros(1, 6), state_batch_axis=0)
    assert report.contract.cell == "custom"
    assert report.contract.layers == 0
    assert [s.row_shape for s in report.contract.states] == [(6,)]
    assert diff <= stream_bound(report)
    # its Python loop over time unrolls in a trace: traced for one step, primed point by point
    assert report.contract.step_only
    stepped = Predictor(str(path))
    want = [stepped.step(float(v)) for v in points[:30, 0]]
    np.testing.assert_array_equal(Predictor(str(path)).prime(points[:30]), want)
    # a declared state may not take the name of a state rnnstream's own modes carry
    for name in ("last", "cycle", "ets"):
        with pytest.raises(ExportError, match=r"not x, y or cycle, ets, last"):
            export_module(module, tmp_path / "r.onnx", sample=points, state_names=[name],
                          state_example=torch.zeros(1, 6), state_batch_axis=0)


@pytest.mark.slow
def test_large_lesson_lstm_at_raw_scale(tmp_path):
    """The sizes users train: hidden 512, 2 layers, 3 features, raw values near 5,000."""
    torch.manual_seed(4)
    raw = sine(300, 3, scale=40.0, offset=5000.0)
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    module = LessonLSTM(3, 3, 512, 2).eval()
    path = tmp_path / "m.onnx"
    report = export_module(module, path, sample=raw, features=["a", "b", "c"],
                           scaling={"feature_mean": mean.tolist(), "feature_std": std.tolist(),
                                    "target_mean": mean.tolist(), "target_std": std.tolist()})
    assert report.contract.cell == "lstm"
    p = Predictor(str(path))
    got = np.array([p.step(v) for v in raw[:STEPS]])
    want = module_stream(module, (raw[:STEPS] - mean) / std) * std + mean
    assert np.max(np.abs(got - want)) <= stream_bound(report)
    print(f"hidden 512 x 2, 3 features near 5,000: {report.parity.summary()}; "
          f"{report.seconds:.1f} s")
