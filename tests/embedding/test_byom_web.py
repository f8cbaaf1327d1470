"""The web page (examples/web) in headless Chromium on users' own modules (export_module): the
lesson's RNN (sequence and step graph), its LSTM variant and a traced custom model (sequence
graph; contract schema 3), in one browser session, against Predictor on the same graph.

Tolerance as in test_web.py: ULPS float32 steps at the scale y is computed at (the model's raw
scale where its contract carries a normalisation, else max(1, |y|): a traced model computes in
the units it is fed) and at max(1, |state|) for each state.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lesson_models import BYOM, byom_model, sine

from rnnstream.export.step_graph import step_path
from rnnstream.runtime import Predictor
from rnnstream.runtime.contract import ModelContract, sidecar_path

from ._support import WEB_DIR, python_stream, run_headless, serve
from .test_web import assert_close_f32, raw_scale, sequence_only, value

pytestmark = [pytest.mark.js, pytest.mark.web]

N_POINTS = 150
NAMES = sorted(BYOM)


def graphs(name: str) -> list[str]:
    return ["sequence"] if name == "traced_skip" else ["sequence", "step"]


@pytest.fixture(scope="module")
def byom_web_run(browser: str, tmp_path_factory):
    """One browser session streaming every model's graphs on wasm: (results, models, points)."""
    models = {name: byom_model(name, tmp_path_factory) for name in NAMES}
    root = tmp_path_factory.mktemp("byom-web")
    for name, model in models.items():  # the server serves one folder: the files, linked
        (root / name).mkdir()
        for path in (model, Path(sidecar_path(str(model))), Path(step_path(str(model)))):
            if path.exists():
                (root / name / path.name).symlink_to(path)
    pts = (sine(400 + N_POINTS)[400:]).astype(np.float32)
    actions: list[dict] = []
    for name, model in models.items():
        for graph in graphs(name):
            file = model.name if graph == "sequence" else Path(step_path(str(model))).name
            label = f"{name}/{graph}"
            actions += [
                {"label": f"{label}/load", "call": "load",
                 "args": [{"model": f"/models/{name}/{file}", "backend": "wasm"}]},
                {"label": f"{label}/y", "call": "step", "args": [pts.tolist()]},
                {"label": f"{label}/state", "call": "state"},
            ]
    server = serve(WEB_DIR, models=root)
    try:
        report = run_headless(browser, {"url": f"http://127.0.0.1:{server.server_port}/",
                                        "actions": actions}, root)
    finally:
        server.shutdown()
        server.server_close()
    return report["results"], models, pts


@pytest.mark.parametrize(("name", "graph"),
                         [(n, g) for n in NAMES for g in graphs(n)])
def test_page_streams_what_predictor_streams(byom_web_run, name: str, graph: str) -> None:
    results, models, pts = byom_web_run
    model = models[name]
    info = value(results, f"{name}/{graph}/load")
    assert info["graph"] == graph
    contract = ModelContract.from_json(Path(sidecar_path(str(model))).read_text())
    assert info["states"] == contract.to_dict()["states"]  # read from the sidecar
    reference = model
    if graph == "sequence" and Path(step_path(str(model))).exists():
        reference = sequence_only(model, model.parent / "sequence-only")
        assert not Predictor(reference).uses_step_graph
    want, want_state = python_stream(reference, pts)
    got = np.array(value(results, f"{name}/{graph}/y"), np.float32)
    scale = max(1.0, float(np.max(np.abs(want))))
    if contract.normalization:
        scale = max(scale, raw_scale(model))
    steps_y = assert_close_f32(got, want, scale, f"{name}/{graph} y")
    state = value(results, f"{name}/{graph}/state")
    assert sorted(state) == sorted(want_state)
    steps_s = 0.0
    for s, expected in want_state.items():
        arr = np.array(state[s]["data"], np.float32).reshape(state[s]["dims"])
        steps_s = max(steps_s, assert_close_f32(arr, expected,
                                                max(1.0, float(np.max(np.abs(expected)))),
                                                f"{name}/{graph} state {s}"))
    print(f"{name}/{graph}: y within {steps_y:.2f}, state within {steps_s:.2f} float32 steps")
