"""`rnnstream serve` on loopback: latency, throughput with and without batching, many sequences
per request, and an optional soak. The load generator runs in its own process on the same
machine (it competes with the server for the cores) and is bounded in requests and seconds.

    .venv/bin/python bench/bench_serve.py [--quick] [--soak-seconds S] [--soak-rate R]

1. latency: one sequence, one point per request, keep-alive; client p50/p99 over HTTP (JSON,
   http.client) and gRPC (the generated stub, unary), and the server-side time (the server's
   request_seconds histogram, from the parsed request to the encoded answer).
2. throughput: 256 sequences, each with one request in flight (closed loop), one point per
   request, over HTTP (256 keep-alive connections) and one gRPC stream; predictions/s with
   cross-request batching (default; and with --queue-delay-us 1000) and without
   (--max-batch 1), same run.
3. batch dimension: one request carries 1,000 sequences' points (x [1000, 1, F] + INT64
   sequence_id [1000], binary); stream-steps/s against StreamPool.step_many in-process.
   Rows 1-3 are also run with ``--coverage 0.9`` (outputs lower/upper, live scores) where it
   is cheap (in-process CPU, 256 sequences over HTTP with delay 0, the 1,000-sequence
   request), each printed as a ratio to the same case without coverage, same run.
4. soak (--soak-seconds > 0): a steady request rate over HTTP from 64 sequences; per window,
   the server's RSS, errors and the client p99.
5. the write-ahead log (``--state``, ``--durability log``, the default, against ``--durability
   snapshot``): one sequence's client p50 over HTTP, and predictions/s with p50 at 64 and 256
   sequences (closed loop) over HTTP and gRPC, on this machine's disk (the --state file in a
   temporary folder; ``--log-dir`` picks another). The two modes alternate; the
   figures are the medians of ``--rounds`` (3) alternating rounds, with the server-side p50
   and, in process, where one round's log time goes (encoding, write, fdatasync of a growing
   against a preallocated file). ``--log-only`` runs this part alone.
6. the step thread (``--step-thread-rows``, default 16, against 0: every step on the loop),
   alternating, medians: one sequence's client and server p50, predictions/s at 64 and 256
   sequences over HTTP, 256 over a gRPC stream, 64 concurrent unary gRPC calls, and the
   server's CPU per prediction for each. ``--thread-only`` runs this part alone.

Model: an exported LSTM (hidden 64, 2 layers, one feature) made here, or the repository's
release-0.1.0 fixture (LSTM 8 x 2) without torch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
LEGACY = ROOT / "tests" / "data" / "legacy_v0_1_0" / "model.onnx"
COVERAGE = 0.9  # the coverage rows (--coverage)


# -- model and server -----------------------------------------------------------------------------
def build_model(folder: str) -> tuple[Path, str]:
    try:
        import torch

        from rnnstream.export import export_model
        from rnnstream.train.model import Forecaster, ForecasterConfig
    except ImportError:
        return LEGACY, "LSTM hidden 8, 2 layers (release 0.1.0 fixture)"
    torch.manual_seed(0)
    # the target is the feature (a forecaster of its own series), so --coverage scores it;
    # validation half-widths as every trained model's contract stores them, so intervals are
    # finite from the first point (as bench_runtime.build)
    model = Forecaster(ForecasterConfig(cell="lstm", hidden=64, layers=2, feature_names=["y"],
                                        target_names=["y"])).eval()
    path = Path(folder) / "model.onnx"
    export_model(model, path, metrics={"calibration": {
        "levels": [0.5, 0.8, 0.9, 0.95], "half_widths": {"y": [[0.1, 0.2, 0.3, 0.4]]}}})
    return path, "LSTM hidden 64, 2 layers"


@contextlib.contextmanager
def server(model: Path, *flags: str):
    argv = [sys.executable, "-m", "rnnstream.cli.main", "serve", str(model), "--http-port", "0",
            "--grpc-port", "0", "--idle-timeout", "0", *flags]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict) and doc.get("event") == "serving":
                    break
        else:
            raise RuntimeError("the server did not start")
        drain = threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True)
        drain.start()
        yield proc, doc["http_port"], doc["grpc_port"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def metrics(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    return text


def histogram(text: str, name: str) -> tuple[list[float], list[float]]:
    bounds, counts = [], []
    for le, c in re.findall(rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M):
        bounds.append(float(le))
        counts.append(float(c))
    return bounds, counts


def quantile_between(before: str, after: str, name: str, q: float) -> float:
    """q-quantile of the observations made between two scrapes (linear within a bucket)."""
    bounds, c1 = histogram(after, name)
    _, c0 = histogram(before, name)
    counts = np.array(c1) - np.array(c0)
    total = counts[-1]
    if total <= 0:
        return float("nan")
    target = q * total
    i = int(np.searchsorted(counts, target))
    lo = bounds[i - 1] if i else 0.0
    below = counts[i - 1] if i else 0.0
    width = counts[i] - below
    return lo + (bounds[i] - lo) * ((target - below) / width if width else 0.0)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1])


def body(seq: int, value: float, start: bool = False) -> bytes:
    return (b'{"parameters":{"sequence_id":%d,"sequence_start":%s},"inputs":[{"name":"x",'
            b'"datatype":"FP32","shape":[1,1,1],"data":[%r]}]}'
            % (seq, b"true" if start else b"false", value))


# -- 1. latency -----------------------------------------------------------------------------------
def latency_http(port: int, n: int) -> np.ndarray:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    headers = {"Content-Type": "application/json"}
    out = np.empty(n)
    for i in range(n + 200):
        data = body(1, 0.001 * (i % 100), start=i == 0)
        t = time.perf_counter()
        conn.request("POST", "/v2/models/model/infer", data, headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(r.status)
        if i >= 200:
            out[i - 200] = time.perf_counter() - t
    conn.close()
    return out


def grpc_request(pb, seq: int, value: float, start: bool = False):
    req = pb.ModelInferRequest(model_name="model")
    req.parameters["sequence_id"].int64_param = seq
    req.parameters["sequence_start"].bool_param = start
    t = req.inputs.add(name="x", datatype="FP32")
    t.shape.extend([1, 1, 1])
    req.raw_input_contents.append(np.float32(value).tobytes())
    return req


def latency_grpc(port: int, n: int) -> np.ndarray:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    out = np.empty(n)
    for i in range(n + 200):
        req = grpc_request(pb, 2, 0.001 * (i % 100), start=i == 0)
        t = time.perf_counter()
        stub.ModelInfer(req)
        if i >= 200:
            out[i - 200] = time.perf_counter() - t
    channel.close()
    return out


def cpu_per_request(model: Path, n: int, coverage: float | None = None) -> np.ndarray:
    """In-process CPU of one HTTP JSON request, by stage (µs, p50): parse, queue + round (the
    pool step included), encode; and the bare StreamPool.step_many of one row for scale (both
    pools with ``coverage``). The round is called directly, so no event-loop or socket time is
    in these figures."""
    from rnnstream.runtime import LiveConfig, StreamPool
    from rnnstream.serve import Limits, ModelService
    from rnnstream.serve.metrics import Metrics
    from rnnstream.serve.protocol import http_request, http_response

    loop = asyncio.new_event_loop()
    service = ModelService("model", str(model), Limits(idle_timeout_s=None), Metrics(),
                           live=None if coverage is None else LiveConfig(coverage=coverage))
    answers: list = []

    def one(data: bytes) -> None:
        req, rid, binary = http_request(data, None)
        service.submit_with(req, lambda y, error: answers.append((y, rid, binary)))
        service._scheduled.cancel()  # run the round now, not on the (idle) loop
        service._scheduled = None
        service._round()

    service._loop = loop
    one(body(5, 0.25, True))
    pool = StreamPool(model, coverage=coverage)
    pool.add(5)
    x = np.ones((1, 1), np.float32)
    ts = np.empty((n, 4))
    for i in range(n):
        data = body(5, 0.25)
        t0 = time.perf_counter()
        req, rid, binary = http_request(data, None)
        t1 = time.perf_counter()
        service.submit_with(req, lambda y, error: answers.append(y))
        service._scheduled.cancel()
        service._scheduled = None
        service._round()
        t2 = time.perf_counter()
        http_response("model", rid, answers.pop(), binary)
        t3 = time.perf_counter()
        pool.step_many([5], x)
        ts[i] = (t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3)
    loop.close()
    return np.median(ts, axis=0) * 1e6


# -- 2. throughput (load generator process) -------------------------------------------------------
class _HttpSeq(asyncio.Protocol):
    """One keep-alive connection driving one sequence: next request when the answer is in."""

    def __init__(self, seq: int, stats: dict) -> None:
        import httptools

        self.seq, self.stats = seq, stats  # stats["stop_at"]: send no request after it
        self.parser = httptools.HttpResponseParser(self)
        self.done = asyncio.get_running_loop().create_future()
        self.first = True

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        self.sent = time.perf_counter()
        self.transport.write(
            b"POST /v2/models/model/infer HTTP/1.1\r\nhost: b\r\ncontent-type: "
            b"application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (len(b := body(self.seq, 0.25, self.first)), b))
        self.first = False

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        now = time.perf_counter()
        st = self.stats
        if self.parser.get_status_code() == 200:
            st["ok"] += 1
            st["lat"].append(now - self.sent)
        else:
            st["errors"] += 1
        if now < st["stop_at"]:
            self._send()
        else:
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)


async def _http_load(port: int, seqs: int, seconds: float, rate: float | None,
                     base: int) -> dict:
    loop = asyncio.get_running_loop()
    stats = {"ok": 0, "errors": 0, "lat": []}
    if rate:  # open loop at a steady rate, 64 connections round robin
        return await _http_steady(port, seqs, seconds, rate, base)
    # each connection sends its first request as soon as it is made, and making 256 of them
    # takes a second or more while the server answers the first ones: count only what is
    # answered after the last connection is made (the steady state), for `seconds` from then
    stats["stop_at"] = float("inf")
    conns = [await loop.create_connection(lambda s=s: _HttpSeq(base + s, stats),
                                          "127.0.0.1", port) for s in range(seqs)]
    start = time.perf_counter()
    stats["stop_at"] = start + seconds
    ok0, lat0 = stats["ok"], len(stats["lat"])
    await asyncio.gather(*(p.done for _, p in conns))
    stats["ok"] -= ok0
    stats["setup_ok"] = ok0  # answered while the connections were being made (not counted)
    del stats["lat"][:lat0]
    stats["seconds"] = time.perf_counter() - start
    return stats


async def _http_steady(port: int, seqs: int, seconds: float, rate: float, base: int) -> dict:
    """Steady-rate requests; per window of 5 s: ok, errors, p99."""
    stats = {"ok": 0, "errors": 0, "lat": []}
    readers = []
    for s in range(seqs):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        readers.append((r, w, base + s))
    windows = []
    start = time.perf_counter()
    period = seqs / rate  # each connection sends once per period

    async def one(r, w, seq, first):
        payload = body(seq, 0.5, first)
        t = time.perf_counter()
        w.write(b"POST /v2/models/model/infer HTTP/1.1\r\nhost: b\r\ncontent-length: %d\r\n\r\n%s"
                % (len(payload), payload))
        head = await r.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head).group(1))
        await r.readexactly(length)
        ok = head.startswith(b"HTTP/1.1 200")
        return ok, time.perf_counter() - t

    async def drive(r, w, seq, offset):
        await asyncio.sleep(offset)
        first = True
        nxt = time.perf_counter()
        while time.perf_counter() - start < seconds:
            ok, lat = await one(r, w, seq, first)
            first = False
            stats["ok" if ok else "errors"] += 1
            stats["lat"].append((time.perf_counter() - start, lat))
            nxt += period
            await asyncio.sleep(max(0.0, nxt - time.perf_counter()))

    await asyncio.gather(*(drive(r, w, seq, i * period / seqs)
                           for i, (r, w, seq) in enumerate(readers)))
    for _, w, _ in readers:
        w.close()
    stats["windows"] = windows
    stats["seconds"] = time.perf_counter() - start
    return stats


async def _grpc_load(port: int, seqs: int, seconds: float, base: int) -> dict:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    stats = {"ok": 0, "errors": 0, "lat": []}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        outbox: asyncio.Queue = asyncio.Queue()
        sent: dict[str, float] = {}
        stop_at = time.perf_counter() + seconds

        def enqueue(s: int, first: bool) -> None:
            req = grpc_request(pb, base + s, 0.25, first)
            req.id = str(s)
            sent[req.id] = time.perf_counter()
            outbox.put_nowait(req)

        async def requests():
            while (req := await outbox.get()) is not None:
                yield req

        for s in range(seqs):
            enqueue(s, True)
        live = seqs
        start = time.perf_counter()
        call = stub.ModelStreamInfer(requests())
        async for resp in call:
            now = time.perf_counter()
            rid = resp.infer_response.id
            if resp.error_message:
                stats["errors"] += 1
                live -= 1
            else:
                stats["ok"] += 1
                stats["lat"].append(now - sent[rid])
                if now < stop_at:
                    enqueue(int(rid), False)
                else:
                    live -= 1
            if live == 0:
                outbox.put_nowait(None)
                break
        stats["seconds"] = time.perf_counter() - start
    return stats


async def _grpc_unary_load(port: int, seqs: int, seconds: float, base: int) -> dict:
    """``seqs`` concurrent unary ModelInfer calls (one per sequence, the next when the answer
    is in; how issue 22 compares gRPC stacks), counted from when every sequence has started."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    stats = {"ok": 0, "errors": 0, "lat": []}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        started = asyncio.Event()
        ready = [0]
        stop_at = [float("inf")]

        async def drive(s: int) -> None:
            try:
                await stub.ModelInfer(grpc_request(pb, base + s, 0.25, True))
            except grpc.RpcError:  # (sequence id 0 is "none"): counted, and the others go on
                stats["errors"] += 1
            ready[0] += 1
            if ready[0] == seqs:
                stop_at[0] = time.perf_counter() + seconds
                started.set()
            await started.wait()
            while (t := time.perf_counter()) < stop_at[0]:
                try:
                    await stub.ModelInfer(grpc_request(pb, base + s, 0.25))
                except grpc.RpcError:
                    stats["errors"] += 1
                    continue
                stats["ok"] += 1
                stats["lat"].append(time.perf_counter() - t)

        first = time.perf_counter()
        tasks = [asyncio.ensure_future(drive(s)) for s in range(seqs)]
        await started.wait()
        start = time.perf_counter()
        await asyncio.gather(*tasks)
        stats["seconds"] = time.perf_counter() - start
        stats["setup_seconds"] = start - first
    return stats


