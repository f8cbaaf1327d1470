"""The JavaScript example (examples/javascript/stream.js) against rnnstream's Python runtime.

The same raw series is streamed point by point through ``node stream.js`` and through
:class:`rnnstream.runtime.Predictor` (and, keyed, :class:`rnnstream.runtime.StreamPool`); every
prediction and the final state must agree to ``ATOL``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from rnnstream.export.step_graph import step_path
from rnnstream.runtime import Predictor
from rnnstream.runtime.live import (
    DEFAULTS,
    FLOOR,
    RATIO_MAX,
    SMALLEST_SCALE,
    STATE_ARRAYS,
    LiveStream,
    exp_series,
    initial_half_widths,
)

from ._support import (
    CASES,
    CORE_DIR,
    JS_DIR,
    Case,
    export,
    make_forecaster,
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
CORE = CORE_DIR / "rnnstream-core.mjs"


def run_js(node: str, model: Path, text: str, *args: str, check: bool = True):
    done = subprocess.run([node, str(STREAM), str(model), *args], input=text,
                          capture_output=True, text=True, timeout=NODE_TIMEOUT_S, check=False)
    if check and done.returncode != 0:
        pytest.fail(f"stream.js exited {done.returncode}:\n{done.stderr}")
    return done


@pytest.mark.parametrize("graph", ["sequence", "step"])
def test_stream_matches_runtime(node: str, exported: tuple[Case, Path], tmp_path: Path,
                                graph: str) -> None:
    """Both graphs load in onnxruntime-node (one IR rule) and stream what Python streams."""
    case, model = exported
    points = series(case)
    dump = tmp_path / "state.json"
    path = model if graph == "sequence" else Path(step_path(str(model)))
    done = run_js(node, path, to_csv(points), "-", "--dump-state", str(dump))
    js = parse_predictions(done.stdout)
    py, py_state = python_stream(model, points)

    assert js.shape == (len(points), case.n_targets)
    diff = float(np.max(np.abs(js - py)))
    print(f"{case.id} {graph}: max |js - python| = {diff:.3g} over {js.size} predictions")
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


def test_byte_order_mark_before_the_header(node: str, rnn_model: Path) -> None:
    """A CSV from a spreadsheet (a UTF-8 byte-order mark before the header) reads as
    `rnnstream stream` reads it."""
    points = series(CASES[0], n=5)
    js = run_js(node, rnn_model, "\ufeff" + to_csv(points, header=["sensor_0"]))
    py, _ = python_stream(rnn_model, points)
    np.testing.assert_allclose(parse_predictions(js.stdout), py, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,2,3,4,5\n", r"line 1: expected 1 values \(sensor_0\), got 5"),
        ("nope\n", r"line 1: the header \[nope\] lacks the model's features \[sensor_0\]"),
        ("sensor_0\n1\n\nnan\n", r'line 4: feature sensor_0 is "nan", not a finite number'),
        ("1\n-1e39\n", r"line 2: feature sensor_0 is -1e39, beyond the float32 range"),
    ],
    ids=["too-many-values", "bad-header", "nan", "beyond-float32"],
)
def test_bad_input_says_which_line(node: str, rnn_model: Path, text: str, message: str) -> None:
    done = run_js(node, rnn_model, text, check=False)
    assert done.returncode == 1
    assert re.search(message, done.stderr), done.stderr


def test_a_reader_that_leaves_early_is_not_an_error(node: str, rnn_model: Path) -> None:
    """`node stream.js M | head -1`: the closed pipe (EPIPE) stops the example quietly, exit 0,
    as it does `rnnstream stream`."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: writes fail with EPIPE
    try:
        done = subprocess.run([node, str(STREAM), str(rnn_model)], input="0.5\n" * 20_000,
                              stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=NODE_TIMEOUT_S, check=False)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, "")


