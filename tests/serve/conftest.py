"""Fixtures of the serve tests: real `rnnstream serve` processes on 127.0.0.1, free ports.

Models: ``lstm`` is the release-0.1.0 fixture (LSTM, 2 layers, one feature = the target);
``multi`` is a GRU with features a, b, c and targets a, b, made by the real exporter. The
reference for every answer is a StreamPool fed the same points one request at a time.
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnstream.runtime import StreamPool

LEGACY = Path(__file__).parent.parent / "data" / "legacy_v0_1_0" / "model.onnx"
START_TIMEOUT = 60


@pytest.fixture(scope="session")
def multi_model(tmp_path_factory) -> Path:
    from rnnstream.export import export_model
    from rnnstream.train.model import Forecaster, ForecasterConfig

    torch.manual_seed(5)
    cfg = ForecasterConfig(cell="gru", n_features=3, n_targets=2, hidden=8, layers=1,
                           feature_names=["a", "b", "c"], target_names=["a", "b"])
    model = Forecaster(cfg).eval()
    g = torch.Generator().manual_seed(6)
    model.set_normalization(torch.randn(3, generator=g) * 5, torch.rand(3, generator=g) + 0.5,
                            torch.randn(2, generator=g) * 5, torch.rand(2, generator=g) + 0.5)
    path = tmp_path_factory.mktemp("serve-models") / "multi.onnx"
    export_model(model, path)
    return path


@dataclass
class Running:
    proc: subprocess.Popen
    http_port: int
    grpc_port: int
    lines: list = field(default_factory=list)  # stderr JSON lines seen so far
    pumper: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        if self.pumper is not None:
            self.pumper.join(timeout)  # every line the process wrote is in self.lines
        return code


@contextlib.contextmanager
def serving(models: list[Path], *args: str, names: list[str] | None = None):
    """Start `rnnstream serve` on free ports; yield Running; stop it (SIGTERM) afterwards."""
    argv = [sys.executable, "-m", "rnnstream.cli.main", "serve", *map(str, models),
            "--http-port", "0", "--grpc-port", "0", *args]
    for n in names or []:
        argv += ["--name", n]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    seen: list = []

    def pump() -> None:
        for line in proc.stderr:
            lines.put(line)
            seen.append(line)
        lines.put(None)

    pumper = threading.Thread(target=pump, daemon=True)
    pumper.start()
    running = None
    try:
        while running is None:
            line = lines.get(timeout=START_TIMEOUT)
            if line is None:
                raise RuntimeError(f"serve exited early:\n{''.join(seen)}")
            try:
                doc = json.loads(line)
            except ValueError:  # not a log line (a warning printed by a library): keep going
                continue
            if isinstance(doc, dict) and doc.get("event") == "serving":
                running = Running(proc, doc["http_port"], doc["grpc_port"], seen, pumper)
        yield running
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        pumper.join(10)
        proc.stderr.close()


@pytest.fixture(scope="module")
def server(multi_model):
    with serving([LEGACY, multi_model], names=["lstm", "multi"]) as running:
        yield running


def post(url: str, doc: dict | bytes, headers: dict | None = None) -> tuple[int, dict]:
    """POST JSON with urllib; returns (status, decoded JSON body)."""
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    # S310: these tests open http://127.0.0.1 URLs only
    req = urllib.request.Request(url, body, {"Content-Type": "application/json",  # noqa: S310
                                             **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def infer_doc(x: np.ndarray, seq=None, start=False, end=False, ids=None) -> dict:
    """A KServe v2 JSON request for points x [B, T, F]."""
    params = {}
    if seq is not None:
        params = {"sequence_id": seq, "sequence_start": start, "sequence_end": end}
    elif start or end:
        params = {"sequence_start": start, "sequence_end": end}
    inputs = [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
               "data": x.reshape(-1).tolist()}]
    if ids is not None:
        dtype = "BYTES" if isinstance(ids[0], str) else "INT64"
        inputs.append({"name": "sequence_id", "datatype": dtype, "shape": [len(ids)],
                       "data": list(ids)})
    return {"parameters": params, "inputs": inputs}


class Reference:
    """StreamPool stepped request by request, point by point: what the server must answer.
    With ``coverage``, :meth:`run` also keeps the pool's interval after every point in
    ``lower`` and ``upper`` ([B, T, targets] float64, what the server rounds to FP32)."""

    def __init__(self, path: Path, coverage: float | None = None) -> None:
        self.pool = StreamPool(path, coverage=coverage)
        self.lower: np.ndarray | None = None
        self.upper: np.ndarray | None = None

    def run(self, keys: list, x: np.ndarray, start: bool = False, end: bool = False):
        for k in keys:
            if start:
                if k in self.pool:
                    self.pool.reset(k)
                else:
                    self.pool.add(k)
        ys, bounds = [], []
        for t in range(x.shape[1]):
            ys.append(self.pool.step_many(keys, np.ascontiguousarray(x[:, t])))
            if self.pool.live is not None:
                bounds.append(self.pool.interval(keys))
        if bounds:
            self.lower = np.stack([lo for lo, _ in bounds], axis=1)
            self.upper = np.stack([hi for _, hi in bounds], axis=1)
        if end:
            for k in keys:
                self.pool.remove(k)
        return np.stack(ys, axis=1)


def same_bits(a: np.ndarray, b: np.ndarray) -> None:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape
    assert a.tobytes() == b.tobytes(), f"max difference {np.max(np.abs(a - b))}"
