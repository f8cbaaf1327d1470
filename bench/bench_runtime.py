"""Runtime speed against baselines measured in the same run (p50 µs, one core).

    .venv/bin/python bench/bench_runtime.py [--quick]

Baselines: torch eager with the same weights, onnxruntime ``run()`` with numpy arrays, and a
raw IOBinding ping-pong (two alternating state buffers) on the same file. ``coverage=0.9`` rows:
the same step with live accuracy and intervals on (``rnnstream.runtime.live``). Pool rows report
stream-steps/s of StreamPool (``threads=1``) against one raw batched ``run()`` and torch eager at
the same B. ``cores`` rows: StreamPool(threads=2 and 1) at 1 to 16,384 streams, alternated,
medians; ``forced``: every batch split (where the split starts to pay); ``session``: two
threads over one shared session against a session each; ``model``: what the 1- and 2-thread
figures predict for 16 and 64 cores.
Needs the train extra (torch + onnx) to build the model; the runtime itself never imports them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

from rnnstream.runtime.spec import CELLS, INPUT_NAME, state_input_name, state_output_name

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
    """Export a seeded forecaster the way users get it: model.onnx + model.step.onnx."""
    import torch

    from rnnstream.export import export_model
    from rnnstream.train.model import Forecaster, ForecasterConfig

    torch.manual_seed(0)
    # the target is the feature (a forecaster of its own series), so live scores score it
    model = Forecaster(ForecasterConfig(cell=cell, hidden=hidden, layers=layers,
                                        feature_names=["y"], target_names=["y"])).eval()
    path = os.path.join(folder, f"{cell}_{hidden}_{layers}.onnx")
    # validation half-widths, as every trained model's contract stores them (coverage rows)
    levels = [0.5, 0.8, 0.9, 0.95]
    export_model(model, path, metrics={"calibration": {"levels": levels, "half_widths": {
        t: [[0.1, 0.2, 0.3, 0.4]] for t in model.config.target_names}}})
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
            io.bind_input(state_input_name(name), "cpu", 0, np.float32, shape, i.ctypes.data)
            io.bind_output(state_output_name(name), "cpu", 0, np.float32, shape, o.ctypes.data)
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
    sess = p._engine.session
    names = ("h", "c") if cell == "lstm" else ("h",)
    states = {n: (1, layers, hidden) for n in names}
    io_step, _keep = raw_iobinding(sess, states)
    feeds = {"x": np.full((1, 1, 1), 0.5, np.float32)}
    feeds.update({state_input_name(n): np.zeros(s, np.float32) for n, s in states.items()})
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
    live = Predictor(path, coverage=0.9)  # live accuracy + intervals on every step
    t_live = p50(lambda: live.step(0.5), iters)
    t_band = p50(lambda: (live.step(0.5), live.interval()), iters)
    t_step2 = p50(lambda: p.step(0.5), iters)  # again, interleaved: the ratios' denominator
    t_step = min(t_step, t_step2)
    t_io2 = p50(io_step, iters)  # again: guard against drift between the two
    base = min(t_io, t_io2)
    tag = f"{cell} h{hidden} L{layers}"
    rows.append((f"step  {tag}", t_step, f"{t_step / base:.2f}x raw IOBinding ({base:.2f})",
                 f"{t_run / t_step:.1f}x faster than run() ({t_run:.2f})",
                 f"{t_torch / t_step:.1f}x faster than torch ({t_torch:.1f})"))
    rows.append((f"step  {tag} coverage=0.9", t_live, f"{t_live / t_step:.2f}x step without "
                 f"live scores (+{t_live - t_step:.1f} µs)", "", ""))
    rows.append((f"step+interval() {tag}", t_band, f"{t_band / t_step:.2f}x step without "
                 f"live scores (+{t_band - t_step:.1f} µs)", "", ""))
    graph_choice(path, states, iters, tag, rows)


def graph_choice(path, states, iters, tag, rows):
    """Raw IOBinding ping-pong at batch 1 on the single-step graph vs the sequence graph: the
    figure behind the runtime's choice of graph (interleaved 3 times, medians)."""
    import onnxruntime as ort

    from rnnstream.export.step_graph import step_path
    from rnnstream.runtime._session import default_session_options

    opts = default_session_options()
    sessions = {name: ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"])
                for name, p in (("seq", path), ("step", step_path(path)))}
    steps = {name: raw_iobinding(sess, states) for name, sess in sessions.items()}
    t = {name: [] for name in steps}
    for _ in range(3):
        for name, (fn, _keep) in steps.items():
            t[name].append(p50(fn, iters // 2))
    seq, step = (float(np.median(t[k])) for k in ("seq", "step"))
    rows.append((f"graph {tag} B=1", step, f"step graph {step:.2f} vs sequence graph {seq:.2f} "
                 f"(raw IOBinding): step graph {seq / step:.2f}x as fast", "", ""))


def prime_bench(path, iters, rows, n=10_000):
    from rnnstream.runtime import Predictor

    p = Predictor(path)
    sess = p._engine.session
    hist = np.random.default_rng(0).normal(size=(n, 1)).astype(np.float32)
    feeds = {INPUT_NAME: hist[None], **{state_input_name(n): np.zeros((1, 1, 32), np.float32)
                                        for n in CELLS["lstm"].states}}
    t_raw = p50(lambda: sess.run(None, feeds), iters, warmup=3)
    t_prime = p50(lambda: p.prime(hist), iters, warmup=3)
    rows.append((f"prime {n} points", t_prime, f"{t_prime / t_raw:.2f}x one raw run() "
                 f"({t_raw:.0f})", "", ""))


def pool_bench(path, model, hidden, batches, iters, rows):
    """Stream-steps/s of StreamPool.step_many against one raw batched call at the same B.

    Baselines: onnxruntime ``run()`` on the sequence model (numpy in, numpy out) and torch eager
    (same Forecaster, ``torch.inference_mode()``, one thread); the raw step-graph ``run()`` is
    shown for reference. Each case is measured three times interleaved; medians are reported.
    """
    import onnxruntime as ort
    import torch

    from rnnstream.export.step_graph import step_path
    from rnnstream.runtime import StreamPool
    from rnnstream.runtime._session import default_session_options

    torch.set_num_threads(1)
    opts = default_session_options()
    seq = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    step = ort.InferenceSession(step_path(path), opts, providers=["CPUExecutionProvider"])
    for b in batches:
        pool = StreamPool(path, capacity=b, threads=1)  # one core, as the baselines
        keys = list(range(b))
        for k in keys:
            pool.add(k)
        rng = np.random.default_rng(b)
        vals = rng.normal(size=(b, 1)).astype(np.float32)
        h0 = rng.uniform(-0.5, 0.5, (b, 1, hidden)).astype(np.float32)
        feeds = {INPUT_NAME: vals[:, None, :],
                 **{state_input_name(n): h0.copy() for n in CELLS["lstm"].states}}
        tstate = (torch.from_numpy(h0), torch.from_numpy(h0.copy()))
        tx = torch.from_numpy(vals[:, None, :])

        def torch_step(tx=tx, tstate=tstate):
            with torch.inference_mode():
                model(tx, tstate)

        cases = {
            "pool": lambda pool=pool, keys=keys, vals=vals: pool.step_many(keys, vals),
            "raw": lambda feeds=feeds: seq.run(None, feeds),
            "step": lambda feeds=feeds: step.run(None, feeds),
            "torch": torch_step,
        }
        n = max(20, iters // max(1, b // 16))
        t = {k: [] for k in cases}
        for _ in range(3):
            for k, fn in cases.items():
                t[k].append(p50(fn, n, warmup=10))
        t = {k: float(np.median(v)) for k, v in t.items()}
        best = min(t["raw"], t["torch"])
        rate = {k: b / v * 1e6 for k, v in t.items()}
        rows.append((f"pool  B={b}", t["pool"], f"pool {rate['pool'] / 1e6:.2f} M steps/s",
                     f"{best / t['pool']:.2f}x best baseline", f"raw run() {rate['raw'] / 1e6:.2f}",
                     f"torch {rate['torch'] / 1e6:.2f}", f"raw step graph "
                     f"{rate['step'] / 1e6:.2f} M/s", f"pool - raw {t['pool'] - t['raw']:+.1f} µs"))
        if b > 1:
            live_pool(path, b, keys, vals, n, rows)


def live_pool(path, b, keys, vals, n, rows):
    """StreamPool with coverage=0.9 against the same pool without, interleaved 5 times."""
    from rnnstream.runtime import StreamPool

    pools = {}
    for cov in (None, 0.9):
        pools[cov] = StreamPool(path, capacity=b, coverage=cov, threads=1)
        for k in keys:
            pools[cov].add(k)
    t = {cov: [] for cov in pools}
    for _ in range(5):
        for cov, pool in pools.items():
            t[cov].append(p50(lambda pool=pool: pool.step_many(keys, vals), n, warmup=10))
    off, on = (float(np.median(t[c])) for c in (None, 0.9))
    rows.append((f"pool  B={b} coverage=0.9", on, f"{on / off:.2f}x the pool without live "
                 f"scores (+{on - off:.1f} µs, {(on - off) / b * 1e3:.0f} ns a stream)", "", ""))


def scaling_bench(path, tag, sizes, counts, iters, rows, curve, forced=False):
    """StreamPool(threads=N) against threads=1 at each batch size: the same pool contents and
    values, the thread counts alternated 5 times, medians. ``curve`` gets (tag, B, N, µs).
    ``forced``: every batch goes to every thread (the threshold set to nothing), to find where
    the hop starts to pay (the figure behind PARALLEL_WORK)."""
    from rnnstream.runtime import StreamPool
    from rnnstream.runtime import pool as pool_module

    for b in sizes:
        pools = {}
        for n in counts:
            saved = pool_module.PARALLEL_WORK
            if forced:
                pool_module.PARALLEL_WORK = 1
            try:
                pools[n] = StreamPool(path, capacity=b, threads=n)
            finally:
                pool_module.PARALLEL_WORK = saved
            for k in range(b):
                pools[n].add(k)
        keys = list(range(b))
        vals = np.random.default_rng(b).normal(size=(b, 1)).astype(np.float32)
        reps = max(20, iters // max(1, b // 16))
        t = {n: [] for n in pools}
        for _ in range(5):
            for n, pool in pools.items():
                t[n].append(p50(lambda pool=pool, keys=keys, vals=vals: pool.step_many(keys, vals),
                                reps, warmup=10))
        med = {n: float(np.median(v)) for n, v in t.items()}
        for n in counts:
            curve.append((tag, b, n, med[n], pools[n]._runner._min_rows))
        parts = [f"{n} threads {b / med[n]:.2f} M/s ({med[1] / med[n]:.2f}x)" for n in counts[1:]]
        kind = "forced" if forced else "cores"
        rows.append((f"{kind} {tag} B={b}", med[1], f"1 thread {b / med[1]:.2f} M/s", *parts))
        for pool in pools.values():
            pool.close()


def hop_bench(counts, iters):
    """One round trip through the pool's workers with empty tasks (µs), per thread count."""
    from rnnstream.runtime._shards import Workers

    out = {}
    for n in counts:
        workers = Workers(n)
        tasks = [lambda: None] * n
        out[n] = p50(lambda workers=workers, tasks=tasks: workers.run(tasks), iters)
        workers.close()
    return out


def session_choice(path, hidden, layers, b, iters, rows):
    """Two threads over one shared session against a session per thread (raw IOBinding, the
    batch cut in two halves), and one thread: the figure behind the pool's shared session."""
    import threading

    import onnxruntime as ort

    from rnnstream.export.step_graph import step_path
    from rnnstream.runtime._session import default_session_options

    opts = default_session_options()
    s1, s2 = (ort.InferenceSession(step_path(path), opts, providers=["CPUExecutionProvider"])
              for _ in range(2))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(b, 1, 1)).astype(np.float32)
    y = np.zeros((b, 1, 1), np.float32)
    ins = [rng.uniform(-0.5, 0.5, (b, layers, hidden)).astype(np.float32) for _ in range(2)]
    outs = [np.zeros_like(a) for a in ins]

    def bind(sess, i, j):
        io = sess.io_binding()
        io.bind_input(INPUT_NAME, "cpu", 0, np.float32, x[i:j].shape, x[i:j].ctypes.data)
        io.bind_output("y", "cpu", 0, np.float32, y[i:j].shape, y[i:j].ctypes.data)
        for name, a, o in zip(CELLS["lstm"].states, ins, outs, strict=True):
            io.bind_input(state_input_name(name), "cpu", 0, np.float32, a[i:j].shape,
                          a[i:j].ctypes.data)
            io.bind_output(state_output_name(name), "cpu", 0, np.float32, o[i:j].shape,
                           o[i:j].ctypes.data)
        return io

    h = b // 2
    one = [bind(s1, 0, h), bind(s1, h, b)]
    shared = [bind(s1, 0, h), bind(s1, h, b)]
    own = [bind(s1, 0, h), bind(s2, h, b)]

    def serial():
        s1.run_with_iobinding(one[0])
        s1.run_with_iobinding(one[1])

    def two(pair, sessions):
        worker = threading.Thread(target=sessions[1].run_with_iobinding, args=(pair[1],))
        worker.start()
        sessions[0].run_with_iobinding(pair[0])
        worker.join()

    cases = {"one": serial, "shared": lambda: two(shared, (s1, s1)),
             "own": lambda: two(own, (s1, s2))}
    t = {k: [] for k in cases}
    for _ in range(5):
        for k, fn in cases.items():
            t[k].append(p50(fn, iters, warmup=5))
    med = {k: float(np.median(v)) for k, v in t.items()}
    rows.append((f"session h{hidden} L{layers} B={b}", med["one"],
                 f"2 threads, one shared session {med['one'] / med['shared']:.2f}x",
                 f"a session per thread {med['one'] / med['own']:.2f}x",
                 "(raw IOBinding, two halves)"))


def predict_cores(curve, hops, rows, per_worker=5.0):
    """On paper: t(N) = serial + parallel / N + wake + (N - 2) * per_worker for a batch split
    over N threads (Amdahl's law plus the hand-off): serial and parallel fitted per batch size
    from the 1- and 2-thread medians, wake = the measured round trip through one worker (its
    wake-up and the caller's, paid once: the workers wake in parallel), per_worker = the
    caller's cost for each further worker (queue put and get, a futex wake: 5 µs assumed, not
    measurable on 2 cores). Threads used: the pool's rule, min(cores, MAX_THREADS,
    B // parallel_rows), and all the cores for comparison; memory bandwidth assumed ample."""
    from rnnstream.runtime.pool import MAX_THREADS

    wake = max(0.0, hops[2] - hops[1]) if 2 in hops else 0.0
    by: dict = {}
    for tag, b, n, t, min_rows in curve:
        by.setdefault((tag, b, min_rows), {})[n] = t
    for (tag, b, min_rows), t in by.items():
        if 2 not in t:
            continue
        if b // min_rows < 2:
            rows.append((f"model {tag} B={b}", t[1], f"one call at any core count (under "
                         f"2 x {min_rows} rows, the split threshold)", "", ""))
            continue
        parallel = max(0.0, 2 * (t[1] - t[2] + wake))  # t1 - t2 = parallel / 2 - wake
        serial = max(0.0, t[1] - parallel)

        def speedup(n, t1=t[1], serial=serial, parallel=parallel):
            return t1 / (serial + parallel / n + wake + max(0, n - 2) * per_worker)

        guesses = []
        for cores in (16, 64):
            used = max(1, min(cores, MAX_THREADS, b // min_rows))
            guesses.append(f"{cores} cores: pool {speedup(used):.1f}x ({used} threads), "
                           f"all {cores} {speedup(cores):.1f}x")
        rows.append((f"model {tag} B={b}", serial, f"serial {serial:.0f} µs + parallel "
                     f"{parallel:.0f} µs, wake {wake:.0f} µs", *guesses))


def import_bench(rows, reps):
    # As installed: pip compiles every module to bytecode at install time, so allow (and warm)
    # the bytecode cache even where PYTHONDONTWRITEBYTECODE is set in this shell; without it
    # every import of ours would be timed compiling source.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def t(stmt):
        subprocess.run([sys.executable, "-c", stmt], check=True, env=env)  # warm the cache
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", stmt], check=True, env=env)
            ts.append(time.perf_counter() - t0)
        return float(np.median(ts)) * 1e6

    t_ort = t("import onnxruntime")
    t_rt = t("import rnnstream.runtime, sys; assert 'torch' not in sys.modules")
    rows.append(("import rnnstream.runtime", t_rt, f"{t_rt / t_ort:.2f}x import onnxruntime "
                 f"({t_ort / 1e3:.0f} ms)", "", ""))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    ap.add_argument("--threads", type=int, help="a third thread count for the cores rows")
    ap.add_argument("--only-cores", action="store_true", help="the cores rows alone")
    args = ap.parse_args()
    iters = 3000 if args.quick else 20000
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as folder:
        small = build("lstm", 32, 1, folder)
        big = build("lstm", 128, 2, folder)
        if not args.only_cores:
            single_stream(*small, "lstm", 32, 1, iters, rows)
            single_stream(*big, "lstm", 128, 2, iters, rows)
            prime_bench(small[0], 10 if args.quick else 50, rows)
            pool_bench(*small, 32, [1, 64, 1024, 16384], iters // 4, rows)
        counts = sorted({1, 2, args.threads or 2})
        curve: list[tuple] = []
        sizes = [1, 64, 256, 1024, 4096, 16384]
        scaling_bench(small[0], "h32 L1", sizes, counts, iters // 4, rows, curve)
        scaling_bench(big[0], "h128 L2", sizes, counts, iters // 16, rows, curve)
        session_choice(small[0], 32, 1, 4096, iters // 20, rows)
        session_choice(big[0], 128, 2, 1024, iters // 40, rows)
        scaling_bench(small[0], "h32 L1", [256, 512, 1024, 2048], [1, 2], iters // 4, rows,
                      [], forced=True)
        scaling_bench(big[0], "h128 L2", [16, 32, 64, 128], [1, 2], iters // 16, rows, [],
                      forced=True)
        predict_cores(curve, hop_bench(counts, iters), rows)
        if not args.only_cores:
            import_bench(rows, 3 if args.quick else 7)
    print(f"{'case':<26} {'p50 µs':>10}  ratios")
    for name, t, *notes in rows:
        print(f"{name:<26} {t:>10.2f}  " + " | ".join(n for n in notes if n))


if __name__ == "__main__":
    main()
