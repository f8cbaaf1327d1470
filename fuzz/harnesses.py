"""Fuzz harnesses: each takes arbitrary bytes and feeds them to one reader of untrusted input.

A harness may only end by returning or by raising the reader's documented error (``OK`` below);
anything else (an untyped exception, a crash of the process) is a finding, and so is a refused
snapshot, or a log that read_log refuses, that changed the pool (``StateChanged``; a log that
reads whole but replays wrong is refused by replay, which may have applied its earlier records).
``fuzz/run.py`` drives them with atheris (coverage-guided, libFuzzer); ``tests/fuzz`` replays
the corpora and runs each for a few seconds.

    model       Predictor(path) on a mutated model file          ModelLoadError (+ContractError)
    snapshot    StreamPool.load_state on a mutated .npz          StateError
    log         read_log + replay of the server's log            StateError
    http        protocol.http_request(body, header length)       ServeError
    http_wire   HttpProtocol fed raw bytes (httptools + routing) nothing escapes; answers only
    grpc        ModelInferRequest bytes -> grpc_request          ServeError (DecodeError: skipped)
    line        the stream command's LineParser, two lines       LineError
    all         every one of them, picked by the first byte
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEGACY = ROOT / "tests" / "data" / "legacy_v0_1_0" / "model.onnx"
_FOLDER = tempfile.mkdtemp(prefix="rnnstream-fuzz-")


def _file(name: str, data: bytes) -> str:
    path = os.path.join(_FOLDER, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def model(data: bytes) -> None:
    from rnnstream.runtime import ModelLoadError, Predictor

    path = _file("model.onnx", data)
    with contextlib.suppress(ModelLoadError):
        Predictor(path)


_POOL: list = []


def _pool():
    if not _POOL:
        from rnnstream.runtime import StreamPool

        _POOL.append(StreamPool(LEGACY))
    return _POOL[0]


def _pool_bytes(pool) -> bytes:
    """What a refused load must leave as it was: the keys and their states."""
    keys = list(pool.keys())
    parts = [repr(sorted(map(repr, keys))).encode()]
    for key in keys:
        parts += [v.tobytes() for _, v in sorted(pool.get_state(key).items())]
    return b"".join(parts)


class StateChanged(AssertionError):
    """A refused input changed the state: a finding."""


def snapshot(data: bytes) -> None:
    from rnnstream.runtime import StateError

    pool = _pool()
    before = _pool_bytes(pool)
    try:
        pool.load_state(_file("s.npz", data))
    except StateError:
        if _pool_bytes(pool) != before:
            raise StateChanged("a refused snapshot changed the pool") from None


def log(data: bytes) -> None:
    from rnnstream.runtime import StateError
    from rnnstream.runtime.wal import read_log
    from rnnstream.serve.wal import replay

    pool = _pool()
    for key in list(pool.keys()):
        pool.remove(key)
    path = _file("s.npz.wal", data)
    try:
        contents = read_log(path, "serve", pool.fingerprint, "")
    except StateError:
        if len(pool):
            raise StateChanged("a refused log changed the pool") from None
        return
    with contextlib.suppress(StateError):  # a record that replays wrong: refused, typed
        replay(pool, contents.records, 1, path)


def http(data: bytes) -> None:
    from rnnstream.serve import ServeError
    from rnnstream.serve.protocol import http_request

    cut = data[0] if data else 0
    body = data[1:]
    with contextlib.suppress(ServeError):
        http_request(body, None if cut == 255 else min(cut * 4, len(body)))


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def close(self) -> None:
        self.closed = True


_SERVER: list = []
_LOOP: list = []


def http_wire(data: bytes) -> None:
    """Raw bytes on a connection: parsed by httptools, routed and answered, accepted infer
    requests run by a few turns of an event loop (one loop and one server for every input)."""
    import asyncio

    from rnnstream.serve.http import HttpProtocol

    if not _SERVER:
        from rnnstream.serve import Limits, ServeConfig, Server

        _LOOP.append(asyncio.new_event_loop())
        _SERVER.append(Server(ServeConfig({"model": str(LEGACY)}, http_port=None,
                                          grpc_port=None, limits=Limits(max_sequences=1000,
                                                                      step_thread_rows=0))))

    async def feed() -> None:
        proto = HttpProtocol(_SERVER[0])
        proto.connection_made(_Transport())  # type: ignore[arg-type]
        proto.data_received(data)
        for _ in range(12):  # the rounds of what was accepted
            await asyncio.sleep(0)
        proto.connection_lost(None)

    _LOOP[0].run_until_complete(feed())


def grpc(data: bytes) -> None:
    from google.protobuf.message import DecodeError
    from tritonclient.grpc import service_pb2 as pb

    from rnnstream.serve import ServeError
    from rnnstream.serve.protocol import grpc_request

    try:
        request = pb.ModelInferRequest.FromString(data)
    except DecodeError:
        return
    with contextlib.suppress(ServeError):
        grpc_request(request)


def line(data: bytes) -> None:
    from rnnstream.cli.stream_cmd import LineError, LineParser

    text = data.decode("utf-8", "replace")
    first, _, second = text.partition("\n")
    for key, features in ((None, ["sin"]), ("k", ["a", "b"]), (None, None)):
        parser = LineParser(key, features)
        try:
            parser.parse(first)
            parser.parse(second)
        except LineError:
            pass


HARNESSES: dict[str, Callable[[bytes], None]] = {
    "model": model, "snapshot": snapshot, "log": log, "http": http, "http_wire": http_wire,
    "grpc": grpc, "line": line}
ORDER = sorted(HARNESSES)


def every(data: bytes) -> None:
    """All harnesses in one target: the first byte picks one (``ORDER``), the rest is its input
    (`make test` fuzzes them all in one short atheris run this way)."""
    if data:
        HARNESSES[ORDER[data[0] % len(ORDER)]](data[1:])


HARNESSES["all"] = every
