"""Runtime speed against baselines measured in the same run (p50 µs, one core).

    .venv/bin/python bench/bench_runtime.py [--quick]

Baselines: torch eager with the same weights, onnxruntime ``run()`` with numpy arrays, and a
raw IOBinding ping-pong (two alternating state buffers) on the same file. Needs the train extra
(torch + onnx) to build the model; the runtime itself never imports them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def p50(fn, iters: int, warmup: int = 200) -> float:
    for _ in range(warmup):
        fn()
    ts = np.empty(iters)
    clock = time.perf_counter_ns
    for i in range(iters):
        t = clock()
        fn()
        ts[i] = clock() - t
    return float(np.median(ts)) / 1e3


def build(cell: str, hidden: int, layers: int, folder: str) -> tuple[str, object]:
    import onnx
    import torch
    from onnx import helper
    from rnnstream.export.graph import build_graph
    from rnnstream.runtime.contract import METADATA_KEY, ModelContract
    from rnnstream.train.model import Forecaster, ForecasterConfig

    torch.manual_seed(0)
    model = Forecaster(ForecasterConfig(cell=cell, hidden=hidden, layers=layers)).eval()
    g = build_graph(model)
    c = ModelContract(cell=cell, layers=layers, hidden=hidden, features=["f0"], targets=["t0"],
                      fingerprint="sha256:bench")
    helper.set_model_props(g, {METADATA_KEY: c.to_json()})
    path = os.path.join(folder, f"{cell}_{hidden}_{layers}.onnx")
    onnx.save(g, path)
    return path, model


def raw_iobinding(sess, states):
    x = np.zeros((1, 1, 1), np.float32)
    y = np.zeros((1, 1, 1), np.float32)
    bufs = [[np.zeros(s, np.float32) for s in states.values()] for _ in range(2)]
    bindings = []
    for a, b in ((0, 1), (1, 0)):
        io = sess.io_binding()
        io.bind_input("x", "cpu", 0, np.float32, x.shape, x.ctypes.data)
        io.bind_output("y", "cpu", 0, np.float32, y.shape, y.ctypes.data)
        for (name, shape), i, o in zip(states.items(), bufs[a], bufs[b], strict=True):
            io.bind_input(f"{name}_in", "cpu", 0, np.float32, shape, i.ctypes.data)
            io.bind_output(f"{name}_out", "cpu", 0, np.float32, shape, o.ctypes.data)
        bindings.append(io)
    parity = [0]
    run = sess.run_with_iobinding

    def step():
        x[0, 0, 0] = 0.5
        run(bindings[parity[0]])
        parity[0] ^= 1

    return step, (x, y, bufs)  # keep the buffers alive


def single_stream(path, model, cell, hidden, layers, iters, rows):
    import torch
    from rnnstream.runtime import Predictor

    p = Predictor(path)
    sess = p._session
    names = ("h", "c") if cell == "lstm" else ("h",)
    states = {n: (1, layers, hidden) for n in names}
    io_step, _keep = raw_iobinding(sess, states)
    feeds = {"x": np.full((1, 1, 1), 0.5, np.float32)}
    feeds.update({f"{n}_in": np.zeros(s, np.float32) for n, s in states.items()})
    torch.set_num_threads(1)
    tstate = model.initial_state(1)
    tx = torch.full((1, 1, 1), 0.5)

    def torch_step():
        nonlocal tstate
        with torch.no_grad():
            _, tstate = model(tx, tstate)

    t_io = p50(io_step, iters)
    t_run = p50(lambda: sess.run(None, feeds), iters)
    t_torch = p50(torch_step, iters // 4)
    t_step = p50(lambda: p.step(0.5), iters)
    t_io2 = p50(io_step, iters)  # again: guard against drift between the two
    base = min(t_io, t_io2)
    tag = f"{cell} h{hidden} L{layers}"
    rows.append((f"step  {tag}", t_step, f"{t_step / base:.2f}x raw IOBinding ({base:.2f})",
                 f"{t_run / t_step:.1f}x faster than run() ({t_run:.2f})",
                 f"{t_torch / t_step:.1f}x faster than torch ({t_torch:.1f})"))


def prime_bench(path, iters, rows, n=10_000):
    from rnnstream.runtime import Predictor

    p = Predictor(path)
    sess = p._session
    hist = np.random.default_rng(0).normal(size=(n, 1)).astype(np.float32)
    feeds = {"x": hist[None], "h_in": np.zeros((1, 1, 32), np.float32),
             "c_in": np.zeros((1, 1, 32), np.float32)}
    t_raw = p50(lambda: sess.run(None, feeds), iters, warmup=3)
    t_prime = p50(lambda: p.prime(hist), iters, warmup=3)
    rows.append((f"prime {n} points", t_prime, f"{t_prime / t_raw:.2f}x one raw run() "
                 f"({t_raw:.0f})", "", ""))


def pool_bench(path, model, hidden, batches, iters, rows):
    import torch
    from rnnstream.runtime import StreamPool

    sess = StreamPool(path)._model.session
    for b in batches:
        pool = StreamPool(path, capacity=b)
        keys = list(range(b))
        for k in keys:
            pool.add(k)
        vals = np.random.default_rng(b).normal(size=(b, 1)).astype(np.float32)
        feeds = {"x": vals[:, None, :], "h_in": np.zeros((b, 1, hidden), np.float32),
                 "c_in": np.zeros((b, 1, hidden), np.float32)}
        tstate = model.initial_state(b)
        tx = torch.from_numpy(vals[:, None, :])

        def torch_step(tx=tx):
            nonlocal tstate
            with torch.no_grad():
                _, tstate = model(tx, tstate)

        n = max(20, iters // max(1, b // 16))
        t_raw = p50(lambda feeds=feeds: sess.run(None, feeds), n, warmup=10)
        t_torch = p50(torch_step, n, warmup=10)
        t_pool = p50(lambda pool=pool, keys=keys, vals=vals: pool.step_many(keys, vals), n,
                     warmup=10)
        best = min(t_raw, t_torch)
        rate = b / t_pool * 1e6
        rows.append((f"pool  B={b}", t_pool, f"{rate:,.0f} steps/s",
                     f"{best / t_pool:.2f}x best baseline (raw {t_raw:.1f}, torch "
                     f"{t_torch:.1f})", f"overhead vs raw {t_pool - t_raw:+.1f} µs"))


def import_bench(rows, reps):
    def t(stmt):
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", stmt], check=True)
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts)) * 1e6

    t_ort = t("import onnxruntime")
    t_rt = t("import rnnstream.runtime, sys; assert 'torch' not in sys.modules")
    rows.append(("import rnnstream.runtime", t_rt, f"{t_rt / t_ort:.2f}x import onnxruntime "
                 f"({t_ort / 1e3:.0f} ms)", "", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    args = ap.parse_args()
    iters = 3000 if args.quick else 20000
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as folder:
        small = build("lstm", 32, 1, folder)
        big = build("lstm", 128, 2, folder)
        single_stream(*small, "lstm", 32, 1, iters, rows)
        single_stream(*big, "lstm", 128, 2, iters, rows)
        prime_bench(small[0], 10 if args.quick else 50, rows)
        pool_bench(*small, 32, [1, 64, 1024, 16384], iters // 4, rows)
        import_bench(rows, 3 if args.quick else 7)
    print(f"{'case':<26} {'p50 µs':>10}  ratios")
    for name, t, *notes in rows:
        print(f"{name:<26} {t:>10.2f}  " + " | ".join(n for n in notes if n))


if __name__ == "__main__":
    main()
