"""The command line on users' own modules (export_module): `inspect` (text, --json, --code) and
`stream --coverage` (one stream, and --key over JSON lines) print what Predictor and StreamPool
compute, for the lesson's RNN, its LSTM variant and a traced (custom) model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lesson_models import BYOM, byom_model, sine

from rnnstream.cli.main import main
from rnnstream.runtime import Predictor, StreamPool
from rnnstream.runtime.contract import ModelContract, sidecar_path

COVERAGE = 0.9
N = 40


@pytest.fixture(scope="module", params=sorted(BYOM))
def byom(request, tmp_path_factory):
    """(name, path of model.onnx), exported once per session."""
    return request.param, byom_model(request.param, tmp_path_factory)


def _stream(model, stdin: str, *extra: str):
    return subprocess.run([sys.executable, "-m", "rnnstream.cli.main", "stream", str(model),
                           *extra], input=stdin, capture_output=True, text=True, timeout=60,
                          check=False)


def _fmt(values) -> str:
    return ",".join(format(float(v), ".9g") for v in values)


def _points(n: int = N, seed: int = 0) -> list[float]:
    """Held-out points of the sine the models were trained on, read back as float32 exactly."""
    return [float(v) for v in np.float32(sine(400 + n)[400:, 0] + 0.01 * seed)]


def _contract(model) -> ModelContract:
    return ModelContract.from_json(Path(sidecar_path(str(model))).read_text())


EXPECTED_TEXT = {
    "lesson_rnn": ["rnnstream rnn forecaster, 1 layer(s) x 32 hidden (schema 1)",
                   "features:    value", "h_out -> h_in  [batch, 1, 32]", "route native",
                   "step graph:  model.step.onnx"],
    "lesson_lstm": ["rnnstream lstm forecaster, 2 layer(s) x 32 hidden (schema 1)",
                    "features:    f0", "h_out -> h_in  [batch, 2, 32]",
                    "c_out -> c_in  [batch, 2, 32]", "route native",
                    "step graph:  model.step.onnx"],
    "traced_skip": ["rnnstream custom model, 1 declared state(s) (schema 3)",
                    "features:    f0", "h_out -> h_in  [batch, 1, 12]", "route traced",
                    "exporter torchscript-trace", "step graph:  (none"],
}


def test_inspect_text_json_and_code(byom, capsys, tmp_path):
    name, model = byom
    contract = _contract(model)
    capsys.readouterr()
    assert main(["inspect", str(model)]) == 0
    text = capsys.readouterr().out
    for expected in [*EXPECTED_TEXT[name], "calibration: levels [0.5", "source sample",
                     "sidecar:     matches", contract.fingerprint]:
        assert expected in text, expected
    assert main(["inspect", str(model), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert ModelContract.from_dict(doc) == contract
    assert doc["schema_version"] == (3 if name == "traced_skip" else 1)
    # the generated plain-onnxruntime loop runs and predicts what Predictor predicts
    assert main(["inspect", str(model), "--code", "python"]) == 0
    loop = tmp_path / "loop.py"
    loop.write_text(capsys.readouterr().out)
    xs = _points(25)
    done = subprocess.run([sys.executable, str(loop)], input="".join(f"{v}\n" for v in xs),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    p = Predictor(model)
    want = [p.step(v) for v in xs]
    got = [float(line) for line in done.stdout.split()]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    for lang in ("js", "web"):
        assert main(["inspect", str(model), "--code", lang]) == 0
        assert f"features [\"{contract.features[0]}\"]" in capsys.readouterr().out


def test_stream_csv_with_header_prints_predictor_lines_with_intervals_from_the_first(byom):
    name, model = byom
    feature = _contract(model).features[0]  # "value" where the user named it, else "f0"
    assert feature == ("value" if name == "lesson_rnn" else "f0")
    xs = _points()
    out = _stream(model, f"{feature}\n" + "".join(f"{v}\n" for v in xs), "--coverage",
                  str(COVERAGE))
    assert out.returncode == 0, out.stderr
    p = Predictor(model, coverage=COVERAGE)
    want = []
    for v in xs:
        y = p.step(v)
        lo, hi = p.interval()
        want.append(_fmt([y, lo, hi]))
    lines = out.stdout.splitlines()
    assert lines == want
    # the sample's calibration in the contract: a finite interval from the very first point
    first = [float(v) for v in lines[0].split(",")]
    assert np.isfinite(first).all()
    assert first[1] < first[0] < first[2]
    assert f"coverage (asked {COVERAGE})" in out.stderr
    plain = _stream(model, f"{feature}\n" + "".join(f"{v}\n" for v in xs))
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines() == [line.split(",")[0] for line in want]


def test_key_json_lines_for_two_streams_equal_a_pool(byom):
    _, model = byom
    feature = _contract(model).features[0]
    a, b = _points(30, seed=0), _points(30, seed=7)
    order = [k for k in np.random.default_rng(3).permutation(["a"] * 30 + ["b"] * 30)]
    values = {"a": iter(a), "b": iter(b)}
    rows = [(str(k), next(values[k])) for k in order]
    text = "".join(json.dumps({"stream": k, feature: v}) + "\n" for k, v in rows)
    out = _stream(model, text, "--key", "stream", "--coverage", str(COVERAGE))
    assert out.returncode == 0, out.stderr
    pool = StreamPool(model, auto_add=True, coverage=COVERAGE)
    want = []
    for k, v in rows:
        y = pool.step_many([k], np.array([[v]], np.float32))[0]
        lo, hi = pool.interval([k])
        want.append(f"{k}," + _fmt([y[0], lo[0, 0], hi[0, 0]]))
    assert out.stdout.splitlines() == want
    assert np.isfinite([float(v) for v in want[0].split(",")[1:]]).all()
    assert "live scores (2 streams" in out.stderr
