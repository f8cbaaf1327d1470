"""The JavaScript example (examples/javascript/stream.js) against rnnstream's Python runtime.

The same raw series is streamed point by point through ``node stream.js`` and through
:class:`rnnstream.runtime.Predictor` (and, keyed, :class:`rnnstream.runtime.StreamPool`); every
prediction and the final state must agree to ``ATOL``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ._support import (
    JS_DIR,
    Case,
    parse_predictions,
    pool_stream,
    python_stream,
    series,
    to_csv,
)

pytestmark = pytest.mark.js

ATOL = 1e-5
NODE_TIMEOUT_S = 60
STREAM = JS_DIR / "stream.js"


def run_js(node: str, model: Path, text: str, *args: str, check: bool = True):
    done = subprocess.run([node, str(STREAM), str(model), *args], input=text,
                          capture_output=True, text=True, timeout=NODE_TIMEOUT_S, check=False)
    if check and done.returncode != 0:
        pytest.fail(f"stream.js exited {done.returncode}:\n{done.stderr}")
    return done


def test_stream_matches_runtime(node: str, exported: tuple[Case, Path], tmp_path: Path) -> None:
    case, model = exported
    points = series(case)
    dump = tmp_path / "state.json"
    done = run_js(node, model, to_csv(points), "-", "--dump-state", str(dump))
    js = parse_predictions(done.stdout)
    py, py_state = python_stream(model, points)

    assert js.shape == (len(points), case.n_targets)
    diff = float(np.max(np.abs(js - py)))
    print(f"{case.id}: max |js - python| = {diff:.3g} over {js.size} predictions")
    np.testing.assert_allclose(js, py, atol=ATOL, rtol=0)

    snapshot = json.loads(dump.read_text())
    sidecar = json.loads(Path(f"{model}.json").read_text())
    assert snapshot["fingerprint"] == sidecar["fingerprint"]
    assert sorted(snapshot["states"]) == sorted(py_state)
    for name, value in py_state.items():
        js_state = np.array(snapshot["states"][name], dtype=np.float32)
        assert js_state.shape == value.shape
        np.testing.assert_allclose(js_state, value, atol=ATOL, rtol=0)


def test_keyed_streams_match_pool(node: str, exported: tuple[Case, Path], tmp_path: Path) -> None:
    """--key: three streams interleaved at random, each with its own state, against StreamPool."""
    case, model = exported
    names = ["a", "b", "c"]
    keys = [names[i] for i in np.random.default_rng(7).permutation(np.repeat([0, 1, 2], 60))]
    points = series(case, n=len(keys), seed=3)
    dump = tmp_path / "states.json"
    done = run_js(node, model, to_csv(points, keys=keys), "--key", "--dump-state", str(dump))
    js_keys, js = parse_predictions(done.stdout, keyed=True)
    py, py_states = pool_stream(model, keys, points)

    assert js_keys == keys
    print(f"{case.id} keyed: max |js - pool| = {float(np.max(np.abs(js - py))):.3g}")
    np.testing.assert_allclose(js, py, atol=ATOL, rtol=0)
    streams = json.loads(dump.read_text())["streams"]
    assert sorted(streams) == names
    for key, states in py_states.items():
        for name, value in states.items():
            np.testing.assert_allclose(np.array(streams[key][name], np.float32), value,
                                       atol=ATOL, rtol=0)
    # streams really are separate: stream "a" alone gives the same predictions as interleaved
    mine = np.array(keys) == "a"
    alone, _ = python_stream(model, points[mine])
    np.testing.assert_allclose(js[mine], alone, atol=ATOL, rtol=0)


def test_header_maps_columns_by_name(node: str, exported: tuple[Case, Path]) -> None:
    """A header row may reorder the features and add columns the model does not read."""
    case, model = exported
    points = series(case, n=20)
    features = json.loads(Path(f"{model}.json").read_text())["features"]
    shuffled = np.concatenate([points[:, ::-1], np.ones((len(points), 1), np.float32)], axis=1)
    text = to_csv(shuffled, header=[*features[::-1], "timestamp"])
    js = parse_predictions(run_js(node, model, text).stdout)
    py, _ = python_stream(model, points)
    np.testing.assert_allclose(js, py, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3,4,5\n", r"line 1: expected 1 values \(sensor_0\), got 5"),
        ("nope\n", r"line 1: header \[nope\] lacks the features \[sensor_0\]"),
        ("sensor_0\n1\n\nnan\n", r'line 4: feature sensor_0 is "nan", not a finite number'),
    ],
    ids=["too-many-values", "bad-header", "nan"],
)
def test_bad_input_says_which_line(node: str, rnn_model: Path, text: str, message: str) -> None:
    done = run_js(node, rnn_model, text, check=False)
    assert done.returncode == 1
    assert re.search(message, done.stderr), done.stderr


def test_missing_sidecar_is_explained(node: str, rnn_model: Path, tmp_path: Path) -> None:
    lonely = tmp_path / "model.onnx"
    lonely.write_bytes(rnn_model.read_bytes())
    done = run_js(node, lonely, "1\n", check=False)
    assert done.returncode == 1
    assert "cannot read the rnnstream sidecar" in done.stderr
    assert "copy it along with the .onnx file" in done.stderr