def test_stale_step_graph_is_refused(node: str, rnn_model: Path, tmp_path: Path) -> None:
    """A step graph whose bytes are not the ones its sidecar names (the step graph of another
    export of the same architecture: same names and shapes) is never streamed."""
    (tmp_path / "other").mkdir()
    stale = export(make_forecaster(CASES[0], seed=5), tmp_path / "other" / "model.onnx")
    step = tmp_path / "model.step.onnx"
    step.write_bytes(Path(step_path(str(stale))).read_bytes())
    shutil.copy(f"{rnn_model}.json", tmp_path / "model.onnx.json")
    done = run_js(node, step, "1\n", check=False)
    assert done.returncode == 1
    assert re.search(r"model\.step\.onnx is neither the model .*model\.onnx\.json describes .*"
                     r"SHA-256 \w{16}\.\.\. is not \w{16}\.\.\. \(model\.step\.onnx\)",
                     done.stderr), done.stderr


def test_sidecar_of_another_model_is_refused(node: str, exported: tuple[Case, Path],
                                             tmp_path: Path) -> None:
    """A sidecar with the same names and shapes but of another model (another fingerprint)
    is refused, as the web page refuses it (examples/core's identifyGraph)."""
    case, model = exported
    other = export(make_forecaster(case, seed=9), tmp_path / "other.onnx")
    shutil.copy(model, tmp_path / "model.onnx")
    shutil.copy(f"{other}.json", tmp_path / "model.onnx.json")
    done = run_js(node, tmp_path / "model.onnx", to_csv(series(case, n=2)), check=False)
    assert done.returncode == 1
    assert re.search(r"the sidecar belongs to another model: .*model\.onnx has fingerprint "
                     r"sha256:\w+, .*model\.onnx\.json sha256:\w+", done.stderr), done.stderr
    assert done.stdout == ""


def test_missing_sidecar_is_explained(node: str, rnn_model: Path, tmp_path: Path) -> None:
    lonely = tmp_path / "model.onnx"
    lonely.write_bytes(rnn_model.read_bytes())
    done = run_js(node, lonely, "1\n", check=False)
    assert done.returncode == 1
    assert "cannot read the rnnstream sidecar" in done.stderr
    assert "copy it along with the .onnx file" in done.stderr


# -- prediction intervals (--coverage): rnnstream.runtime.live, ported -------------------------

@dataclass(frozen=True)
class LiveCase:
    """A model whose targets are (some of) its features, so the live scores score them."""

    case: Case
    targets: tuple[str, ...]
    horizon: int
    coverage: float
    calibration: dict | None = None
    season: int | None = None  # metrics["season"]: the default of --season

    @property
    def id(self) -> str:
        return (f"{self.case.cell}-T{len(self.targets)}-h{self.horizon}-c{self.coverage}"
                + ("-calibrated" if self.calibration else "")
                + (f"-trained-season{self.season}" if self.season else ""))


LIVE_CASES = [
    # no calibration stored: infinite until 9 residuals were scored, then their largest
    LiveCase(Case("rnn", n_features=1, n_targets=1, layers=1), ("sensor_0",), 1, 0.9),
    # validation half-widths in the contract, interpolated at 0.85 (sensor_0: 0.9 -> 0.95 null),
    # the scale's prior at 0.5, and the season it was trained with (the default of --season)
    LiveCase(Case("lstm", n_features=2, n_targets=2, layers=1), ("sensor_1", "sensor_0"), 2, 0.85,
             {"levels": [0.5, 0.8, 0.9, 0.95],
              "half_widths": {"sensor_1": [[0.2, 0.5, 1.25, 2.0]],
                              "sensor_0": [[0.1, 0.25, 0.75, None]]}},
             season=4),
    # "extra" is not a feature: never scored, its interval stays infinite
    LiveCase(Case("gru", n_features=3, n_targets=2, layers=1, target_mode="delta",
                  target_index=(2, 0)), ("sensor_2", "extra"), 3, 0.8),
]


