"""The web page (examples/web) in headless Chromium against rnnstream's Python runtime.

One browser session (examples/web/headless.mjs, driven by playwright-core) loads the page from
a local server on 127.0.0.1 and, through the page's own code (its `window.rnnstream` hook and
its file and CSV controls), streams a held-out series through every cell's model: the sequence
graph on the wasm backend, the step graph on wasm and on WebGL where the browser offers it.
Every prediction and the final state are compared with :class:`rnnstream.runtime.Predictor`.

Tolerance: both sides compute in float32, with different kernels (onnxruntime's x86 build vs
its wasm SIMD build, which orders sums and approximates tanh/sigmoid its own way; WebGL shaders;
and for the sequence graph the fused LSTM/GRU/RNN op vs the step graph's Gemm and elementwise
ops). Each differs from the exact result by a few float32 rounding steps at the scale of the
values it computes, so two of them may differ by ``ULPS`` rounding steps at that scale:
``ULPS * spacing(float32(scale))``, the exporter's own rule for raw outputs
(rnnstream.export.verify.ULPS_Y). The scale of ``y`` is the model's raw scale (largest
|mean| + 4 std over its features and targets, from the sidecar's normalisation): ``y`` is
denormalised from that scale, so its rounding is set there, not by |y| alone. The scale of a
state is max(1, its largest |value|): tanh keeps ``h`` within 1, an LSTM's ``c`` may exceed it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from rnnstream.export.verify import ULPS_Y
from rnnstream.runtime import Predictor
from rnnstream.runtime.contract import ModelContract, sidecar_path
from rnnstream.train.model import Forecaster

from ._support import (
    CASES,
    WEB_DIR,
    Case,
    export,
    make_forecaster,
    python_stream,
    run_headless,
    series,
    serve,
    to_csv,
)

pytestmark = [pytest.mark.js, pytest.mark.web]

ULPS = ULPS_Y
N_POINTS = 200  # held-out points streamed per model and graph
N_MORE = 20  # streamed after the refused inputs: the stream must go on exactly
FORECAST_STEPS = 30


def f32_bound(scale: float) -> float:
    return ULPS * float(np.spacing(np.float32(scale)))


def raw_scale(model: Path) -> float:
    """Largest |mean| + 4 std over the model's raw features and targets (its sidecar)."""
    norm = json.loads(Path(sidecar_path(str(model))).read_text())["normalization"]
    return max(float(np.max(np.abs(norm[f"{k}_mean"]) + 4 * np.abs(norm[f"{k}_std"])))
               for k in ("feature", "target"))


def assert_close_f32(got, want, scale: float, what: str) -> float:
    """|got - want| <= ULPS float32 steps at ``scale``; returns the difference in steps."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    bound = f32_bound(scale)
    diff = float(np.max(np.abs(got - want)))
    assert diff <= bound, (f"{what}: max |browser - python| = {diff:.3g} > {bound:.3g} "
                           f"({ULPS} float32 steps at scale {scale:.3g})")
    return diff / float(np.spacing(np.float32(scale)))


# -- models and their browser runs -----------------------------------------------------------

def forecastable_model() -> Forecaster:
    """An LSTM whose targets are its features (what forecast needs), at the test's scale."""
    case = Case("lstm", n_features=1, n_targets=1, layers=1)
    model = make_forecaster(case, seed=3)
    config = replace(model.config, target_names=list(model.config.feature_names))
    fixed = Forecaster(config).eval()
    fixed.load_state_dict(model.state_dict())
    return fixed


