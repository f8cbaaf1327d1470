"""rnnstream serve against the servers a user would pick instead, serving the same model on
loopback with the same client: MLServer (Seldon's KServe v2 server) and Triton through PyTriton.

    .venv/bin/python bench/bench_peers.py [--quick] [--rounds 3] [--seconds 5] [--json FILE]

The model: an LSTM 1 x 32 with seeded random weights, exported by rnnstream (``model.onnx`` and
its single-step graph ``model.step.onnx``). The three servers:

(a) ``rnnstream serve model.onnx``: keeps each sequence's state; a request carries a
    ``sequence_id`` and one point.
(b) MLServer 1.7.1 (``mlserver start``, default settings: one inference worker process, no
    adaptive batching; access logs off), a small custom ``MLModel`` that runs onnxruntime on
    ``model.step.onnx`` (one intra-op thread, as rnnstream's sessions).
(c) PyTriton 0.7.0 (Triton's server with the Python backend), an infer function that runs the
    same onnxruntime session; ``max_batch_size`` 64 with Triton's default dynamic batcher.

Neither peer keeps state, so the client sends ``h_in``/``c_in`` with every point and keeps the
``h_out``/``c_out`` it gets back. One client for all three, in this process (it shares the
cores with the server, as a real client on the same machine would): KServe v2 JSON over HTTP/1.1
keep-alive (asyncio + httptools) and unary ``ModelInfer`` over gRPC (grpc.aio, tritonclient's
generated stubs, tensors in ``raw_input_contents``). Measured, per server, in alternating rounds
(a b c a b c ...; the table gives the median of the rounds):

1. one sequence, one point per request, sequentially: client p50/p99 over HTTP and gRPC;
2. 64 sequences, each with one request in flight: predictions/s over HTTP (64 connections) and
   unary gRPC (64 calls in flight on one channel);
3. the server's CPU seconds per prediction in each of those (user + system time of the server
   process and its children, from /proc/<pid>/stat, over the timed window).

Every sequential run starts from the zero state and feeds the same points, so its answers are
compared with onnxruntime run in this process on ``model.step.onnx``: the table says whether
they are bit-equal, or how many float32 ulps they differ by.

The peers live in their own virtual environment, ``.venv-peers`` (created here on first use from
the package index; ``--no-install`` reports them unavailable instead). A peer that does not
install or start is reported as "unavailable (why)" and the rest still runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
PEERS_VENV = ROOT / ".venv-peers"
HIDDEN, LAYERS = 32, 1
SEQUENCES = 64  # concurrent sequences in part 2
PEERS = ("mlserver", "pytriton")
LABELS = {"rnnstream": "rnnstream", "mlserver": "MLServer", "pytriton": "PyTriton"}
START_TIMEOUT_S = 240.0  # PyTriton starts Triton and a Python-backend stub: ~20 s when loaded


class Unavailable(Exception):
    """A server could not be installed, started or measured; the message says why."""


# -- the peers' environment -----------------------------------------------------------------------
def peer_pins() -> list[str]:
    """What .venv-peers installs: the peers at the versions measured, and the same onnxruntime as
    this environment, so the model step is the same code in all three servers."""
    import onnxruntime

    pins = ["mlserver==1.7.1", "uvloop==0.21.0",  # MLServer's workers crash under uvloop 0.23
            "nvidia-pytriton==0.7.0", f"onnxruntime=={onnxruntime.__version__}",
            # nvidia-pytriton 0.7.0 requires numpy<2, and with numpy 2 its answers fail ("output
            # tensor shape does not match size of output"): the newest 1.x, not this env's 2.x
            "numpy==1.26.4"]
    try:  # without httptools MLServer's uvicorn parses HTTP with h11, far slower
        import httptools

        pins.append(f"httptools=={httptools.__version__}")
    except ImportError:
        pins.append("httptools")
    return pins


def peers_python(venv: Path, install: bool) -> Path:
    """The peers' interpreter, installing them first if their environment is absent or was made
    with other pins (a stamp file named after the pins records a finished install)."""
    pins = peer_pins()
    stamp = venv / f".stamp-{hashlib.sha256(' '.join(pins).encode()).hexdigest()[:12]}"
    python = venv / "bin" / "python"
    if stamp.exists() and python.exists():
        return python
    if not install:
        raise Unavailable(f"{venv} is absent or incomplete (run without --no-install to create "
                          "it from the package index)")
    print(f"installing the peers into {venv} (once): {' '.join(pins)}", flush=True)
    log = venv / "install.log"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                           capture_output=True, text=True, timeout=300)
        with log.open("w") as out:
            subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check",
                            *pins], check=True, stdout=out, stderr=subprocess.STDOUT,
                           timeout=1800)
    except subprocess.CalledProcessError as e:
        raise Unavailable(f"installing {' '.join(pins)} failed: {_last_error(log, e)} "
                          f"(log: {log})") from None
    except subprocess.TimeoutExpired:
        raise Unavailable(f"installing the peers took over 30 minutes (log: {log})") from None
    for old in venv.glob(".stamp-*"):
        old.unlink()
    stamp.touch()
    return python


def _last_error(log: Path, e: subprocess.CalledProcessError) -> str:
    lines = [line for line in (log.read_text() if log.exists() else "").splitlines()
             if line.startswith("ERROR")] or [str(e.stderr or e).strip()]
    return lines[-1][:300]


# -- model ----------------------------------------------------------------------------------------
def build_model(folder: str) -> tuple[Path, Path]:
    """An exported LSTM 1 x 32 with seeded random weights: (model.onnx, model.step.onnx)."""
    try:
        import torch

        from rnnstream.export import export_model
        from rnnstream.train.model import Forecaster, ForecasterConfig
    except ImportError as e:
        raise SystemExit(f"building the model needs torch and rnnstream's train extra ({e}); "
                         "run `make install`") from None
    torch.manual_seed(0)
    model = Forecaster(ForecasterConfig(cell="lstm", hidden=HIDDEN, layers=LAYERS,
                                        feature_names=["y"], target_names=["y"])).eval()
    report = export_model(model, Path(folder) / "model.onnx")
    if report.step_path is None:
        raise SystemExit("the export wrote no single-step graph; the peers need model.step.onnx")
    return report.path, report.step_path


def reference(step_model: Path, xs: np.ndarray) -> np.ndarray:
    """y after each point of xs from the zero state: onnxruntime in this process, one row per
    call, the state chained, the same session options as rnnstream's sessions."""
    sess = onnx_session(str(step_model))
    h = np.zeros((1, LAYERS, HIDDEN), np.float32)
    c = np.zeros_like(h)
    ys = np.empty(len(xs), np.float32)
    for i, x in enumerate(xs):
        y, h, c = sess.run(None, {"x": np.full((1, 1, 1), x, np.float32), "h_in": h, "c_in": c})
        ys[i] = y.reshape(-1)[0]
    return ys


