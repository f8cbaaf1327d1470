"""The Node example (examples/javascript/stream.js) and the generated `--code js` loop on users'
own modules (export_module): the lesson's RNN, its LSTM variant and a traced custom model (its
sidecar at contract schema 3). Predictions and final state agree with Predictor; with
--coverage, plain and keyed, the lines are byte for byte those of `rnnstream stream`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lesson_models import BYOM, byom_model, sine

from rnnstream.cli.codegen import generate
from rnnstream.export.step_graph import step_path
from rnnstream.runtime.contract import ModelContract, sidecar_path

from ._support import parse_predictions, python_stream, run_js_loop, to_csv
from .test_javascript import ATOL, NODE_TIMEOUT_S, run_js

pytestmark = pytest.mark.js

COVERAGE = "0.9"


@pytest.fixture(scope="module", params=sorted(BYOM))
def byom(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, byom_model(request.param, tmp_path_factory)


def sidecar(model: Path) -> dict:
    return json.loads(Path(sidecar_path(str(model))).read_text())


def streamed(model: Path) -> Path:
    """The graph Predictor streams: the step graph where the export wrote one (recognised
    modules), else the sequence graph (a traced model): the JS side runs the same one."""
    step = Path(step_path(str(model)))
    return step if step.exists() else model


def points(n: int = 120, shift: float = 0.0) -> np.ndarray:
    """Held-out points of the training sine: [n, 1] float32."""
    return (sine(400 + n)[400:] + shift).astype(np.float32)


def rnnstream_stream(model: Path, text: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "rnnstream.cli.main", "stream", str(model),
                           *args], input=text, capture_output=True, text=True,
                          timeout=NODE_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_sidecar_schema(byom) -> None:
    name, model = byom
    doc = sidecar(model)
    assert doc["schema_version"] == (3 if name == "traced_skip" else 1)
    assert doc["cell"] == {"lesson_rnn": "rnn", "lesson_lstm": "lstm",
                           "traced_skip": "custom"}[name]
    assert ModelContract.from_dict(doc).fingerprint == doc["fingerprint"]


def test_stream_matches_runtime(node: str, byom, tmp_path: Path) -> None:
    """Every graph the export wrote (the step graph only for recognised modules) streams in
    onnxruntime-node what Predictor streams, final state included."""
    name, model = byom
    step = Path(step_path(str(model)))
    assert step.exists() == (name != "traced_skip")
    pts = points()
    py, py_state = python_stream(model, pts)
    for path in [model, step] if step.exists() else [model]:
        dump = tmp_path / f"{path.name}.state.json"
        done = run_js(node, path, to_csv(pts), "-", "--dump-state", str(dump))
        js = parse_predictions(done.stdout)
        print(f"{name} {path.name}: max |js - python| = {float(np.max(np.abs(js - py))):.3g}")
        np.testing.assert_allclose(js, py, atol=ATOL, rtol=0)
        snapshot = json.loads(dump.read_text())
        assert snapshot["fingerprint"] == sidecar(model)["fingerprint"]
        assert sorted(snapshot["states"]) == sorted(py_state)
        for state, value in py_state.items():
            np.testing.assert_allclose(np.array(snapshot["states"][state], np.float32), value,
                                       atol=ATOL, rtol=0)


def test_coverage_lines_equal_rnnstream_stream(node: str, byom) -> None:
    """One stream, CSV with the header naming the feature: the same lines as the CLI's,
    intervals finite from the first point (the contract's calibration from the sample)."""
    _, model = byom
    feature = sidecar(model)["features"][0]
    text = to_csv(points(80), header=[feature])
    js = run_js(node, streamed(model), text, "--coverage", COVERAGE)
    cli = rnnstream_stream(model, text, "--coverage", COVERAGE)
    assert js.stdout == cli
    assert np.isfinite([float(v) for v in cli.splitlines()[0].split(",")]).all()


def test_keyed_coverage_lines_equal_rnnstream_stream(node: str, byom) -> None:
    _, model = byom
    feature = sidecar(model)["features"][0]
    keys = [["a", "b"][i] for i in np.random.default_rng(5).integers(0, 2, 80)]
    text = to_csv(points(80, 0.1), keys=keys, header=["key", feature])
    js = run_js(node, streamed(model), text, "--key", "--coverage", COVERAGE)
    cli = rnnstream_stream(model, text, "--key", "key", "--coverage", COVERAGE)
    assert js.stdout == cli
    assert len(cli.splitlines()) == len(keys)


def test_generated_js_loop_predicts_like_runtime(node: str, byom, tmp_path: Path) -> None:
    """The loop with the JavaScript core beside it, as `inspect --code js` says to put it."""
    _, model = byom
    pts = points(25)
    code = generate(ModelContract.from_dict(sidecar(model)), "js", str(model))
    done = run_js_loop(node, code, tmp_path, to_csv(pts))
    want, _ = python_stream(model, pts)
    np.testing.assert_allclose(parse_predictions(done.stdout), want, atol=ATOL, rtol=0)