def without_split(folder: Path, out: Path) -> Path:
    """The export in ``folder`` with its step graph's Split nodes written as Slice nodes (same
    weights, same function), and a sidecar naming the new bytes: onnxruntime-web's WebGL
    backend has no Split for opset >= 13. Returns the new step graph's path."""
    out.mkdir()
    step = onnx.load(str(folder / "model.step.onnx"))
    graph = step.graph
    sizes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != "Split":
            nodes.append(node)
            continue
        axis = next(a.i for a in node.attribute if a.name == "axis")
        start = 0
        for name, size in zip(node.output, sizes[node.input[1]], strict=True):
            bounds = [f"{name}_start", f"{name}_end", f"{name}_axis"]
            for b, v in zip(bounds, (start, start + int(size), axis), strict=True):
                graph.initializer.append(numpy_helper.from_array(np.array([v], np.int64), b))
            nodes.append(helper.make_node("Slice", [node.input[0], *bounds], [name]))
            start += int(size)
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(step, full_check=True)
    data = step.SerializeToString()
    (out / "model.step.onnx").write_bytes(data)
    sidecar = json.loads((folder / "model.onnx.json").read_text())
    sidecar["step_model"]["sha256"] = hashlib.sha256(data).hexdigest()
    (out / "model.onnx.json").write_text(json.dumps(sidecar))
    shutil.copy(folder / "model.onnx", out / "model.onnx")
    return out / "model.step.onnx"


@pytest.fixture(scope="module")
def web_run(browser: str, tmp_path_factory):
    """Export the models, serve them, run one browser session over all of them; return
    (results by label, models, points, the screenshot's path)."""
    root = tmp_path_factory.mktemp("web")
    models: dict[str, Path] = {}
    no_split: dict[str, Path] = {}  # step graphs only for WebGL; Python runs models[cell]
    for case in CASES:
        (root / case.cell).mkdir()
        models[case.cell] = export(make_forecaster(case), root / case.cell / "model.onnx")
        no_split[case.cell] = without_split(root / case.cell, root / f"{case.cell}-noSplit")
    (root / "other").mkdir()
    models["other"] = export(make_forecaster(CASES[1], seed=1), root / "other" / "model.onnx")
    (root / "forecast").mkdir()
    models["forecast"] = export(forecastable_model(), root / "forecast" / "model.onnx")
    (root / "garbage.onnx").write_bytes(b"not an onnx model, just text\n" * 20)

    url = lambda p: "/models/" + p.relative_to(root).as_posix()  # noqa: E731
    points = {case.cell: series(case, n=N_POINTS + N_MORE, seed=11) for case in CASES}
    points["forecast"] = series(Case("lstm", 1, 1, 1), n=60, seed=12)

    actions: list[dict] = [{"label": "backends", "call": "backends"}]

    def stream(label: str, model: str, backend: str, pts: np.ndarray) -> None:
        actions.append({"label": f"{label}/load", "call": "load",
                        "args": [{"model": model, "backend": backend}]})
        actions.append({"label": f"{label}/y", "call": "step", "args": [pts.tolist()]})
        actions.append({"label": f"{label}/state", "call": "state"})

    for case in CASES:
        seq, step = models[case.cell], Path(str(models[case.cell])[:-5] + ".step.onnx")
        pts = points[case.cell][:N_POINTS]
        stream(f"{case.cell}/sequence/wasm", url(seq), "wasm", pts)
        stream(f"{case.cell}/step/webgl", url(step), "webgl", pts)
        stream(f"{case.cell}/noSplit/webgl", url(no_split[case.cell]), "webgl", pts)
        stream(f"{case.cell}/step/wasm", url(step), "wasm", pts)  # the stream refused inputs meet

    # Refused inputs, through the page's controls, while the gru step-graph stream is live
    web = {"files": "#model-files"}
    gru = models["gru"]
    actions += [
        {**web, "label": "bad/not-a-model", "paths": [str(root / "garbage.onnx"),
                                                       sidecar_path(str(gru))]},
        {"label": "bad/not-a-model/message", "call": "message"},
        {**web, "label": "bad/other-sidecar", "paths": [str(models["lstm"]),
                                                         sidecar_path(str(models["other"]))]},
        {"label": "bad/other-sidecar/message", "call": "message"},
        {"label": "bad/csv/fill", "fill": "#csv", "text": "time,value\n1,2\n"},
        {"label": "bad/csv", "click": "#csv-stream"},
        {"label": "bad/csv/message", "call": "message"},
        {"label": "bad/info", "call": "info"},
        {"label": "bad/state", "call": "state"},
        {"label": "rate", "fill": "#rate", "text": "0"},  # the CSV as fast as it goes
        {"label": "bad/more", "call": "streamCSV",
         "args": [to_csv(points["gru"][N_POINTS:], header=[f"sensor_{i}" for i in range(3)])]},
        {"label": "bad/state-after", "call": "state"},
    ]

    # forecast, then the screenshot of this stream with its forecast drawn
    stream("forecast", url(models["forecast"]), "wasm", points["forecast"])
    shot = root / "web.png"
    actions += [
        {"label": "forecast/ahead", "call": "forecast", "args": [FORECAST_STEPS]},
        {"label": "idle", "call": "idle"},
        {"label": "chart-box", "call": "chartBox"},
        {"label": "screenshot", "screenshot": str(shot)},
    ]

    server = serve(WEB_DIR, models=root)
    try:
        report = run_headless(browser, {"url": f"http://127.0.0.1:{server.server_port}/",
                                        "actions": actions}, root)
    finally:
        server.shutdown()
        server.server_close()
    return report["results"], models, points, shot