def onnx_session(path: str) -> Any:
    """An onnxruntime session with rnnstream's options (runtime/_session.py): one thread,
    sequential, full graph optimisation. Used here and in the PyTriton process."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def points(n: int) -> np.ndarray:
    return np.sin(0.05 * np.arange(n)).astype(np.float32)


# -- servers --------------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    http_port: int
    grpc_port: int
    stateful: bool  # keeps each sequence's state (rnnstream) or is sent it (the peers)
    log: Path
    notes: str = ""


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_ready(server: Server, timeout: float) -> None:
    """Poll /v2/models/model/ready until it answers 200 (the same check for all three)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise Unavailable(f"exited with status {server.proc.returncode} while starting: "
                              f"{_tail(server.log)}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=2)
            try:
                conn.request("GET", "/v2/models/model/ready")
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        time.sleep(0.25)
    raise Unavailable(f"not ready after {timeout:.0f} s: {_tail(server.log)}")


def _tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(line.strip()[:200] for line in text[-lines:]) or "(no output)"


def stop(server: Server) -> None:
    """SIGINT (PyTriton and MLServer shut down cleanly on it), then SIGKILL to the process group
    this script made for the server, so no child outlives the run."""
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT if server.name != "rnnstream" else signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the group start() made (start_new_session)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def launch(name: str, argv: list[str], folder: Path, stateful: bool, ports: list[int],
           env: dict[str, str] | None = None, cwd: Path | None = None) -> Server:
    log = folder / f"{name}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True)
    server = Server(name, proc, ports[0], ports[1], stateful, log)
    try:
        wait_ready(server, START_TIMEOUT_S)
    except BaseException:
        stop(server)
        raise
    return server


def start_rnnstream(model: Path, folder: Path) -> Server:
    ports = free_ports(2)
    argv = [sys.executable, "-m", "rnnstream.cli.main", "serve", str(model), "--http-port",
            str(ports[0]), "--grpc-port", str(ports[1]), "--idle-timeout", "0"]
    return launch("rnnstream", argv, folder, True, ports)


# MLServer loads a model's implementation by import path from the model's folder: this module is
# written there (it runs in .venv-peers, where rnnstream is not installed).
MLSERVER_MODEL = '''\
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class OnnxStep(MLModel):
    """One onnxruntime call per request; the state comes in the request and goes back out."""

    async def load(self) -> bool:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1  # as rnnstream's sessions (runtime/_session.py)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(self.settings.parameters.uri, so,
                                            providers=["CPUExecutionProvider"])
        self.output_names = [o.name for o in self.session.get_outputs()]  # .outputs is MLModel's
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feeds = {i.name: NumpyCodec.decode_input(i) for i in payload.inputs}
        arrays = self.session.run(None, feeds)
        return InferenceResponse(model_name=self.name, outputs=[
            NumpyCodec.encode_output(name, a) for name, a in zip(self.output_names, arrays)])
'''


def start_mlserver(python: Path, step_model: Path, folder: Path) -> Server:
    home = folder / "mlserver" / "model"  # the folder named as the model: no warning
    home.mkdir(parents=True, exist_ok=True)
    (home / "onnx_step.py").write_text(MLSERVER_MODEL)
    ports = free_ports(3)
    # debug false: no per-request access log (rnnstream writes none either)
    (home / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": ports[0], "grpc_port": ports[1],
        "metrics_port": ports[2], "debug": False}))
    (home / "model-settings.json").write_text(json.dumps({
        "name": "model", "implementation": "onnx_step.OnnxStep",
        "parameters": {"uri": str(step_model)}}))
    mlserver = python.parent / "mlserver"
    server = launch("mlserver", [str(mlserver), "start", str(home)], folder, False, ports,
                    cwd=home)
    server.notes = "default settings: 1 inference worker process, no adaptive batching"
    return server