@pytest.fixture(scope="module", params=LIVE_CASES, ids=lambda c: c.id)
def live_model(request, tmp_path_factory) -> tuple[LiveCase, Path]:
    lc = request.param
    folder = tmp_path_factory.mktemp(f"live-{lc.id}")
    model = make_forecaster(lc.case, target_names=list(lc.targets), horizon=lc.horizon)
    metrics = {"calibration": lc.calibration} if lc.calibration else {}
    if lc.season:
        metrics["season"] = lc.season
    export(model, folder / "model.onnx", metrics=metrics)
    # the step graph: what Predictor streams, so the predictions agree bit for bit (the
    # sequence graph's kernels may differ from it in the last bit)
    return lc, Path(step_path(str(folder / "model.onnx")))


def sequence_of(step: Path) -> Path:
    return step.with_name(step.name.replace(".step.onnx", ".onnx"))


def _g9(v: float) -> str:
    return format(float(v), ".9g")


def python_live_lines(model: Path, points: np.ndarray, coverage: float, season: int | None,
                      keys: list[str] | None = None):
    """The lines `stream.js --coverage` must print, from one Predictor(coverage=...) per key,
    and each key's Predictor."""
    predictors: dict[str | None, Predictor] = {}
    lines = []
    for key, point in zip(keys or [None] * len(points), points, strict=True):
        if key not in predictors:
            predictors[key] = Predictor(model, coverage=coverage, season=season)
        p = predictors[key]
        y = np.atleast_1d(p.step(point))
        lower, upper = (np.atleast_1d(v) for v in p.interval())
        cells = [_g9(v) for j in range(len(y)) for v in (y[j], lower[j], upper[j])]
        lines.append(",".join(cells if key is None else [key, *cells]))
    return lines, predictors


def _decode(value):
    """stream.js's JSON for a live array: numbers, with "nan", "inf", "-inf", "-0.0" as strings."""
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return float(value) if isinstance(value, str) else value


def assert_live_state_equal(js: dict, py: dict[str, np.ndarray]) -> None:
    """The JS stream's live arrays (no stream axis) are bit for bit Python's ([1, ...])."""
    assert sorted(js) == sorted(STATE_ARRAYS)
    for name in STATE_ARRAYS:
        want = py[name][0]
        if name == "seen":
            assert js[name] == int(want)
            continue
        got = np.array(_decode(js[name]), np.float64)
        if want.size == 0:  # history without a season: [] in JSON
            assert got.size == 0, name
            continue
        assert got.shape == want.shape, name
        # bit for bit: NaNs in the same places, every other value with the same bits (and sign)
        assert np.array_equal(np.isnan(got), np.isnan(want)), name
        assert (np.where(np.isnan(got), 0.0, got).view(np.uint64)
                == np.where(np.isnan(want), 0.0, want).view(np.uint64)).all(), name


@pytest.mark.parametrize("season", [None, 5], ids=["no-season", "season5"])
def test_intervals_match_python(node: str, live_model: tuple[LiveCase, Path], tmp_path: Path,
                                season: int | None) -> None:
    """--coverage: every line (prediction, lower, upper per target) is the line Python's
    Predictor(coverage=...) gives, formatted alike, and the live state is Python's bit for bit."""
    lc, model = live_model
    points = series(lc.case, n=150)
    dump = tmp_path / "state.json"
    extra = ["--season", str(season)] if season else []
    done = run_js(node, model, to_csv(points), "--coverage", str(lc.coverage), *extra,
                  "--dump-state", str(dump))
    want, predictors = python_live_lines(sequence_of(model), points, lc.coverage, season)
    assert done.stdout.splitlines() == want
    snapshot = json.loads(dump.read_text())
    live = predictors[None].live
    assert live is not None
    assert live.season == (season or lc.season)  # None: the season the model was trained with
    assert (snapshot["coverage"], snapshot["season"]) == (lc.coverage, live.season)
    assert_live_state_equal(snapshot["live"], live.state_arrays())
    # the intervals are live: scored targets were tracked, unscored ones stay infinite
    for j, target in enumerate(lc.targets):
        scored = target in [f"sensor_{i}" for i in range(lc.case.n_features)]
        assert (float(live.half_width()[j]) < np.inf) == scored
        assert (snapshot["live"]["cover"][0][j] > 0) == scored