def _loadgen(kind: str, port: int, seqs: int, seconds: float, rate: float | None, base: int,
             conn) -> None:
    if kind == "http":
        stats = asyncio.run(_http_load(port, seqs, seconds, rate, base))
    elif kind == "grpc-unary":
        stats = asyncio.run(_grpc_unary_load(port, seqs, seconds, base))
    else:
        stats = asyncio.run(_grpc_load(port, seqs, seconds, base))
    conn.send(stats)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_cpu(proc, kind: str, port: int, seqs: int, seconds: float, base: int = 10_000
             ) -> tuple[dict, float]:
    """:func:`load`, and the server's CPU µs per answered prediction meanwhile (its set-up
    answers included in the count, as they were in the CPU)."""
    cpu0 = cpu_seconds(proc.pid)
    st = load(kind, port, seqs, seconds, base=base)
    used = cpu_seconds(proc.pid) - cpu0
    answered = st["ok"] + st.get("setup_ok", 0) + (seqs if kind == "grpc-unary" else 0)
    return st, used / max(1, answered) * 1e6


def load(kind: str, port: int, seqs: int, seconds: float, rate: float | None = None,
         base: int = 10_000) -> dict:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    p = ctx.Process(target=_loadgen, args=(kind, port, seqs, seconds, rate, base, child))
    p.start()
    stats = parent.recv()
    p.join(60)
    return stats