def start_pytriton(python: Path, step_model: Path, folder: Path) -> Server:
    ports = free_ports(3)
    # Triton's Python-backend stub links libpython: with a system libpython also present it
    # loads the wrong one unless the interpreter's own lib dir comes first
    libdir = subprocess.run([str(python), "-c", "import sysconfig; "
                             "print(sysconfig.get_config_var('LIBDIR') or '')"],
                            capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    argv = [str(python), str(Path(__file__).resolve()), "--serve-pytriton", str(step_model),
            "--ports", ",".join(map(str, ports))]
    server = launch("pytriton", argv, folder, False, ports, env=env)
    server.notes = f"max_batch_size {SEQUENCES}, dynamic batching"
    return server


def serve_pytriton(step_model: str, ports: list[int]) -> int:
    """Runs in .venv-peers: Triton through PyTriton, an infer function calling onnxruntime."""
    from pytriton.decorators import batch
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    session = onnx_session(step_model)
    outputs = [o.name for o in session.get_outputs()]

    @batch
    def infer(**feeds: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(outputs, session.run(None, feeds), strict=True))

    def tensors(args: list) -> list:  # the batch dimension is Triton's, not in the shape
        return [Tensor(name=a.name, dtype=np.float32, shape=tuple(a.shape[1:])) for a in args]

    config = TritonConfig(http_address="127.0.0.1", http_port=ports[0],
                          grpc_address="127.0.0.1", grpc_port=ports[1], metrics_port=ports[2])
    with Triton(config=config) as triton:
        triton.bind(model_name="model", infer_func=infer,
                    inputs=tensors(session.get_inputs()), outputs=tensors(session.get_outputs()),
                    config=ModelConfig(max_batch_size=SEQUENCES))
        triton.serve()
    return 0


# -- server CPU -----------------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of pid and every live descendant."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICK)
    children: dict[int, list[int]] = {}
    for p, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(p)
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, (0, 0.0))[1]
        todo.extend(children.get(p, ()))
    return total