def test_keyed_intervals_match_python(node: str, live_model: tuple[LiveCase, Path],
                                      tmp_path: Path) -> None:
    """--key --coverage: each key's lines and live state are those of its own Predictor
    (--season 0: none, even where the model was trained with one)."""
    lc, model = live_model
    season = {1: None, 2: 0, 3: 2}[lc.horizon]
    names = ["a", "b", "c"]
    keys = [names[i] for i in np.random.default_rng(7).permutation(np.repeat([0, 1, 2], 40))]
    points = series(lc.case, n=len(keys), seed=3)
    dump = tmp_path / "states.json"
    extra = [] if season is None else ["--season", str(season)]
    done = run_js(node, model, to_csv(points, keys=keys), "--key", f"--coverage={lc.coverage}",
                  *extra, "--dump-state", str(dump))
    want, predictors = python_live_lines(sequence_of(model), points, lc.coverage, season, keys)
    assert done.stdout.splitlines() == want
    snapshot = json.loads(dump.read_text())
    assert snapshot["season"] == predictors["a"].live.season == (season or None)
    lives = snapshot["live_streams"]
    assert sorted(lives) == names
    for key in names:
        assert_live_state_equal(lives[key], predictors[key]._live.state_arrays())


def test_live_port_resets_and_formats_like_python(node: str) -> None:
    """The pieces without a model: LiveStream fed predictions that are sometimes NaN or
    infinite (the live scores start afresh, as Predictor's do); the initial half-width
    interpolated as initial_half_widths does; the defaults; formatG9 against
    format(v, '.9g'), exact ties (rounded half to even) and exponents included."""
    rng = np.random.default_rng(11)
    n = 80
    x = rng.normal(10.0, 2.0, (n, 2))
    y = x[:, ::-1] + rng.normal(0.0, 1.0, (n, 2))
    y[[30, 61], 1] = [np.nan, np.inf]
    settings = {"horizon": 2, "season": 3, "coverage": 0.75}
    values = [0.0, -0.0, 1234567.125, -1234567.375, 999999999.5, 1e9, 1e-4, 9.99999999e-5,
              1.5e-05, 5e-324, 1.7976931348623157e308, np.inf, -np.inf, np.nan,
              *rng.normal(0, 1e3, 50), *(float(np.float32(v)) for v in rng.normal(0, 10, 50))]
    script = """
const { LIVE_DEFAULTS, LIVE_FLOOR, LIVE_RATIO_MAX, LIVE_SMALLEST_SCALE, LiveStream, liveUpdate,
  liveToJSON, formatG9, halfWidthAt, expSeries } =
  require(process.argv[1]); // the module stream.js and the web page share
const input = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const num = (v) => (typeof v === 'string' ? Number(v.replace('inf', 'Infinity')) : v);
// the scale's prior: one below SMALLEST_SCALE (taken as 0) and one that acts
const live = new LiveStream(['a', 'b'], ['b', 'a'], { ...input.settings, scales: input.scales });
const lines = input.x.map((x, i) => {
  liveUpdate(live, x.map(num), input.y[i].map(num));
  return live.interval().flat().map(formatG9).join(',');
});
const widths = input.coverages.map((c) => input.table.map((row) => {
  const w = halfWidthAt(input.levels, row, c);
  return Number.isFinite(w) ? w : String(w); // "Infinity": Python's float() reads it
}));
process.stdout.write(JSON.stringify({ lines, state: liveToJSON(live), defaults: LIVE_DEFAULTS,
  floor: LIVE_FLOOR, ratioMax: LIVE_RATIO_MAX, smallest: LIVE_SMALLEST_SCALE,
  exps: [0.09, -0.01, 0.3, -0.3, 0.0475, -0.0025].map(expSeries),
  formatted: input.values.map(num).map(formatG9), widths }));
"""

    def enc(v: float) -> float | str:
        return v if np.isfinite(v) and not (v == 0 and np.signbit(v)) else repr(float(v))

    scales = [5e-324, 0.5]
    levels = [0.5, 0.8, 0.9, 0.95, 0.99]
    table = {"a": [[0.1, 0.7, 1.3, 2.9, None]], "b": [[0, 3, 3.5, 7.25, 9.0]]}
    coverages = [0.3, 0.5, 0.51, 0.8, 0.85, 0.9 + 1e-13, 0.93, 0.95, 0.97, 0.99, 0.995]
    payload = {"settings": settings, "x": x.tolist(), "values": [enc(v) for v in values],
               "y": [[enc(v) for v in row] for row in y.tolist()],
               "levels": levels, "table": [table["a"][0], table["b"][0]], "coverages": coverages,
               "scales": scales}
    done = subprocess.run([node, "-e", script, str(CORE)], input=json.dumps(payload),
                          capture_output=True, text=True, timeout=NODE_TIMEOUT_S, check=True)
    out = json.loads(done.stdout)

    live = LiveStream(["a", "b"], ["b", "a"], **settings, initial_scales=scales)
    want = []
    for xi, yi in zip(x.tolist(), y.tolist(), strict=True):
        if all(v - v == 0.0 for v in yi):  # as Predictor._live_update
            live.update(xi, yi)
        else:
            live.reset()
        lower, upper = live.interval()
        want.append(",".join(_g9(v) for v in [*lower, *upper]))
    assert out["lines"] == want
    assert live.seen == n - 62  # started afresh after the infinite prediction at 61
    assert_live_state_equal(out["state"], live.state_arrays())
    assert out["formatted"] == [_g9(v) for v in values]
    assert out["formatted"][2:4] == ["1234567.12", "-1234567.38"]  # ties: to even
    assert out["defaults"] == {"lr": DEFAULTS["lr"], "halfLife": DEFAULTS["half_life"]}
    assert (out["floor"], out["ratioMax"], out["smallest"]) == (FLOOR, RATIO_MAX, SMALLEST_SCALE)
    assert out["exps"] == [exp_series(v) for v in (0.09, -0.01, 0.3, -0.3, 0.0475, -0.0025)]
    metrics = {"calibration": {"levels": levels, "half_widths": table}}
    want_widths = [initial_half_widths(metrics, ["a", "b"], c) for c in coverages]
    got_widths = _decode(out["widths"])
    assert np.array(got_widths).view(np.uint64).tolist() == \
        np.array(want_widths).view(np.uint64).tolist()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--coverage", "0"], r'--coverage is "0"; expected a number strictly between 0 and 1'),
        (["--coverage", "1"], r'--coverage is "1"; expected a number strictly between 0 and 1'),
        (["--coverage", "x"], r'--coverage is "x"; expected a number strictly between 0 and 1'),
        (["--coverage"], r"--coverage needs a value"),
        (["--coverage", "0.9", "--season", "-1"], r'--season is "-1"; expected a whole number'),
        (["--season", "4"], r"--season needs --coverage"),
    ],
    ids=["zero", "one", "word", "missing", "season-negative", "season-alone"],
)
def test_bad_live_options_are_usage_errors(node: str, rnn_model: Path, args: list[str],
                                           message: str) -> None:
    done = run_js(node, rnn_model, "1\n", *args, check=False)
    assert done.returncode == 2
    assert re.search(message, done.stderr), done.stderr
    assert "usage: node stream.js MODEL.onnx" in done.stderr
    assert done.stdout == ""