# -- 3. batch dimension ---------------------------------------------------------------------------
def batched_request(n: int, first: bool) -> tuple[bytes, dict]:
    x = np.random.default_rng(0).standard_normal((n, 1, 1)).astype(np.float32)
    ids = np.arange(1, n + 1, dtype=np.int64)
    head = {"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [n, 1, 1],
         "parameters": {"binary_data_size": x.nbytes}},
        {"name": "sequence_id", "datatype": "INT64", "shape": [n],
         "parameters": {"binary_data_size": ids.nbytes}}],
        "parameters": {"sequence_start": first, "binary_data_output": True}}
    h = json.dumps(head).encode()
    return h + x.tobytes() + ids.tobytes(), {"Inference-Header-Content-Length": str(len(h)),
                                             "Content-Type": "application/octet-stream"}


def batch_http(port: int, n: int, reps: int) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    data, headers = batched_request(n, True)
    conn.request("POST", "/v2/models/model/infer", data, headers)
    assert conn.getresponse().read()
    data, headers = batched_request(n, False)
    t = time.perf_counter()
    for _ in range(reps):
        conn.request("POST", "/v2/models/model/infer", data, headers)
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(r.status)
    elapsed = time.perf_counter() - t
    conn.close()
    return n * reps / elapsed


def batch_inprocess(model: Path, n: int, reps: int, coverage: float | None = None) -> float:
    from rnnstream.runtime import StreamPool

    pool = StreamPool(model, coverage=coverage)
    keys = list(range(1, n + 1))
    for k in keys:
        pool.add(k)
    x = np.random.default_rng(0).standard_normal((n, 1)).astype(np.float32)
    for _ in range(5):
        pool.step_many(keys, x)
    t = time.perf_counter()
    for _ in range(reps):
        pool.step_many(keys, x)
    return n * reps / (time.perf_counter() - t)