# -- the client: one implementation for all three -------------------------------------------------
@dataclass
class Sequence:
    """One sequence as the client sees it: how its requests are written and its answers read.
    With a stateful server it sends its id; with the others it carries the state itself."""

    server: Server
    seq_id: int
    first: bool = True
    h: np.ndarray = field(default_factory=lambda: np.zeros((1, LAYERS, HIDDEN), np.float32))
    c: np.ndarray = field(default_factory=lambda: np.zeros((1, LAYERS, HIDDEN), np.float32))

    def http_body(self, x: float) -> bytes:
        xs = [float(np.float32(x))]  # a float32, written exactly
        if self.server.stateful:
            doc: dict[str, Any] = {
                "parameters": {"sequence_id": self.seq_id, "sequence_start": self.first},
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1, 1], "data": xs}]}
        else:
            doc = {"inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 1, 1], "data": xs},
                {"name": "h_in", "datatype": "FP32", "shape": list(self.h.shape),
                 "data": self.h.ravel().tolist()},
                {"name": "c_in", "datatype": "FP32", "shape": list(self.c.shape),
                 "data": self.c.ravel().tolist()}]}
        self.first = False
        return json.dumps(doc).encode()

    def http_answer(self, body: bytes) -> float:
        out = {o["name"]: o["data"] for o in json.loads(body)["outputs"]}
        if not self.server.stateful:
            self.h = np.asarray(out["h_out"], np.float32).reshape(self.h.shape)
            self.c = np.asarray(out["c_out"], np.float32).reshape(self.c.shape)
        return float(np.float32(out["y"][0]))

    def grpc_request(self, pb: Any, x: float) -> Any:
        req = pb.ModelInferRequest(model_name="model")
        tensors = [("x", np.full((1, 1, 1), x, np.float32))]
        if self.server.stateful:
            req.parameters["sequence_id"].int64_param = self.seq_id
            req.parameters["sequence_start"].bool_param = self.first
        else:
            tensors += [("h_in", self.h), ("c_in", self.c)]
        for name, a in tensors:
            t = req.inputs.add(name=name, datatype="FP32")
            t.shape.extend(a.shape)
            req.raw_input_contents.append(a.tobytes())
        self.first = False
        return req

    def grpc_answer(self, resp: Any) -> float:
        out = {}
        for i, o in enumerate(resp.outputs):  # raw (Triton, rnnstream) or typed (MLServer)
            out[o.name] = (np.frombuffer(resp.raw_output_contents[i], np.float32)
                           if resp.raw_output_contents else
                           np.asarray(o.contents.fp32_contents, np.float32))
        if not self.server.stateful:
            self.h = out["h_out"].reshape(self.h.shape).copy()
            self.c = out["c_out"].reshape(self.c.shape).copy()
        return float(out["y"][0])