def value(results: dict, label: str):
    r = results[label]
    assert "error" not in r, f"{label}: {r['error']}"
    return r["value"]


def sequence_only(model: Path, folder: Path) -> Path:
    """A copy of ``model`` and its sidecar without the step graph: Predictor then steps the
    sequence graph (it logs that the step graph is missing), as the browser does."""
    folder.mkdir(exist_ok=True)
    copy = folder / model.name
    if not copy.exists():
        shutil.copy(model, copy)
        shutil.copy(sidecar_path(str(model)), sidecar_path(str(copy)))
    return copy


def check_stream(results, label: str, model: Path, pts: np.ndarray, graph: str) -> str:
    """Browser predictions and final state vs Predictor running the same graph; a line of the
    figures."""
    info = value(results, f"{label}/load")
    assert info["graph"] == graph
    got = np.array(value(results, f"{label}/y"), np.float32)
    if graph == "sequence":
        model = sequence_only(model, model.parent / "sequence-only")
    want, want_state = python_stream(model, pts)
    if graph == "sequence":
        assert not Predictor(model).uses_step_graph
    steps_y = assert_close_f32(got, want, raw_scale(model), f"{label} y")
    state = value(results, f"{label}/state")
    assert sorted(state) == sorted(want_state)
    steps_s = 0.0
    for name, expected in want_state.items():
        arr = np.array(state[name]["data"], np.float32).reshape(state[name]["dims"])
        scale = max(1.0, float(np.max(np.abs(expected))))
        steps_s = max(steps_s, assert_close_f32(arr, expected, scale, f"{label} state {name}"))
    return f"{label}: y within {steps_y:.2f}, state within {steps_s:.2f} float32 steps"