# -- report ---------------------------------------------------------------------------------------
def mean_batch(text: str) -> float:
    """Mean sequences per pool step, from a /metrics page."""
    bsum = float(re.search(r"^rnnstream_serve_batch_size_sum (\S+)", text, re.M).group(1))
    bcount = float(re.search(r"^rnnstream_serve_batch_size_count (\S+)", text, re.M).group(1))
    return bsum / max(bcount, 1)


def pct(a, q) -> float:
    return float(np.percentile(np.asarray(a), q) * 1e6)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests, shorter runs")
    ap.add_argument("--soak-seconds", type=float, default=0.0,
                    help="run the soak this long (0: skip; make bench runs a short one)")
    ap.add_argument("--soak-rate", type=float, default=1000.0, help="soak requests per second")
    ap.add_argument("--log-only", action="store_true", help="run only part 5 (the log's cost)")
    ap.add_argument("--log-dir", default=None,
                    help="folder for part 5's --state file and log (default: a temporary one)")
    ap.add_argument("--thread-only", action="store_true",
                    help="run only part 6 (the step thread against the step on the loop)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="parts 5 and 6: alternating rounds per configuration (medians)")
    args = ap.parse_args()
    if args.log_only or args.thread_only:
        with tempfile.TemporaryDirectory() as folder:
            model, what = build_model(folder)
            print(f"model: {what}; {os.cpu_count()} cores; load average "
                  f"{os.getloadavg()[0]:.1f}")
            n_lat, secs = (1500, 2.0) if args.quick else (3000, 5.0)
            if args.log_only:
                log_cost(model, args.log_dir or folder, n_lat, secs, args.rounds)
            if args.thread_only:
                step_thread(model, folder, n_lat, secs, args.rounds)
        return 0
    n_lat = 1500 if args.quick else 5000
    seconds = 2.0 if args.quick else 5.0
    with tempfile.TemporaryDirectory() as folder:
        model, what = build_model(folder)
        print(f"model: {what}; load generator in its own process on the same machine "
              f"({os.cpu_count()} cores)\n")
        with server(model) as (_, hp, gp):
            before = metrics(hp)
            lat_h = latency_http(hp, n_lat)
            mid = metrics(hp)
            lat_g = latency_grpc(gp, n_lat)
            after = metrics(hp)
            name = "rnnstream_serve_request_seconds"
            print("1. one sequence, one point per request, keep-alive")
            cpu = cpu_per_request(model, 2000 if args.quick else 5000)
            print(f"   server CPU per request, in-process p50: parse {cpu[0]:.1f} µs, queue + "
                  f"step {cpu[1]:.1f} µs (the pool step alone: {cpu[3]:.1f} µs), encode "
                  f"{cpu[2]:.1f} µs; total {cpu[:3].sum():.1f} µs")
            cov = cpu_per_request(model, 2000 if args.quick else 5000, COVERAGE)
            print(f"   same with --coverage {COVERAGE}: parse {cov[0]:.1f} µs, queue + step "
                  f"{cov[1]:.1f} µs (the pool step alone: {cov[3]:.1f} µs), encode "
                  f"{cov[2]:.1f} µs; total {cov[:3].sum():.1f} µs = "
                  f"{cov[:3].sum() / cpu[:3].sum():.2f}x without; beyond the pool step "
                  f"{cov[:3].sum() - cov[3]:.1f} µs vs {cpu[:3].sum() - cpu[3]:.1f} µs")
            print(f"   {'protocol':<14}{'client p50 µs':>14}{'client p99 µs':>14}"
                  f"{'server p50 µs':>14}{'server p99 µs':>14}")
            for label, lat, a, b in (("HTTP JSON", lat_h, before, mid),
                                     ("gRPC unary", lat_g, mid, after)):
                print(f"   {label:<14}{pct(lat, 50):14.0f}{pct(lat, 99):14.0f}"
                      f"{quantile_between(a, b, name, 0.5) * 1e6:14.0f}"
                      f"{quantile_between(a, b, name, 0.99) * 1e6:14.0f}")
        print("\n2. 256 sequences, one request each in flight, one point per request")
        print(f"   {'protocol':<10}{'batching':<24}{'predictions/s':>14}{'p50 ms':>8}"
              f"{'p99 ms':>8}{'mean batch':>11}{'errors':>7}")
        rates = {}
        modes = (((), "on, delay 0 (default)"), (("--queue-delay-us", "1000"), "on, delay 1 ms"),
                 (("--max-batch", "1"), "off (--max-batch 1)"))
        for kind in ("http", "grpc"):
            for flags, label in modes:
                with server(model, *flags) as (_, hp, gp):
                    st = load(kind, hp if kind == "http" else gp, 256, seconds)
                    after = metrics(hp)
                rate = st["ok"] / st["seconds"]
                rates[kind, label] = rate
                print(f"   {kind.upper():<10}{label:<24}{rate:14,.0f}"
                      f"{pct(st['lat'], 50) / 1e3:8.2f}{pct(st['lat'], 99) / 1e3:8.2f}"
                      f"{mean_batch(after):11.1f}{st['errors']:7d}")
        with server(model, "--coverage", str(COVERAGE)) as (_, hp, gp):
            st = load("http", hp, 256, seconds)
            after = metrics(hp)
        rate = st["ok"] / st["seconds"]
        print(f"   {'HTTP':<10}{'on, delay 0, coverage':<24}{rate:14,.0f}"
              f"{pct(st['lat'], 50) / 1e3:8.2f}{pct(st['lat'], 99) / 1e3:8.2f}"
              f"{mean_batch(after):11.1f}{st['errors']:7d}")
        print(f"   HTTP: --coverage {COVERAGE} {rate / rates['http', modes[0][1]]:.2f}x the "
              "rate without (delay 0)")
        for kind in ("http", "grpc"):
            off = rates[kind, modes[2][1]]
            print(f"   {kind.upper()}: batching {rates[kind, modes[0][1]] / off:.2f}x unbatched "
                  f"(delay 0), {rates[kind, modes[1][1]] / off:.2f}x (delay 1 ms)")
        n, reps = 1000, 50 if args.quick else 200
        with server(model) as (_proc, hp, gp):
            served = batch_http(hp, n, reps)
        local = batch_inprocess(model, n, reps)
        with server(model, "--coverage", str(COVERAGE)) as (_proc, hp, gp):
            served_cov = batch_http(hp, n, reps)
        local_cov = batch_inprocess(model, n, reps, COVERAGE)
        print(f"\n3. one request carrying {n} sequences' points (binary, HTTP)")
        print(f"   served: {served:,.0f} stream-steps/s; in-process StreamPool.step_many: "
              f"{local:,.0f}/s; served/in-process = {served / local:.2f}")
        print(f"   with --coverage {COVERAGE} (y, lower, upper): served {served_cov:,.0f}/s = "
              f"{served_cov / served:.2f}x without; in-process StreamPool(coverage=) "
              f"{local_cov:,.0f}/s = {local_cov / local:.2f}x without; served/in-process = "
              f"{served_cov / local_cov:.2f}")
        if args.soak_seconds > 0:
            soak(model, args.soak_seconds, args.soak_rate)
        log_cost(model, args.log_dir or folder, n_lat, seconds, args.rounds)
        step_thread(model, folder, n_lat, seconds, args.rounds)
    return 0


def fsync_p50(folder: str, n: int = 300) -> float:
    """p50 µs of fdatasync after a small append in ``folder`` (what one log commit costs)."""
    path = os.path.join(folder, "bench-fsync.tmp")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 100)
            t = time.perf_counter()
            os.fdatasync(fd)
            times.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.remove(path)
    return pct(times, 50)