class _HttpConn(asyncio.Protocol):
    """A keep-alive HTTP/1.1 connection: post() sends one request and awaits its answer."""

    def __init__(self, port: int) -> None:
        import httptools

        self.head = (b"POST /v2/models/model/infer HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n"
                     b"content-type: application/json\r\ncontent-length: " % port)
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.waiter: asyncio.Future | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((self.parser.get_status_code(), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"the server closed the connection: {exc}"))

    async def post(self, payload: bytes) -> tuple[int, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(b"%s%d\r\n\r\n%s" % (self.head, len(payload), payload))
        return await self.waiter


@contextlib.asynccontextmanager
async def http_client(port: int):
    loop = asyncio.get_running_loop()
    transport, conn = await loop.create_connection(lambda: _HttpConn(port), "127.0.0.1", port)
    try:
        yield conn
    finally:
        transport.close()


def _grpc() -> tuple[Any, Any, Any]:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    return grpc, pb, pb_grpc


async def _one_http(seq: Sequence, conn: _HttpConn, x: float) -> float:
    status, body = await conn.post(seq.http_body(x))
    if status != 200:
        raise Unavailable(f"HTTP {status}: {body[:200]!r}")
    return seq.http_answer(body)


async def sequential(server: Server, proto: str, xs: np.ndarray, warmup: int,
                     seq_id: int) -> dict:
    """One sequence, one request at a time: latencies after `warmup` requests, every answer."""
    seq = Sequence(server, seq_id)
    lat = np.empty(len(xs) - warmup)
    ys = np.empty(len(xs), np.float32)
    cpu0 = 0.0
    if proto == "http":
        async with http_client(server.http_port) as conn:
            for i, x in enumerate(xs):
                if i == warmup:
                    cpu0 = tree_cpu(server.proc.pid)
                t = time.perf_counter()
                ys[i] = await _one_http(seq, conn, float(x))
                if i >= warmup:
                    lat[i - warmup] = time.perf_counter() - t
    else:
        grpc, pb, pb_grpc = _grpc()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for i, x in enumerate(xs):
                if i == warmup:
                    cpu0 = tree_cpu(server.proc.pid)
                t = time.perf_counter()
                ys[i] = seq.grpc_answer(await stub.ModelInfer(seq.grpc_request(pb, float(x))))
                if i >= warmup:
                    lat[i - warmup] = time.perf_counter() - t
    cpu = tree_cpu(server.proc.pid) - cpu0
    return {"p50_us": float(np.percentile(lat, 50) * 1e6),
            "p99_us": float(np.percentile(lat, 99) * 1e6),
            "cpu_us": cpu / len(lat) * 1e6, "ys": ys}


async def concurrent(server: Server, proto: str, n: int, seconds: float, base: int) -> dict:
    """n sequences, each with one request in flight (closed loop): predictions/s and server CPU
    per prediction over `seconds`, after a warm-up of a quarter of that (at most 1 s)."""
    count = [0]
    stop = asyncio.Event()

    async def drive(step: Callable[[float], Any]) -> None:
        while not stop.is_set():
            await step(0.25)
            count[0] += 1

    async with contextlib.AsyncExitStack() as stack:
        seqs = [Sequence(server, base + s) for s in range(n)]
        if proto == "http":
            conns = [await stack.enter_async_context(http_client(server.http_port))
                     for _ in range(n)]
            steps = [lambda x, s=s, c=c: _one_http(s, c, x)
                     for s, c in zip(seqs, conns, strict=True)]
        else:
            grpc, pb, pb_grpc = _grpc()
            channel = await stack.enter_async_context(
                grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
            stub = pb_grpc.GRPCInferenceServiceStub(channel)

            async def grpc_step(x: float, s: Sequence) -> float:
                return s.grpc_answer(await stub.ModelInfer(s.grpc_request(pb, x)))

            steps = [lambda x, s=s: grpc_step(x, s) for s in seqs]
        tasks = [asyncio.ensure_future(drive(step)) for step in steps]
        try:
            await asyncio.sleep(min(1.0, seconds / 4))
            c0, cpu0, t0 = count[0], tree_cpu(server.proc.pid), time.perf_counter()
            own0 = time.process_time()
            await asyncio.sleep(seconds)
            c1, cpu1, t1 = count[0], tree_cpu(server.proc.pid), time.perf_counter()
            own1 = time.process_time()
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
    done = c1 - c0
    if done <= 0:
        raise Unavailable(f"no answer in {seconds:.1f} s with {n} {proto} sequences")
    return {"rate": done / (t1 - t0), "cpu_us": (cpu1 - cpu0) / done * 1e6,
            "client_cpu_us": (own1 - own0) / done * 1e6}


# -- the run --------------------------------------------------------------------------------------
METRICS = [  # (key, label, lower is better)
    ("http_p50", "HTTP, 1 sequence: p50 µs", True),
    ("http_p99", "HTTP, 1 sequence: p99 µs", True),
    ("grpc_p50", "gRPC, 1 sequence: p50 µs", True),
    ("grpc_p99", "gRPC, 1 sequence: p99 µs", True),
    ("http_rate", f"HTTP, {SEQUENCES} sequences: predictions/s", False),
    ("grpc_rate", f"gRPC, {SEQUENCES} sequences: predictions/s", False),
    ("http_seq_cpu", "server CPU µs/prediction, HTTP 1 seq", True),
    ("grpc_seq_cpu", "server CPU µs/prediction, gRPC 1 seq", True),
    ("http_cpu", f"server CPU µs/prediction, HTTP {SEQUENCES} seqs", True),
    ("grpc_cpu", f"server CPU µs/prediction, gRPC {SEQUENCES} seqs", True),
    # the client shares the cores: what it spends says how much it held the server back
    ("http_client_cpu", f"client CPU µs/prediction, HTTP {SEQUENCES} seqs", True),
    ("grpc_client_cpu", f"client CPU µs/prediction, gRPC {SEQUENCES} seqs", True),
]


def measure(server: Server, xs: np.ndarray, warmup: int, seconds: float, rnd: int) -> dict:
    """One round on one server: every figure of METRICS, and the sequential runs' answers."""
    out: dict[str, Any] = {"ys": {}}
    for proto in ("http", "grpc"):
        base = 1_000_000 * (rnd + 1) + (500_000 if proto == "grpc" else 0)
        r = asyncio.run(sequential(server, proto, xs, warmup, base))
        out[f"{proto}_p50"], out[f"{proto}_p99"] = r["p50_us"], r["p99_us"]
        out[f"{proto}_seq_cpu"] = r["cpu_us"]
        out["ys"][proto] = r["ys"]
    for proto in ("http", "grpc"):
        base = 1_000_000 * (rnd + 1) + (600_000 if proto == "grpc" else 100_000)
        r = asyncio.run(concurrent(server, proto, SEQUENCES, seconds, base))
        out[f"{proto}_rate"], out[f"{proto}_cpu"] = r["rate"], r["cpu_us"]
        out[f"{proto}_client_cpu"] = r["client_cpu_us"]
    return out


def agreement(ys: np.ndarray, ref: np.ndarray) -> tuple[int, float]:
    """(largest difference in float32 ulps, largest absolute difference) against the reference."""
    a, b = ys.view(np.int32).astype(np.int64), ref.view(np.int32).astype(np.int64)
    a = np.where(a < 0, np.int64(-2**31) - a, a)  # float bits -> a monotone integer line
    b = np.where(b < 0, np.int64(-2**31) - b, b)
    return int(np.abs(a - b).max()), float(np.abs(ys.astype(np.float64) - ref).max())


def start(name: str, model: Path, step_model: Path, folder: Path, python: Path | None) -> Server:
    if name == "rnnstream":
        return start_rnnstream(model, folder)
    if python is None:
        raise Unavailable("no peers environment")
    probe = subprocess.run([str(python), "-c", f"import {name}"], capture_output=True,
                           text=True, timeout=120)
    if probe.returncode != 0:
        raise Unavailable(f"import {name} failed in {python.parent.parent}: "
                          f"{(probe.stderr.strip().splitlines() or ['?'])[-1]}")
    starter = start_mlserver if name == "mlserver" else start_pytriton
    return starter(python, step_model, folder)


def run(args: argparse.Namespace) -> dict:
    names = ["rnnstream", *[p for p in PEERS if p in args.peers]]
    status: dict[str, str] = {}
    python: Path | None = None
    if len(names) > 1:
        try:
            python = peers_python(Path(args.peers_venv), install=not args.no_install)
        except Unavailable as e:
            for p in names[1:]:
                status[p] = str(e)
    load_before = os.getloadavg()[0]
    warmup = min(200, args.points // 5)
    xs = points(args.points + warmup)
    results: dict[str, list[dict]] = {n: [] for n in names}
    agree: dict[str, dict[str, tuple[int, float]]] = {n: {} for n in names}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        model, step_model = build_model(tmp)
        ref = reference(step_model, xs)
        servers: dict[str, Server] = {}
        for name in names:
            if name in status:
                continue
            print(f"starting {LABELS[name]} ...", flush=True)
            try:
                servers[name] = start(name, model, step_model, folder, python)
            except (Unavailable, OSError, subprocess.SubprocessError) as e:
                status[name] = str(e)
                continue
            stack.callback(stop, servers[name])
        if "rnnstream" not in servers:
            raise SystemExit(f"rnnstream serve did not start: {status.get('rnnstream')}")
        import grpc  # its errors: a peer that fails mid-run is reported, the rest goes on

        failures = (Unavailable, OSError, RuntimeError, ValueError, KeyError, grpc.RpcError)
        for rnd in range(args.rounds):
            for name in names:
                if name not in servers or name in status:
                    continue
                print(f"round {rnd + 1}/{args.rounds}: {LABELS[name]}", flush=True)
                try:
                    r = measure(servers[name], xs, warmup, args.seconds, rnd)
                except failures as e:
                    why = str(e) if isinstance(e, Unavailable) else f"{type(e).__name__}: {e}"
                    status[name] = f"failed in round {rnd + 1}: {why}"
                    continue
                for proto, ys in r.pop("ys").items():
                    ulps, diff = agreement(ys, ref)
                    old = agree[name].get(proto, (0, 0.0))
                    agree[name][proto] = (max(old[0], ulps), max(old[1], diff))
                results[name].append(r)
        notes = {n: s.notes for n, s in servers.items() if s.notes and results[n]}
    if not results["rnnstream"]:
        raise SystemExit(f"rnnstream serve could not be measured: {status['rnnstream']}")
    return {"model": f"LSTM {LAYERS} x {HIDDEN}, seeded random weights (model.step.onnx)",
            "rounds": args.rounds, "seconds": args.seconds, "points": args.points,
            "sequences": SEQUENCES, "cores": os.cpu_count(),
            "load_average": [load_before, os.getloadavg()[0]], "status": status, "notes": notes,
            "agreement": {n: {p: {"max_ulps": u, "max_abs": d} for p, (u, d) in a.items()}
                          for n, a in agree.items()},
            "rounds_raw": results,
            "median": {n: {k: float(np.median([r[k] for r in rs])) for k, _, _ in METRICS}
                       for n, rs in results.items() if rs}}


def report(res: dict) -> None:
    names = ["rnnstream", *[n for n in PEERS if n in res["rounds_raw"]]]
    med, status = res["median"], res["status"]
    print(f"\nmodel: {res['model']}; loopback, {res['cores']} cores, one client in this process; "
          f"medians of {res['rounds']} alternating rounds ({res['points']} sequential points, "
          f"{res['seconds']:g} s at {res['sequences']} sequences); load average (1 min) "
          f"{res['load_average'][0]:.2f} before, {res['load_average'][1]:.2f} after")
    print("(x): the peer's figure / rnnstream's, same run (above 1: more µs, or more "
          "predictions/s)")
    cols = [n for n in names if n in med]
    print(f"{'':<42}" + "".join(f"{LABELS[n]:>18}" for n in cols))
    for key, label, _ in METRICS:
        row = f"{label:<42}"
        base = med["rnnstream"][key]
        for n in cols:
            v = med[n][key]
            cell = f"{v:,.0f}" if n == "rnnstream" else f"{v:,.0f} ({v / base:.2f}x)"
            row += f"{cell:>18}"
        print(row)
    for n in names:
        if n in status and n in med:
            print(f"{LABELS[n]}: stopped ({status[n]}); its figures are from the rounds before")
        elif n in status:
            print(f"{LABELS[n]}: unavailable ({status[n]})")
    for n, note in res["notes"].items():
        print(f"{LABELS[n]}: {note}")
    print("answers (every sequential run, against onnxruntime in this process on "
          "model.step.onnx, the state chained from zero):")
    for n, by_proto in res["agreement"].items():
        for proto, a in by_proto.items():
            verdict = ("bit-equal" if a["max_ulps"] == 0 else
                       f"within {a['max_ulps']} float32 ulps (max |diff| {a['max_abs']:.2e})")
            print(f"   {LABELS[n]} {proto.upper()}: {verdict}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="short rounds (make bench's smoke): 300 points, 1 s per load")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="seconds per concurrent load (default 5; 1 with --quick)")
    ap.add_argument("--points", type=int, default=None,
                    help="sequential requests per run (default 2000; 300 with --quick)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--peers", default=",".join(PEERS),
                    help=f"comma-separated peers to run (default {','.join(PEERS)})")
    ap.add_argument("--peers-venv", default=str(PEERS_VENV),
                    help="the peers' virtual environment (default .venv-peers)")
    ap.add_argument("--no-install", action="store_true",
                    help="do not create the peers' environment; report them unavailable")
    ap.add_argument("--serve-pytriton", metavar="MODEL", help=argparse.SUPPRESS)
    ap.add_argument("--ports", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_pytriton:  # the PyTriton server process, in .venv-peers
        return serve_pytriton(args.serve_pytriton, [int(p) for p in args.ports.split(",")])
    if args.rounds < 1:
        ap.error(f"--rounds is {args.rounds}; give 1 or more")
    unknown = set(args.peers.split(",")) - set(PEERS) - {""}
    if unknown:
        ap.error(f"--peers names {sorted(unknown)}; choose from {', '.join(PEERS)}")
    args.peers = [p for p in args.peers.split(",") if p]
    args.seconds = args.seconds or (1.0 if args.quick else 5.0)
    args.points = args.points or (300 if args.quick else 2000)
    res = run(args)
    report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
