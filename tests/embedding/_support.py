"""Helpers for the embedding tests: models of every cell, exported; the JS example's deps.

The JavaScript tests need ``node`` and ``npm``. Where they are missing the tests are skipped with
the reason, except under CI (the ``CI`` environment variable set), where a missing toolchain is
a failure: CI must prove the embedding example, not silently skip it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

torch = pytest.importorskip(
    "torch", reason="exporting a model needs torch: pip install 'rnnstream[train]'")

from rnnstream.export import export_model  # noqa: E402
from rnnstream.runtime import Predictor, StreamPool  # noqa: E402
from rnnstream.train.model import Forecaster, ForecasterConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
JS_DIR = REPO / "examples" / "javascript"
WEB_DIR = REPO / "examples" / "web"
CORE_DIR = REPO / "examples" / "core"  # the module both examples share
CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; `make test` installs it where it can
NPM_TIMEOUT_S = 300
NODE_TIMEOUT_S = 60
BROWSER_TIMEOUT_S = 120


@dataclass(frozen=True)
class Case:
    """One model to export: covers every cell, multi-layer, multi-feature, multi-target, delta."""

    cell: str
    n_features: int
    n_targets: int
    layers: int
    hidden: int = 8
    target_mode: str = "level"
    target_index: tuple[int, ...] = ()
    input_mode: str = "level"

    @property
    def id(self) -> str:
        return (f"{self.cell}-F{self.n_features}-T{self.n_targets}-L{self.layers}-"
                f"{self.target_mode}" + ("-delta-in" if self.input_mode == "delta" else ""))


CASES = [
    Case("rnn", n_features=1, n_targets=1, layers=2),
    Case("lstm", n_features=2, n_targets=2, layers=2),
    Case("gru", n_features=3, n_targets=2, layers=1, target_mode="delta", target_index=(0, 2)),
    # fed changes: a `last` state [batch, F + 1] beside h and c
    Case("lstm", n_features=2, n_targets=1, layers=1, target_mode="delta", target_index=(1,),
         input_mode="delta"),
    Case("mingru", n_features=2, n_targets=1, layers=2),  # no native op: a Scan per layer
]


def make_forecaster(case: Case, seed: int = 0, target_names: list[str] | None = None,
                    horizon: int = 1) -> Forecaster:
    """A forecaster with random weights and a non-trivial normalisation (raw units != z-units).

    Targets are named ``sensor_<i>_next`` unless ``target_names`` is given (a target named like
    a feature is scored by the live scores)."""
    torch.manual_seed(seed)
    config = ForecasterConfig(
        cell=case.cell, n_features=case.n_features, n_targets=case.n_targets,
        hidden=case.hidden, layers=case.layers, target_mode=case.target_mode,
        target_index=list(case.target_index),
        input_mode=case.input_mode,
        feature_names=[f"sensor_{i}" for i in range(case.n_features)],
        target_names=target_names or [f"sensor_{i}_next" for i in range(case.n_targets)],
        horizon=horizon,
    )
    model = Forecaster(config).eval()
    f, t = case.n_features, case.n_targets
    if case.input_mode == "delta":  # changes of a level near 15 (see series())
        model.set_normalization(np.zeros(f), np.linspace(0.5, 0.8, f), np.linspace(-1, 1, t),
                                np.linspace(0.5, 1, t), np.full(f, 15.0), np.full(f, 3.0))
    else:
        model.set_normalization(np.linspace(10, 20, f), np.linspace(2, 3, f),
                                np.linspace(-5, 5, t), np.linspace(0.5, 4, t))
    return model


def series(case: Case, n: int = 200, seed: int = 1) -> np.ndarray:
    """``n`` raw points [n, F] at the scale of the normalisation above."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    phase = np.arange(case.n_features)[None, :]
    x = 15 + 3 * np.sin(0.1 * t + phase) + 0.5 * rng.standard_normal((n, case.n_features))
    return x.astype(np.float32)


def export(model: Forecaster, path: Path, metrics: dict | None = None) -> Path:
    """Export with rnnstream's exporter: model + sidecar, after its parity proof."""
    export_model(model, path, metrics=metrics)
    return path


# -- streaming through the Python runtime ---------------------------------------------

