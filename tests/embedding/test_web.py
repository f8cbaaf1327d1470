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
|mean| + 4 std over its features and targets, from the sidecar's normalisation), or its largest
|y| where that is larger: ``y`` is denormalised from the raw scale (and, for a model fed with
differences, added to the last level), so its rounding is set there, not by |y| alone. The
scale of a state is max(1, its largest |value|): tanh keeps ``h`` within 1, an LSTM's ``c``
may exceed it, and ``last`` holds raw levels. Each comparison runs the same graph on both
sides (Predictor without its step graph for the sequence graph), so the figures measure the
kernels alone; measured, every output agrees within 2 steps (printed with -s).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rnnstream.export.step_graph import step_path
from rnnstream.export.verify import ULPS_Y
from rnnstream.runtime import Predictor
from rnnstream.runtime.contract import ModelContract, sidecar_path
from rnnstream.runtime.errors import ContractError
from rnnstream.train.model import Forecaster

from ._support import (
    BAD_SIDECARS,
    CASES,
    JS_DIR,
    WEB_DIR,
    WEBGL_MISSING,
    Case,
    export,
    make_forecaster,
    python_stream,
    run_headless,
    series,
    serve,
    to_csv,
    webgl_variant,
    write_bad_sidecars,
)

pytestmark = [pytest.mark.js, pytest.mark.web]

ULPS = ULPS_Y
N_POINTS = 200  # held-out points streamed per model and graph
N_MORE = 20  # streamed after the refused inputs: the stream must go on exactly
FORECAST_STEPS = 30
FORECAST = Case("lstm", n_features=1, n_targets=1, layers=1)  # targets = features
LSTM, GRU = CASES[1], CASES[2]
assert (LSTM.cell, GRU.cell) == ("lstm", "gru")


def f32_bound(scale: float) -> float:
    return ULPS * float(np.spacing(np.float32(scale)))


def raw_scale(model: Path) -> float:
    """Largest |mean| + 4 std over the model's raw features and targets (its sidecar)."""
    norm = json.loads(Path(sidecar_path(str(model))).read_text())["normalization"]
    return max(float(np.max(np.abs(norm[f"{k}_mean"]) + 4 * np.abs(norm[f"{k}_std"])))
               for k in ("feature", "target"))


def y_scale(model: Path, y: np.ndarray) -> float:
    """The scale y is computed at: the model's raw scale, or |y| where larger (a model fed with
    differences normalises changes, and adds them to levels of any size)."""
    return max(raw_scale(model), float(np.max(np.abs(y))))


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
    model = make_forecaster(FORECAST, seed=3)
    config = replace(model.config, target_names=list(model.config.feature_names))
    fixed = Forecaster(config).eval()
    fixed.load_state_dict(model.state_dict())
    return fixed