def test_malformed_calibration_is_refused(node: str, rnn_model: Path, tmp_path: Path) -> None:
    """A sidecar whose metrics.calibration does not fit the model is named, as Python does."""
    model = tmp_path / "model.onnx"
    model.write_bytes(rnn_model.read_bytes())
    sidecar = json.loads(Path(f"{rnn_model}.json").read_text())
    sidecar["metrics"]["calibration"] = {"levels": [0.9], "half_widths": {"other": [[1.0]]}}
    Path(f"{model}.json").write_text(json.dumps(sidecar))
    done = run_js(node, model, "1\n", "--coverage", "0.9", check=False)
    assert done.returncode == 1
    assert re.search(r"model\.onnx\.json: metrics 'calibration' is malformed: 'half_widths' "
                     r'has targets \["other"\]; the model\'s are \["sensor_0_next"\]\. .*re-export',
                     done.stderr), done.stderr
    assert run_js(node, model, "1\n2\n").stdout.count("\n") == 2  # without --coverage: unread


def test_keyed_lines_equal_rnnstream_stream(node: str, live_model: tuple[LiveCase, Path]) -> None:
    """`stream.js --key --coverage C` prints exactly what `rnnstream stream --key key
    --coverage C` prints (StreamPool's many-stream LiveScores behind it), header row and all."""
    lc, model = live_model
    keys = [["a", "b"][i] for i in np.random.default_rng(5).integers(0, 2, 60)]
    points = series(lc.case, n=len(keys), seed=4)
    features = [f"sensor_{i}" for i in range(lc.case.n_features)]
    text = to_csv(points, keys=keys, header=["key", *features])
    js = run_js(node, model, text, "--key", "--coverage", str(lc.coverage))
    cli = subprocess.run([sys.executable, "-m", "rnnstream.cli.main", "stream",
                          str(sequence_of(model)), "--key", "key", "--coverage", str(lc.coverage)],
                         input=text, capture_output=True, text=True, timeout=NODE_TIMEOUT_S,
                         check=False)
    assert cli.returncode == 0, cli.stderr
    assert js.stdout == cli.stdout
    assert len(js.stdout.splitlines()) == len(keys)


