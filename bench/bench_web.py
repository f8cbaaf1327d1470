"""Step latency of one model in the browser, in Node and in Python (µs per streaming step).

    .venv/bin/python bench/bench_web.py [--quick] [--screenshot docs/images/web.png]

One model, trained the way users get one (``rnnstream train --data sine``, LSTM 1x32, then
``rnnstream export``: model.onnx and model.step.onnx), streams the same sine points, one point
per call with the state carried, through:

* the browser: the page examples/web in headless Chromium (onnxruntime-web, wasm backend, one
  thread; WebGL where offered), sequence and step graph, without intervals, and the step graph
  once more with the live scores and a 90 % interval (what the page does by default);
* Node: onnxruntime-node with the state loop of examples/core/rnnstream-core.mjs, as
  examples/javascript/stream.js runs it (one intra-op thread);
* Python: rnnstream.runtime.Predictor.step (step graph; sequence graph when the step graph is
  absent), and raw onnxruntime ``run()`` on the sequence graph as the baseline.

Every figure is the per-step mean of a timed loop of N steps after a warm-up, the best of
REPEATS loops (other processes on the machine can only add time), measured the same way in each
place (the browser's clock is coarsened to 100 µs without cross-origin isolation, so only a
loop's mean is meaningful there). Ratios are against Python's Predictor.step in this run.
--screenshot streams the sine through the page and saves the page as PNG (the README's picture).
Needs node/npm (make js-deps web-deps) and /usr/bin/chromium (make browser).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
WEB_DIR = REPO / "examples" / "web"
JS_DIR = REPO / "examples" / "javascript"
CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_S = 300
REPEATS = 3  # each figure is the best of this many timed loops: other processes only add time
SCREENSHOT_VIEWPORT = {"width": 920, "height": 840}  # the page down to its live accuracy table

# the state loop of examples/core/rnnstream-core.mjs, the one stream.js and the page run
NODE_BENCH = r"""
const ort = require('onnxruntime-node');
const core = require('../core/rnnstream-core.mjs');
const [model, contractPath, pointsJSON, n, REPEATS] = process.argv.slice(1);
const contract = core.parseSidecar(require('node:fs').readFileSync(contractPath, 'utf8'));
const points = JSON.parse(pointsJSON);
(async () => {
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1 });
  core.checkSession(session, contract);
  const loop = new core.StateLoop(ort, session, contract);
  const state = loop.initialState();
  const step = (p) => loop.step(state, p);
  for (let i = 0; i < 200; i++) await step(points[i % points.length]);
  let best = Infinity;
  for (let r = 0; r < Number(REPEATS); r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < Number(n); i++) await step(points[i % points.length]);
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e3 / Number(n));
  }
  console.log(best);
})();
"""


def sh(cmd: list[str], **kwargs) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
                          **kwargs)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd[:3])}... failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def train_and_export(folder: Path) -> Path:
    """The sine LSTM (1 layer x 32, the CLI's defaults), trained briefly, exported. Levels in
    and out (no `last` state): the same graphs in every run, whatever auto would pick."""
    cli = [sys.executable, "-c", "from rnnstream.cli.main import main; raise SystemExit(main())"]
    sh([*cli, "train", "--data", "sine", "--target-mode", "level", "--epochs", "15",
        "--no-progress", "--threads", "1", "--out", str(folder)])
    model = folder / "model.onnx"
    sh([*cli, "export", str(folder / "model.pt"), "--out", str(model)])
    return model


def sine_points(n: int) -> list[list[float]]:
    """The training data's sine (period 40 steps, amplitude 1) with a little seeded noise, one
    feature per point."""
    t = np.arange(n)
    noise = np.random.default_rng(0).normal(0, 0.03, n)
    return [[float(v)] for v in (np.sin(np.pi * t / 20) + noise).astype(np.float32)]


# -- Python ------------------------------------------------------------------------------------

def loop_us(fn, points, n: int) -> float:
    for i in range(200):
        fn(points[i % len(points)])
    best = float("inf")
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for i in range(n):
            fn(points[i % len(points)])
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def python_figures(model: Path, points, n: int, folder: Path) -> dict[str, float]:
    import onnxruntime as ort

    from rnnstream.runtime import Predictor

    rows = {}
    # one feature: Predictor.step takes the float itself (its documented fast path)
    floats = [p[0] for p in points]
    predictor = Predictor(model)
    assert predictor.uses_step_graph
    rows["Python Predictor.step (step graph)"] = loop_us(predictor.step, floats, n)
    seq_only = folder / "sequence-only"
    seq_only.mkdir()
    for name in ("model.onnx", "model.onnx.json"):
        shutil.copy(model.parent / name, seq_only / name)
    predictor = Predictor(seq_only / "model.onnx")  # logs that it has no step graph: intended
    rows["Python Predictor.step (sequence graph)"] = loop_us(predictor.step, floats, n)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    contract = json.loads((model.parent / "model.onnx.json").read_text())
    state = {s["input"]: np.zeros([1 if i == s["batch_axis"] else d
                                   for i, d in enumerate(s["shape"])], np.float32)
             for s in contract["states"]}
    outs = ["y", *(s["output"] for s in contract["states"])]

    def raw(p):
        feeds = {"x": np.asarray(p, np.float32).reshape(1, 1, -1), **state}
        _, *new = session.run(outs, feeds)
        for s, v in zip(contract["states"], new, strict=True):
            state[s["input"]] = v

    rows["Python raw onnxruntime run() (sequence graph)"] = loop_us(raw, points, n)
    return rows


# -- Node and the browser ----------------------------------------------------------------------

def node_figures(model: Path, points, n: int) -> dict[str, float]:
    rows = {}
    sidecar = str(model.parent / "model.onnx.json")
    for graph, path in (("sequence", model), ("step", model.parent / "model.step.onnx")):
        out = sh(["node", "-e", NODE_BENCH, str(path), sidecar, json.dumps(points[:400]), str(n),
                  str(REPEATS)], cwd=JS_DIR)
        rows[f"Node onnxruntime-node 1.30 ({graph} graph)"] = float(out)
    return rows


def browser_figures(model: Path, points, n: int, folder: Path,
                    screenshot: Path | None) -> tuple[dict[str, float | str], str]:
    sys.path.insert(0, str(REPO))  # the tests' rewrite, shared rather than copied
    from tests.embedding._support import webgl_variant

    webgl_variant(model.parent, folder / "webgl")
    # (graph, file, backend, coverage): the page's step alone (no intervals), and once with
    # the live scores and a 90 % interval, what the page does by default
    runs = [("sequence graph", "model.onnx", "wasm", None),
            ("step graph", "model.step.onnx", "wasm", None),
            ("step graph + live scores, 90 % interval", "model.step.onnx", "wasm", 0.9),
            ("sequence graph", "model.onnx", "webgl", None),
            ("step graph", "model.step.onnx", "webgl", None),
            ("step graph rewritten for WebGL", "webgl/model.step.onnx", "webgl", None),
            ("step graph", "model.step.onnx", "webgpu", None)]
    warm, timed = points[:200], [points[i % len(points)] for i in range(n)]
    actions: list[dict] = [{"label": "backends", "call": "backends"}]
    for graph, file, backend, coverage in runs:
        label = f"{graph}/{backend}"
        actions += [{"label": f"{label}/load", "call": "load",
                     "args": [{"model": f"/models/{file}", "backend": backend,
                               "coverage": coverage}]},
                    {"label": f"{label}/warm", "call": "bench", "args": [warm]}]
        actions += [{"label": f"{label}/{r}", "call": "bench", "args": [timed]}
                    for r in range(REPEATS)]
    if screenshot is not None:  # the page as it opens: intervals at 0.9
        actions += [{"call": "load", "args": [{"model": "/models/model.onnx", "coverage": 0.9}]},
                    {"call": "step", "args": [points[:150]]},
                    {"call": "idle"}, {"screenshot": str(folder / "web.png")}]
    spec = importlib.util.spec_from_file_location("rnnstream_web_serve", WEB_DIR / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    server = serve.start(model.parent)
    try:
        script = folder / "script.json"
        script.write_text(json.dumps({"url": f"http://127.0.0.1:{server.server_port}/",
                                      "chromium": str(CHROMIUM), "actions": actions,
                                      "viewport": SCREENSHOT_VIEWPORT}))
        sh(["node", str(WEB_DIR / "headless.mjs"), str(script), str(folder / "out.json")])
    finally:
        server.shutdown()
        server.server_close()
    report = json.loads((folder / "out.json").read_text())
    results = {r["label"]: r for r in report["results"]}
    rows: dict[str, float | str] = {}
    for graph, _, backend, _ in runs:
        label = f"{graph}/{backend}"
        name = f"browser onnxruntime-web 1.30, {backend} ({graph})"
        timings = [results[f"{label}/{r}"] for r in range(REPEATS)]
        failed = results[f"{label}/load"].get("error") or timings[0].get("error")
        rows[name] = refusal(failed) if failed else min(t["value"] for t in timings) * 1e3
    if screenshot is not None:
        shutil.copy(folder / "web.png", screenshot)
    browser = report["userAgent"].split("HeadlessChrome/")[-1].split(" ")[0]
    return rows, f"Chromium {browser}, backends offered: {results['backends']['value']}"


def refusal(error: str) -> str:
    """The reason a backend refused, shortened to its cause."""
    for marker in ("cannot resolve operator", "unrecognized input", "Failed to get GPU adapter",
                   "no available backend"):
        if marker in error:
            return "refused: " + error[error.index(marker):].split(". ")[0][:90]
    return "refused: " + error[-90:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    ap.add_argument("--screenshot", type=Path, help="also save the page after a stream (PNG)")
    args = ap.parse_args()
    if not shutil.which("node") or not CHROMIUM.exists():
        print(f"needs node and {CHROMIUM} (make js-deps web-deps browser); skipped")
        return 0
    n = 1000 if args.quick else 5000
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = train_and_export(folder)
        points = sine_points(400)
        rows: dict[str, float | str] = {}
        rows.update(python_figures(model, points, n, folder))
        rows.update(node_figures(model, points, n))
        browser_rows, browser = browser_figures(model, points, n, folder, args.screenshot)
        rows.update(browser_rows)
    base = rows["Python Predictor.step (step graph)"]
    print(f"LSTM 1x32 (sine), one point per call; per-step mean of a loop of {n} steps, best of "
          f"{REPEATS} loops, after 200 warm-up; {browser}")
    print(f"{'where':<72} {'µs/step':>9} {'vs Predictor':>13}")
    for name, us in rows.items():
        if isinstance(us, str):
            print(f"{name:<72} {us}")
        else:
            print(f"{name:<72} {us:>9.1f} {us / base:>12.2f}x")
    if args.screenshot:
        print(f"screenshot: {args.screenshot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