def log_parts(folder: str, n: int = 400) -> None:
    """Where one acknowledged round's log time goes, in process: encoding its record (one
    row; 64 one-row requests), writing it, and the fdatasync, paired on the same disk: a log
    that grows with each append (the file size changes) against a preallocated one whose
    zeros each record overwrites (the server's). p50 µs."""
    from rnnstream.runtime.wal import LogWriter
    from rnnstream.serve.wal import Rows, encode_round

    one = [Rows([17], np.full((1, 1, 1), 0.5, np.float32), [False], [False])]
    many = [Rows([i], np.full((1, 1, 1), 0.5, np.float32), [False], [False])
            for i in range(64)]
    enc = {}
    for name, parts in (("1 row", one), ("64 one-row requests", many)):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            encode_round(parts, 1)
            times.append(time.perf_counter() - t)
        enc[name] = pct(times, 50)
    record = encode_round(one, 1)
    header = {"kind": "bench", "fingerprint": "", "base": ""}
    writers = {"grows": LogWriter.create(os.path.join(folder, "bench-grow.wal"), header),
               "preallocated": LogWriter.create(os.path.join(folder, "bench-pre.wal"), header,
                                                preallocate=8 << 20)}
    write: dict[str, list[float]] = {k: [] for k in writers}
    sync: dict[str, list[float]] = {k: [] for k in writers}
    try:
        for i in range(n):
            for name in (list(writers) if i % 2 else list(writers)[::-1]):
                w = writers[name]
                t = time.perf_counter()
                w.append(record)
                t1 = time.perf_counter()
                w.sync()
                write[name].append(t1 - t)
                sync[name].append(time.perf_counter() - t1)
    finally:
        for w in writers.values():
            w.close()
            os.remove(w.path)
    ratios = [a / b for a, b in zip(sync["preallocated"], sync["grows"], strict=True)]
    print(f"   one round's log work, in process (p50): encode {enc['1 row']:.1f} µs (1 row), "
          f"{enc['64 one-row requests']:.1f} µs (64 one-row requests); write "
          f"{pct(write['preallocated'], 50):.1f} µs; fdatasync {pct(sync['grows'], 50):.0f} µs "
          f"growing the file, {pct(sync['preallocated'], 50):.0f} µs preallocated (paired "
          f"ratio p50 {np.median(ratios):.2f})")