def test_core_copies_the_python_contract_facts(node: str) -> None:
    """The facts examples/core/rnnstream-core.mjs holds as copies -- the schema version, the
    format, the metadata key, the modes and the limits of the sidecar check -- are Python's."""
    from rnnstream.runtime import contract, spec

    script = ("const c = require(process.argv[1]); process.stdout.write(JSON.stringify({"
              "schema: c.SCHEMA_VERSION, format: c.FORMAT, key: c.METADATA_KEY, "
              "input: c.INPUT_MODES, target: c.TARGET_MODES, season: c.SEASON_MODES, "
              "limits: c.LIMITS}))")
    done = subprocess.run([node, "-e", script, str(CORE)], capture_output=True, text=True,
                          timeout=NODE_TIMEOUT_S, check=True)
    js = json.loads(done.stdout)
    assert (js["schema"], js["format"], js["key"]) == (contract.SCHEMA_VERSION, contract.FORMAT,
                                                       contract.METADATA_KEY)
    assert (js["input"], js["target"], js["season"]) == (
        list(spec.INPUT_MODES), list(spec.TARGET_MODES), list(spec.SEASON_MODES))
    assert js["limits"] == {"features": contract.MAX_FEATURES, "hidden": contract.MAX_HIDDEN,
                            "layers": contract.MAX_LAYERS, "states": contract.MAX_STATES,
                            "rank": contract.MAX_STATE_RANK, "horizon": 1 << 20}


@pytest.mark.parametrize("season", [-3, 2.5, True, "24"])
def test_core_refuses_a_season_python_refuses(node: str, season) -> None:
    """liveOpener checks the season as LiveConfig does (a whole number >= 0, or null), with a
    typed InputError, instead of opening live scores with a malformed history."""
    from rnnstream.runtime import InputError, LiveConfig

    with pytest.raises(InputError, match="season is"):
        LiveConfig(coverage=0.9, season=season)
    script = ("const c = require(process.argv[1]); const contract = {horizon: 1, "
              "features: ['x'], targets: ['x'], metrics: {}};"
              f"try {{ c.liveOpener(contract, {{coverage: 0.9, season: {json.dumps(season)}}}); "
              "process.stdout.write('opened'); } catch (e) { process.stdout.write("
              "(e instanceof c.InputError ? 'InputError: ' : 'other: ') + e.message); }")
    done = subprocess.run([node, "-e", script, str(CORE)], capture_output=True, text=True,
                          timeout=NODE_TIMEOUT_S, check=True)
    assert done.stdout.startswith("InputError: season is "), done.stdout