@pytest.fixture(scope="module")
def web_run(browser: str, tmp_path_factory):
    """Export the models, serve them, run one browser session over all of them; return
    (results by label, models, points, the screenshot's path)."""
    root = tmp_path_factory.mktemp("web")
    models: dict[str, Path] = {}
    for_webgl: dict[str, Path] = {}  # step graphs only for WebGL; Python runs models[case.id]
    for case in CASES:
        (root / case.id).mkdir()
        models[case.id] = export(make_forecaster(case), root / case.id / "model.onnx")
        for_webgl[case.id] = webgl_variant(root / case.id, root / f"{case.id}-webgl")
    (root / "other").mkdir()
    models["other"] = export(make_forecaster(LSTM, seed=1), root / "other" / "model.onnx")
    (root / "forecast").mkdir()
    models["forecast"] = export(forecastable_model(), root / "forecast" / "model.onnx")
    (root / "garbage.onnx").write_bytes(b"not an onnx model, just text\n" * 20)

    url = lambda p: "/models/" + p.relative_to(root).as_posix()  # noqa: E731
    points = {case.id: series(case, n=N_POINTS + N_MORE, seed=11) for case in CASES}
    points["forecast"] = series(FORECAST, n=60, seed=12)

    actions: list[dict] = [{"label": "backends", "call": "backends"}]

    def stream(label: str, model: str, backend: str, pts: np.ndarray) -> None:
        actions.append({"label": f"{label}/load", "call": "load",
                        "args": [{"model": model, "backend": backend}]})
        actions.append({"label": f"{label}/y", "call": "step", "args": [pts.tolist()]})
        actions.append({"label": f"{label}/state", "call": "state"})

    for case in CASES:
        seq, step = models[case.id], Path(step_path(str(models[case.id])))
        pts = points[case.id][:N_POINTS]
        stream(f"{case.id}/sequence/wasm", url(seq), "wasm", pts)
        stream(f"{case.id}/step/webgl", url(step), "webgl", pts)
        stream(f"{case.id}/rewritten/webgl", url(for_webgl[case.id]), "webgl", pts)
        stream(f"{case.id}/step/wasm", url(step), "wasm", pts)

    # Refused inputs, through the page's controls, while the GRU's step-graph stream is live
    stream("live", url(Path(step_path(str(models[GRU.id])))), "wasm", points[GRU.id][:N_POINTS])
    web = {"files": "#model-files"}
    gru = models[GRU.id]
    actions += [
        {**web, "label": "bad/not-a-model", "paths": [str(root / "garbage.onnx"),
                                                       sidecar_path(str(gru))]},
        {"label": "bad/not-a-model/message", "call": "message"},
        {**web, "label": "bad/other-sidecar", "paths": [str(models[LSTM.id]),
                                                         sidecar_path(str(models["other"]))]},
        {"label": "bad/other-sidecar/message", "call": "message"},
        {"label": "bad/csv/fill", "fill": "#csv", "text": "time,value\n1,2\n"},
        {"label": "bad/csv", "click": "#csv-stream"},
        {"label": "bad/csv/message", "call": "message"},
        {"label": "bad/info", "call": "info"},
        {"label": "bad/state", "call": "state"},
        {"label": "rate", "fill": "#rate", "text": "0"},  # the CSV as fast as it goes
        {"label": "bad/more", "call": "streamCSV",
         "args": [to_csv(points[GRU.id][N_POINTS:], header=[f"sensor_{i}" for i in range(3)])]},
        {"label": "bad/state-after", "call": "state"},
    ]

    # malformed sidecars: each refused with the message the Node example gives
    for name, path in write_bad_sidecars(models[CASES[0].id], root).items():
        models[f"bad/{name}"] = path
        actions += [{"label": f"sidecar/{name}", "call": "load", "args": [{"model": url(path)}]},
                    {"label": f"sidecar/{name}/message", "call": "message"}]
    actions.append({"label": "sidecar/info", "call": "info"})

    # forecast (intervals at the page's default coverage), then the screenshot of this stream
    # with its interval band and forecast drawn, and the live accuracy
    stream("forecast", url(models["forecast"]), "wasm", points["forecast"])
    shot = root / "web.png"
    actions += [
        {"label": "forecast/scores", "call": "scores"},
        {"label": "forecast/table", "call": "scoresTable"},
        {"label": "forecast/ahead", "call": "forecast", "args": [FORECAST_STEPS]},
        {"label": "idle", "call": "idle"},
        {"label": "chart-box", "call": "chartBox"},
        {"label": "screenshot", "screenshot": str(shot)},
        # the coverage control: a bad value is refused and changes nothing; a new one starts
        # the live scores afresh
        {"label": "coverage/bad", "call": "setCoverage", "args": [1.5]},
        {"label": "coverage/bad/message", "call": "message"},
        {"label": "coverage/kept", "call": "scores"},
        {"label": "coverage/new", "call": "setCoverage", "args": [0.5]},
        {"label": "coverage/new/y", "call": "step", "args": [points["forecast"][:10].tolist()]},
        {"label": "coverage/new/scores", "call": "scores"},
        {"label": "coverage/new/table", "call": "scoresTable"},
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
    steps_y = assert_close_f32(got, want, y_scale(model, want), f"{label} y")
    state = value(results, f"{label}/state")
    assert sorted(state) == sorted(want_state)
    steps_s = 0.0
    for name, expected in want_state.items():
        arr = np.array(state[name]["data"], np.float32).reshape(state[name]["dims"])
        scale = max(1.0, float(np.max(np.abs(expected))))
        steps_s = max(steps_s, assert_close_f32(arr, expected, scale, f"{label} state {name}"))
    return f"{label}: y within {steps_y:.2f}, state within {steps_s:.2f} float32 steps"


# -- the tests --------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_sequence_graph_on_wasm_matches_runtime(web_run, case: Case) -> None:
    results, models, points, _ = web_run
    print(check_stream(results, f"{case.id}/sequence/wasm", models[case.id],
                       points[case.id][:N_POINTS], "sequence"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_step_graph_on_wasm_matches_runtime(web_run, case: Case) -> None:
    results, models, points, _ = web_run
    print(check_stream(results, f"{case.id}/step/wasm", models[case.id],
                       points[case.id][:N_POINTS], "step"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_step_graph_on_webgl(web_run, case: Case) -> None:
    """Where the browser offers WebGL: the step graph streams there and matches, or it is
    refused for an op WebGL lacks (WEBGL_MISSING) and the same graph rewritten without those
    ops streams and matches."""
    results, models, points, _ = web_run
    if not value(results, "backends")["webgl2"]:
        pytest.skip("this headless Chromium offers no WebGL")
    pts = points[case.id][:N_POINTS]
    load = results[f"{case.id}/step/webgl/load"]
    if "error" not in load:
        print(check_stream(results, f"{case.id}/step/webgl", models[case.id], pts, "step"))
        return
    missing = re.search(r"cannot resolve operator '(\w+)' with opsets: ai.onnx v17", load["error"])
    assert missing, load
    assert missing[1] in WEBGL_MISSING, load
    print(f"{case.id}: step graph refused by WebGL for {missing[1]}; rewritten without "
          f"{'/'.join(WEBGL_MISSING)}:")
    print(check_stream(results, f"{case.id}/rewritten/webgl", models[case.id], pts, "step"))


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
    assert value(results, "bad/state") == value(results, "live/state")
    assert value(results, "bad/more") == N_MORE
    _, want_state = python_stream(models[GRU.id], points[GRU.id])  # 200 + 20, no interruption
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
    assert_close_f32(got, want, y_scale(model, want), "forecast")


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
    colors = {"observed": "#1f5fa8", "predicted": "#e07b00", "forecast": "#2e9e4f",
              "band": "#f8dcbc"}  # the interval, from the page's default coverage (0.9)
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
        info = value(results, f"{case.id}/sequence/wasm/load")
        contract = ModelContract.from_json(Path(sidecar_path(str(models[case.id]))).read_text())
        assert info["states"] == contract.to_dict()["states"]
        state = value(results, f"{case.id}/sequence/wasm/state")
        assert {k: v["dims"] for k, v in state.items()} == {
            s.name: list(s.row_shape) for s in contract.states}  # `last`: [F + 1]
        assert sorted(info["inputNames"]) == sorted([contract.input["name"],
                                                    *(s.input for s in contract.states)])


def test_page_shows_live_accuracy_as_python_scores_it(web_run) -> None:
    """The live accuracy beside the forecast (at the page's default coverage, 0.9) is what
    Predictor(coverage=0.9) scores on the same points: persistence's MAE and the counts are
    exact (they depend on the points alone), the model's MAE and the interval within the
    float32 steps that wasm and the CPU build may differ by, carried through the mean."""
    results, models, points, _ = web_run
    model = sequence_only(models["forecast"], models["forecast"].parent / "sequence-only")
    predictor = Predictor(model, coverage=0.9)
    for p in points["forecast"]:
        predictor.step(p)
    (page,) = value(results, "forecast/scores")
    accuracy = {f: {k: np.atleast_1d(v) for k, v in m.items()}
                for f, m in predictor.accuracy().items()}
    n = len(points["forecast"]) - 1  # horizon 1: every point but the first scores one
    assert page["points"] == int(accuracy["model"]["count"][0]) == n
    assert page["persistence"] == float(accuracy["persistence"]["mae"][0])
    assert page["seasonal"] is None  # NaN in JSON: the model stores no season
    bound = f32_bound(y_scale(model, np.array([page["model"]])))
    assert abs(page["model"] - float(accuracy["model"]["mae"][0])) <= bound
    share, scored = (np.atleast_1d(v) for v in predictor.realised_coverage())
    assert page["scored"] == int(scored[0]) > 0
    lower, upper = (np.atleast_1d(v) for v in predictor.interval())
    assert page["width"] == pytest.approx(float(upper[0] - lower[0]), rel=1e-4)
    table = value(results, "forecast/table")
    assert table[0][:3] == ["target", "points", "model MAE"]
    assert table[1][:2] == ["sensor_0", str(n)]
    assert table[1][7] == f"{share[0]:.3f} of {int(scored[0])}"


@pytest.mark.parametrize(("name", "message", "python_refuses"),
                         [(b[0], b[2], b[3]) for b in BAD_SIDECARS],
                         ids=[b[0] for b in BAD_SIDECARS])
def test_both_examples_refuse_a_bad_sidecar_alike(web_run, node: str, name: str, message: str,
                                                 python_refuses: bool) -> None:
    """One table of malformed sidecars (_support.BAD_SIDECARS), both runtimes: the page and
    `node stream.js` refuse each with the same message (both run examples/core's check),
    which names the sidecar and the field; Python's contract refuses it too, where it reads
    the field."""
    results, models, _, _ = web_run
    model = models[f"bad/{name}"]
    shown = value(results, f"sidecar/{name}/message")
    assert shown["kind"] == "error"
    assert value(results, "sidecar/info")["graph"] == "step"  # the model loaded before is kept
    done = subprocess.run([node, str(JS_DIR / "stream.js"), str(model)], input="1\n",
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stdout
    sidecar = f"{model}.json"
    assert done.stderr == f"error: {sidecar}: {shown['text'].removeprefix('model.onnx.json: ')}\n"
    assert shown["text"].startswith("model.onnx.json: ")
    assert message in shown["text"], shown["text"]
    if python_refuses:
        with pytest.raises(ContractError):
            ModelContract.from_json(Path(sidecar).read_text())


def test_coverage_control_restarts_the_live_scores(web_run) -> None:
    """A coverage outside (0, 1) is refused with a message and the scores stay; a new one
    starts the live scores afresh (10 points at horizon 1: 9 scored)."""
    results, _, _, _ = web_run
    assert "error" in results["coverage/bad"]
    message = value(results, "coverage/bad/message")
    assert message["kind"] == "error"
    assert 'coverage is "1.5"; expected a number strictly between 0 and 1' in message["text"]
    assert value(results, "coverage/kept") == value(results, "forecast/scores")
    (row,) = value(results, "coverage/new/scores")
    assert row["points"] == 9
    assert value(results, "coverage/new/table")[0][7] == "coverage (asked 0.5)"