def compare(model: Path, folder: str, modes: list[tuple[str, tuple[str, ...]]], n_lat: int,
            seconds: float, rounds: int, cases: list[tuple[str, int]], cpu: bool = False
            ) -> dict:
    """Each mode's server (its flags), alternating, ``rounds`` times: one sequence's HTTP
    client and server-side p50, then for each (kind, sequences) in ``cases`` predictions/s,
    client p50 and (``cpu``) the server's CPU µs per prediction. Medians over the rounds."""
    runs: dict[tuple[str, str, int], list[tuple[float, float, float]]] = {}
    name = "rnnstream_serve_request_seconds"
    for r in range(rounds):
        for label, flags in (modes if r % 2 == 0 else modes[::-1]):
            state = os.path.join(folder, "bench-state.npz")
            for path in (state, state + ".wal"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            flags = tuple(f.replace("{state}", state) for f in flags)
            with server(model, *flags) as (proc, hp, gp):
                before = metrics(hp)
                lat = latency_http(hp, n_lat)
                server_p50 = quantile_between(before, metrics(hp), name, 0.5) * 1e6
                runs.setdefault((label, "one", 1), []).append(
                    (0.0, pct(lat, 50), server_p50))
                for kind, n in cases:
                    st, per = load_cpu(proc, kind, hp if kind == "http" else gp, n, seconds,
                                       base=100_000 * n)
                    runs.setdefault((label, kind, n), []).append(
                        (st["ok"] / st["seconds"], pct(st["lat"], 50), per if cpu else 0.0))
    return {k: np.median(v, axis=0) for k, v in runs.items()}


def print_compare(title: str, modes: list[str], med: dict, cases: list[tuple[str, int]],
                  cpu: bool = False) -> None:
    a, b = modes
    print(f"   {title}: medians; ratio = {b} / {a}")
    print(f"   {'load':<26}{a + ' /s':>14}{b + ' /s':>14}{'ratio':>7}"
          f"{a + ' p50 µs':>18}{b + ' p50 µs':>18}{'ratio':>7}"
          + (f"{a + ' CPU µs':>16}{b + ' CPU µs':>16}" if cpu else ""))
    one_a, one_b = med[a, "one", 1], med[b, "one", 1]
    print(f"   {'1 sequence, HTTP (client)':<26}{'-':>14}{'-':>14}{'-':>7}{one_a[1]:18.0f}"
          f"{one_b[1]:18.0f}{one_b[1] / one_a[1]:7.2f}")
    print(f"   {'1 sequence, HTTP (server)':<26}{'-':>14}{'-':>14}{'-':>7}{one_a[2]:18.0f}"
          f"{one_b[2]:18.0f}{one_b[2] / one_a[2]:7.2f}")
    for kind, n in cases:
        x, y = med[a, kind, n], med[b, kind, n]
        label = {"http": "HTTP", "grpc": "gRPC stream", "grpc-unary": "gRPC unary"}[kind]
        print(f"   {f'{n} sequences, {label}':<26}{x[0]:14,.0f}{y[0]:14,.0f}{y[0] / x[0]:7.2f}"
              f"{x[1]:18.0f}{y[1]:18.0f}{y[1] / x[1]:7.2f}"
              + (f"{x[2]:16.0f}{y[2]:16.0f}" if cpu else ""))


def log_cost(model: Path, folder: str, n_lat: int, seconds: float, rounds: int = 3) -> None:
    """Part 5: --durability log against --durability snapshot, alternating, medians."""
    print("\n5. the write-ahead log: --state with --durability log (default) vs snapshot")
    log_parts(folder)
    cases = [(kind, n) for n in (64, 256) for kind in ("http", "grpc")]
    disk = [fsync_p50(folder)]
    modes = [("snapshot", ("--state", "{state}", "--durability", "snapshot")),
             ("log", ("--state", "{state}", "--durability", "log"))]
    med = compare(model, folder, modes, n_lat, seconds, rounds, cases)
    disk.append(fsync_p50(folder))
    print(f"   the disk: fdatasync of a 100-byte append p50 {disk[0]:.0f} µs before the runs, "
          f"{disk[1]:.0f} µs after (it varies with what else the machine writes)")
    print_compare(f"{rounds} rounds, alternating", ["snapshot", "log"], med, cases)


def step_thread(model: Path, folder: str, n_lat: int, seconds: float, rounds: int = 3) -> None:
    """Part 6: every step on the event loop (--step-thread-rows 0) against the default (rounds
    of 16+ sequences on the step thread), alternating, medians; no --state."""
    print("\n6. the model step off the event loop: --step-thread-rows 0 (loop) vs default "
          "(thread)")
    cases = [("http", 64), ("http", 256), ("grpc", 256), ("grpc-unary", 64)]
    modes = [("loop", ("--step-thread-rows", "0")), ("thread", ())]
    med = compare(model, folder, modes, n_lat, seconds, rounds, cases, cpu=True)
    print_compare(f"{rounds} rounds, alternating; CPU: the server's per prediction",
                  ["loop", "thread"], med, cases, cpu=True)


def soak(model: Path, seconds: float, rate: float) -> None:
    print(f"\n4. soak: {rate:.0f} requests/s for {seconds:.0f} s over HTTP, 64 sequences")
    with server(model) as (proc, hp, _gp):
        samples = []
        stop = threading.Event()

        def watch():
            t0 = time.perf_counter()
            while not stop.wait(min(5.0, seconds / 10)):
                samples.append((time.perf_counter() - t0, rss_kib(proc.pid)))

        w = threading.Thread(target=watch, daemon=True)
        rss0 = rss_kib(proc.pid)
        w.start()
        st = load("http", hp, 64, seconds, rate=rate, base=50_000)
        stop.set()
        w.join()
        text = metrics(hp)
    lat = np.array(st["lat"])
    print(f"   requests ok {st['ok']:,}, errors {st['errors']}, achieved "
          f"{st['ok'] / st['seconds']:,.0f}/s; server RSS at start {rss0 / 1024:.1f} MiB")
    edges = np.linspace(0, seconds, 11)
    print(f"   {'window s':>10}{'p99 ms':>8}{'RSS MiB':>9}")
    for a, b in itertools.pairwise(edges):
        sel = lat[(lat[:, 0] >= a) & (lat[:, 0] < b), 1] if len(lat) else []
        rss = [r for t, r in samples if a <= t < b + 1e-9]
        print(f"   {a:5.0f}-{b:<4.0f}{pct(sel, 99) / 1e3 if len(sel) else float('nan'):8.2f}"
              f"{(rss[-1] / 1024 if rss else float('nan')):9.1f}")
    live = re.search(r'^rnnstream_serve_live_sequences\{model="model"\} (\S+)', text, re.M)
    print(f"   live sequences at the end: {live.group(1) if live else '?'}")


if __name__ == "__main__":
    sys.exit(main())