def python_stream(model: Path, points: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Predictions [n, T] and final state {name: [layers, hidden]} from rnnstream's Predictor."""
    predictor = Predictor(model)
    preds = np.stack([np.asarray(predictor.step(p), np.float32).reshape(-1) for p in points])
    return preds, dict(predictor.get_state())


def pool_stream(model: Path, keys: list[str], points: np.ndarray):
    """Predictions [n, T], one stream per key, and final states {key: {name: array}}."""
    pool = StreamPool(model, auto_add=True)
    preds = [np.asarray(pool.step({k: p})[k], np.float32).reshape(-1)
             for k, p in zip(keys, points, strict=True)]
    return np.stack(preds), {k: dict(pool.get_state(k)) for k in dict.fromkeys(keys)}


# -- CSV in, predictions out -----------------------------------------------------------

def to_csv(points: np.ndarray, keys: list[str] | None = None,
           header: list[str] | None = None) -> str:
    # repr of the float64 holding a float32 reads back as exactly that float32, in JS too
    rows = [",".join(repr(float(v)) for v in p) for p in points.astype(np.float64)]
    if keys is not None:
        rows = [f"{k},{r}" for k, r in zip(keys, rows, strict=True)]
    if header is not None:
        rows.insert(0, ",".join(header))
    return "\n".join(rows) + "\n"


def parse_predictions(stdout: str, keyed: bool = False):
    lines = stdout.strip().splitlines()
    if not keyed:
        return np.array([[float(v) for v in line.split(",")] for line in lines], dtype=np.float32)
    keys = [line.split(",", 1)[0] for line in lines]
    values = np.array([[float(v) for v in line.split(",")[1:]] for line in lines], np.float32)
    return keys, values


# -- JavaScript toolchain --------------------------------------------------------------------

def missing_tool(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the JavaScript and browser tests may not be skipped")
    pytest.skip(reason)


def install_js_deps() -> None:
    """The Node example's packages (see :func:`install_npm_deps`).

    ONNXRUNTIME_NODE_INSTALL=skip: onnxruntime-node's install script otherwise downloads optional
    CUDA files from outside the npm registry, which fails offline. The CPU build
    is inside the npm package itself.
    """
    install_npm_deps(JS_DIR, "onnxruntime-node", {"ONNXRUNTIME_NODE_INSTALL": "skip"})


def install_npm_deps(folder: Path, package: str, env: dict[str, str] | None = None) -> None:
    """``npm ci`` in ``folder`` from its lock file, unless ``package`` is installed already;
    offline-safe once the npm cache has the packages."""
    if (folder / "node_modules" / package).is_dir():
        return
    cmd = ["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund"]
    done = subprocess.run(cmd, cwd=folder, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=NPM_TIMEOUT_S, check=False)
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` in {folder} failed ({done.returncode}):\n"
                    f"{done.stdout}\n{done.stderr}")


def run_js_loop(node: str, code: str, folder: Path, stdin: str, core: bool = True,
                check: bool = True) -> subprocess.CompletedProcess:
    """The loop of ``rnnstream inspect --code js`` as its user runs it: loop.js in ``folder``
    with rnnstream-core.mjs copied beside it (``core``), onnxruntime-node from the Node
    example's install."""
    folder.mkdir(parents=True, exist_ok=True)
    loop = folder / "loop.js"
    loop.write_text(code)
    if core:
        shutil.copy(CORE_DIR / "rnnstream-core.mjs", folder)
    env = {**os.environ, "NODE_PATH": str(JS_DIR / "node_modules")}  # the example's install
    done = subprocess.run([node, str(loop)], input=stdin, capture_output=True, text=True,
                          timeout=NODE_TIMEOUT_S, check=False, env=env)
    if check:
        assert done.returncode == 0, f"generated loop failed:\n{code}\n--- stderr:\n{done.stderr}"
    return done


# -- the browser -------------------------------------------------------------------------------

def serve(root: Path, models: Path | None = None):
    """examples/web/serve.py's server for ``root`` (``models`` at /models/), on a free port of
    127.0.0.1; the caller shuts it down."""
    spec = importlib.util.spec_from_file_location("rnnstream_web_serve", WEB_DIR / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.start(models, root=root)


def run_headless(node: str, script: dict, workdir: Path) -> dict:
    """Run examples/web/headless.mjs on ``script`` (see its docstring); its JSON report, with
    "results" keyed by the actions' labels."""
    script_path, out = workdir / "script.json", workdir / "out.json"
    script_path.write_text(json.dumps({"chromium": str(CHROMIUM), **script}))
    done = subprocess.run([node, str(WEB_DIR / "headless.mjs"), str(script_path), str(out)],
                          capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S, check=False)
    if done.returncode != 0:
        pytest.fail(f"headless.mjs exited {done.returncode}:\n{done.stderr}")
    report = json.loads(out.read_text())
    uncaught = [c for c in report["console"] if c.startswith("uncaught")]
    assert not uncaught, uncaught
    report["results"] = {r["label"]: r for r in report["results"]}
    return report


# Ops of the step graph that onnxruntime-web 1.30's WebGL backend cannot run at opset 17:
# Split (it has Split only up to opset 12) and, for models fed with differences, Expand.
WEBGL_MISSING = ("Split", "Expand")


def webgl_variant(folder: Path, out: Path) -> Path:
    """The export in ``folder`` with its step graph rewritten into ops WebGL runs, computing
    the same function exactly (Split -> one Slice per part; Expand(a, Shape(b)) ->
    Add(Mul(b, 0), a), a broadcast of ``a`` to b's shape, b finite), and a sidecar naming the new
    bytes. Returns the new step graph's path. What export/step_graph.py could emit itself."""
    out.mkdir()
    step = onnx.load(str(folder / "model.step.onnx"))
    graph = step.graph
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    shape_of = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Shape"}

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    nodes = []
    for node in graph.node:
        if node.op_type == "Split":
            axis = next(a.i for a in node.attribute if a.name == "axis")
            start = 0
            for name, size in zip(node.output, consts[node.input[1]], strict=True):
                bounds = [const(f"{name}_{k}", np.array([v], np.int64)) for k, v in
                          (("start", start), ("end", start + int(size)), ("axis", axis))]
                nodes.append(helper.make_node("Slice", [node.input[0], *bounds], [name]))
                start += int(size)
        elif node.op_type == "Expand" and node.input[1] in shape_of:
            like, name = shape_of[node.input[1]], node.output[0]
            zero = const(f"{name}_zero", np.zeros((), np.float32))
            nodes.append(helper.make_node("Mul", [like, zero], [f"{name}_zeros"]))
            nodes.append(helper.make_node("Add", [f"{name}_zeros", node.input[0]], [name]))
        else:
            nodes.append(node)
    used = {i for n in nodes for i in n.input}
    nodes = [n for n in nodes if n.op_type != "Shape" or n.output[0] in used]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in nodes for i in n.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(step, full_check=True)
    assert not {n.op_type for n in graph.node} & set(WEBGL_MISSING)
    data = step.SerializeToString()
    (out / "model.step.onnx").write_bytes(data)
    sidecar = json.loads((folder / "model.onnx.json").read_text())
    sidecar["step_model"]["sha256"] = hashlib.sha256(data).hexdigest()
    (out / "model.onnx.json").write_text(json.dumps(sidecar))
    shutil.copy(folder / "model.onnx", out / "model.onnx")
    return out / "model.step.onnx"


# -- malformed sidecars: both examples refuse each with the same message ------------------------

def _without(key: str):
    return lambda d: {k: v for k, v in d.items() if k != key}


def _set(key: str, value):
    return lambda d: {**d, key: value}


def _state(**change):
    return lambda d: {**d, "states": [{**d["states"][0], **change}, *d["states"][1:]]}


def _input_shape(d: dict) -> dict:
    return {**d, "input": {**d["input"], "shape": ["batch", "time", len(d["features"]) + 1]}}


# (id, the change to a good sidecar of a one-feature RNN (CASES[0]), a piece of the message,
#  whether rnnstream's Python contract refuses it too: it derives input, output and states from
#  the cell when they are absent, where a program without the Python spec must read them)
BAD_SIDECARS = [
    ("not-an-object", lambda d: [d], "the rnnstream sidecar must be a JSON object", True),
    ("format", _set("format", "onnx"), 'format is "onnx", expected "rnnstream"', True),
    ("schema-newer", _set("schema_version", 99), "contract schema version 99 is newer", True),
    ("schema-text", _set("schema_version", "1"), 'schema_version "1" is not a positive integer',
     True),
    ("custom-at-schema-1", _set("cell", "custom"), "('custom' needs schema_version 3)", True),
    ("layers-zero", _set("layers", 0), "metadata 'layers' is 0; expected an integer 1..64", True),
    ("features-repeat", _set("features", ["a", "a"]),
     "metadata 'features' must be a non-empty list of distinct names", True),
    ("targets-missing", _without("targets"),
     "metadata 'targets' must be a non-empty list of distinct names, got missing", True),
    ("horizon-zero", _set("horizon", 0), "metadata 'horizon' is 0; expected an integer 1..", True),
    ("seasonal-at-schema-1", _set("target_mode", "seasonal"),
     "target_mode \"seasonal\" is not 'level' or 'delta'", True),
    ("input-mode", _set("input_mode", "log"), "input_mode \"log\" is not 'level' or 'delta'",
     True),
    ("metrics-list", _set("metrics", []), "metadata 'metrics' must be an object, got list", True),
    ("step-model-path", _set("step_model", {"file": "../model.step.onnx", "sha256": "0" * 64}),
     "metadata 'step_model' is", True),
    ("input-width", _input_shape, "metadata 'input' is", True),
    ("output-missing", _without("output"), "metadata 'output' is missing", False),
    ("states-missing", _without("states"), "metadata 'states' must list 1..64 states", False),
    ("state-input-name", _state(input="h_inp"), "is not a state rnnstream can carry", True),
    ("state-size-zero", _state(shape=["batch", 1, 0]), "is not a state rnnstream can carry",
     True),
    ("trained-season-zero", _set("trained_season", 0),
     "metadata 'trained_season' is 0; expected an integer 1..", True),
    ("calibration-targets", _set("calibration", {"levels": [0.9], "half_widths": {"b": [[1.0]]}}),
     "metadata 'calibration' is malformed: 'half_widths' has targets [\"b\"]", True),
]


def write_bad_sidecars(model: Path, root: Path) -> dict[str, Path]:
    """One folder per BAD_SIDECARS entry: a copy of ``model`` (a sequence graph) and its sidecar
    changed by the entry; ``{id: path of the model}``."""
    good = json.loads(Path(f"{model}.json").read_text())
    out = {}
    for name, change, _, _ in BAD_SIDECARS:
        folder = root / f"bad-{name}"
        folder.mkdir()
        shutil.copy(model, folder / "model.onnx")
        (folder / "model.onnx.json").write_text(json.dumps(change(good)))
        out[name] = folder / "model.onnx"
    return out