# -- the tests --------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=lambda c: c.cell)
def test_sequence_graph_on_wasm_matches_runtime(web_run, case: Case) -> None:
    results, models, points, _ = web_run
    print(check_stream(results, f"{case.cell}/sequence/wasm", models[case.cell],
                       points[case.cell][:N_POINTS], "sequence"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.cell)
def test_step_graph_on_wasm_matches_runtime(web_run, case: Case) -> None:
    results, models, points, _ = web_run
    print(check_stream(results, f"{case.cell}/step/wasm", models[case.cell],
                       points[case.cell][:N_POINTS], "step"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.cell)
def test_step_graph_on_webgl(web_run, case: Case) -> None:
    """Where the browser offers WebGL: the step graph streams there and matches, or it is
    refused for Split alone (onnxruntime-web's WebGL has Split only up to opset 12) and the same
    graph with Slice for Split streams and matches."""
    results, models, points, _ = web_run
    if not value(results, "backends")["webgl2"]:
        pytest.skip("this headless Chromium offers no WebGL")
    pts = points[case.cell][:N_POINTS]
    load = results[f"{case.cell}/step/webgl/load"]
    if "error" not in load:
        print(check_stream(results, f"{case.cell}/step/webgl", models[case.cell], pts, "step"))
        return
    assert "cannot resolve operator 'Split' with opsets: ai.onnx v17" in load["error"], load
    print(f"{case.cell}: step graph refused by WebGL for Split; without Split:")
    print(check_stream(results, f"{case.cell}/noSplit/webgl", models[case.cell], pts, "step"))


def test_refused_inputs_leave_the_stream_as_it_was(web_run) -> None:
    """A file that is not a model, a sidecar of another model (same names and shapes, other
    fingerprint) and a CSV without the model's columns: each shows a message naming the
    problem, and the live stream goes on exactly as if nothing had been tried."""
    results, models, points, _ = web_run
    messages = {k: value(results, f"bad/{k}/message") for k in
                ("not-a-model", "other-sidecar", "csv")}
    assert all(m["kind"] == "error" for m in messages.values()), messages
    assert "garbage.onnx is not an ONNX model" in messages["not-a-model"]["text"]
    assert "the sidecar belongs to another model" in messages["other-sidecar"]["text"]
    assert "fingerprint" in messages["other-sidecar"]["text"]
    assert "lacks the model's features [sensor_0,sensor_1,sensor_2]" in messages["csv"]["text"]

    info = value(results, "bad/info")
    assert (info["graph"], info["backend"]) == ("step", "wasm")
    assert value(results, "bad/state") == value(results, "gru/step/wasm/state")
    assert value(results, "bad/more") == N_MORE
    _, want_state = python_stream(models["gru"], points["gru"])  # 200 + 20, no interruption
    state = value(results, "bad/state-after")
    for name, expected in want_state.items():
        arr = np.array(state[name]["data"], np.float32).reshape(state[name]["dims"])
        assert_close_f32(arr, expected, max(1.0, float(np.max(np.abs(expected)))), name)


def test_forecast_matches_predictor_forecast(web_run) -> None:
    results, models, points, _ = web_run
    model = models["forecast"]
    print(check_stream(results, "forecast", model, points["forecast"], "sequence"))
    predictor = Predictor(model)
    for p in points["forecast"]:
        predictor.step(p)
    want = predictor.forecast(FORECAST_STEPS).reshape(FORECAST_STEPS, 1)
    got = np.array(value(results, "forecast/ahead"), np.float32)
    assert_close_f32(got, want, raw_scale(model), "forecast")


def test_screenshot_shows_the_chart(web_run) -> None:
    """The chart is drawn: pixels of each series' colour inside the chart's box."""
    pil = pytest.importorskip("PIL.Image", reason="checking the screenshot needs Pillow")
    results, _, _, shot = web_run
    value(results, "screenshot")
    box = value(results, "chart-box")
    with pil.open(shot) as image:
        rgb = np.asarray(image.convert("RGB"), np.int16)
    x0, y0 = int(box["x"]), int(box["y"])
    area = rgb[y0:y0 + int(box["height"]), x0:x0 + int(box["width"])]
    colors = {"observed": "#1f5fa8", "predicted": "#e07b00", "forecast": "#2e9e4f"}
    counts = {}
    for name, hexcolor in colors.items():
        target = np.array([int(hexcolor[i:i + 2], 16) for i in (1, 3, 5)])
        counts[name] = int(np.sum(np.max(np.abs(area - target), axis=2) < 40))
    # each line spans tens of steps across a box ~900 px wide: hundreds of pixels, drawn
    # anti-aliased; a blank or half-drawn chart has none of some colour
    print(f"chart {area.shape[1]}x{area.shape[0]} px; pixels per series: {counts}")
    assert all(n >= 100 for n in counts.values()), counts
    background = int(np.sum(np.all(area == 255, axis=2)))
    assert background > area.shape[0] * area.shape[1] // 2, "the chart is not on white"


def test_sidecar_contract_is_what_the_page_reads(web_run) -> None:
    """The page is generic over states: it read each state's names and shape from the sidecar."""
    results, models, _, _ = web_run
    for case in CASES:
        info = value(results, f"{case.cell}/sequence/wasm/load")
        contract = ModelContract.from_json(Path(sidecar_path(str(models[case.cell]))).read_text())
        assert info["states"] == contract.to_dict()["states"]
        assert sorted(info["inputNames"]) == sorted([contract.input["name"],
                                                    *(s.input for s in contract.states)])
