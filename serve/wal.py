"""The server's write-ahead log: what each round applied, encoded, and replayed on recovery.

With ``--state`` and ``--durability log`` (the default), every round appends one record of
the rows it *completed* (a row: one sequence's share of a request, all of its points, with its
start and end flags) and fsyncs the log once for the whole round before any of its answers is
sent (group commit: every sequence of a round shares one fsync). A multi-point request is
logged when its last point has run, so recovery applies a request's points to a sequence all
or not at all. Evictions are logged too (they take effect in the same order on recovery).

Recovery (:func:`replay`) applies the records to the restored snapshot in order. Each row
starts (or resets) its sequence when flagged, steps its points, and ends it when flagged;
StreamPool's results do not depend on which rows share a step, so replaying rows in other
groupings than the live rounds used gives the same states, bit for bit.

Record payloads (inside the framing of :mod:`rnnstream.runtime.wal`)::

    b"R" u32 n  JSON {"k": [keys], "t": [points per row] (omitted: 1 each),
                      "s": [rows that start], "e": [rows that end], "f": features}
               then float32 little-endian points, row by row ([T, F] each)
    b"E" u32 n  JSON {"k": [evicted keys]}
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import struct
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from rnnstream.runtime import StateError, StreamPool
from rnnstream.runtime.wal import LogWriter

__all__ = ["LOG_KIND", "GroupCommit", "Rows", "encode_evict", "encode_round", "replay"]

LOG_KIND = "serve"
_LEN = struct.Struct("<I")
_F32 = np.dtype("<f4")


@dataclass
class Rows:
    """Completed rows of one request: ``x`` [B, T, F] (float32), one key and flag each."""

    keys: Sequence[Hashable]
    x: np.ndarray
    starts: Sequence[bool]
    ends: Sequence[bool]


Synced = Callable[[Exception | None], None]  # called on the loop: durable (None) or failed


class GroupCommit:
    """fsync off the event loop, shared by every round appended meanwhile (group commit).

    A round appends its record (a write(): microseconds) and asks :meth:`after_sync` to call
    back once the log is durable up to there; the rounds that follow run while a thread
    fsyncs, and the next fsync covers all of them. So the event loop never waits for the
    disk, and under load one fsync serves many rounds. Callbacks run on the event loop, in
    append order.

    :meth:`flush` syncs at once on the calling thread (a checkpoint, a stop); :meth:`locked`
    holds off the thread while the log file is replaced (a checkpoint's reset)."""

    def __init__(self, writer: LogWriter, loop: asyncio.AbstractEventLoop,
                 observe: Callable[[float], None]) -> None:
        self.writer, self.loop, self.observe = writer, loop, observe
        self.locked = threading.Lock()  # held while fsyncing or replacing the file
        self._cond = threading.Condition()
        self._wanted = 0  # bytes (writer.total) someone waits for; thread side
        self._closed = False
        self._synced = writer.synced_total  # durable up to here; loop side
        self._waiters: collections.deque[tuple[int, Synced]] = collections.deque()
        self.failed: Exception | None = None
        self._done = writer.synced_total  # durable up to here; thread side
        self._thread = threading.Thread(target=self._run, name="rnnstream-log-sync",
                                        daemon=True)
        self._thread.start()

    @property
    def pending(self) -> bool:
        return bool(self._waiters)


    def after_sync(self, callback: Synced) -> None:
        """Call ``callback`` (on the loop) once everything appended so far is durable."""
        if self.failed is not None:
            callback(self.failed)
            return
        target = self.writer.total
        if target <= self._synced:
            callback(None)
            return
        self._waiters.append((target, callback))
        with self._cond:
            self._wanted = max(self._wanted, target)
            self._cond.notify()

    def flush(self) -> None:
        """Sync now on this thread and run every waiting callback (OSError if it fails)."""
        started = time.perf_counter()
        with self.locked:
            target = self.writer.total
            self.writer.sync_fd()
        self.observe(time.perf_counter() - started)
        self._reached(target)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(10)

    # -- the thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._wanted > self._done)
                if self._closed:
                    return
            started = time.perf_counter()
            try:
                with self.locked:
                    target = self.writer.total  # everything appended before this fsync
                    self.writer.sync_fd()
            except OSError as exc:
                self._post(self.fail, exc)
                return
            self._done = max(self._done, target)
            self._post(self._synced_after, target, time.perf_counter() - started)

    def _post(self, fn: Callable[..., None], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(fn, *args)

    # -- back on the loop -------------------------------------------------------------------------
    def _synced_after(self, target: int, seconds: float) -> None:
        self.observe(seconds)
        self._reached(target)

    def _reached(self, target: int) -> None:
        self._synced = max(self._synced, target)
        waiters = self._waiters
        while waiters and waiters[0][0] <= self._synced:
            waiters.popleft()[1](None)

    def fail(self, exc: Exception) -> None:
        self.failed = exc
        waiters, self._waiters = self._waiters, collections.deque()
        for _, callback in waiters:
            callback(exc)


def encode_round(parts: Sequence[Rows], n_features: int) -> bytes:
    """One record for a round's completed rows. On the event loop once per round, so written
    for the common cases: rows of one point (no ``t`` list), no flags (no enumeration), and
    float32 points (no conversion) -- 64 one-row parts cost about a third of a generic loop."""
    keys: list[Hashable] = []
    starts: list[int] = []
    ends: list[int] = []
    multi = False
    for part in parts:
        if part.x.shape[1] != 1:
            multi = True
        if any(part.starts):
            starts += [len(keys) + i for i, s in enumerate(part.starts) if s]
        if any(part.ends):
            ends += [len(keys) + i for i, e in enumerate(part.ends) if e]
        keys += part.keys
    doc: dict[str, object] = {"k": keys, "s": starts, "e": ends, "f": n_features}
    if multi:
        doc["t"] = [p.x.shape[1] for p in parts for _ in p.keys]
    meta = json.dumps(doc, separators=(",", ":")).encode()
    points = b"".join([np.ascontiguousarray(p.x, _F32).tobytes() if p.x.dtype != _F32
                       else p.x.tobytes() for p in parts])
    return b"R" + _LEN.pack(len(meta)) + meta + points


def encode_evict(keys: Sequence[Hashable]) -> bytes:
    meta = json.dumps({"k": list(keys)}, separators=(",", ":")).encode()
    return b"E" + _LEN.pack(len(meta)) + meta


def _decode(record: bytes, n_features: int, where: str) -> tuple[str, dict, bytes]:
    if len(record) < 1 + _LEN.size or record[:1] not in (b"R", b"E"):
        raise StateError(f"{where}: not a record of the server's log")
    (n,) = _LEN.unpack_from(record, 1)
    body = 1 + _LEN.size
    try:
        doc = json.loads(record[body:body + n])
    except ValueError as exc:
        raise StateError(f"{where}: the record's keys are not JSON ({exc})") from exc
    if not isinstance(doc, dict) or not _keys_ok(doc.get("k")):
        raise StateError(f"{where}: the record's keys are not a list of distinct str/int")
    if record[:1] == b"R" and doc.get("f") != n_features:
        raise StateError(f"{where}: a record of {doc.get('f')!r} features; this model takes "
                         f"{n_features}")
    return record[:1].decode(), doc, record[body + n:]


def _keys_ok(keys: object) -> bool:
    return (isinstance(keys, list) and all(type(k) in (int, str) for k in keys)
            and len(set(keys)) == len(keys))


def _indices(value: object, n: int, where: str) -> set[int]:
    if not isinstance(value, list) or not all(type(i) is int and 0 <= i < n for i in value):
        raise StateError(f"{where}: the record's start/end rows are not row numbers below {n}")
    return set(value)


def replay(pool: StreamPool, records: Sequence[bytes], n_features: int, source: str) -> int:
    """Apply ``records`` to ``pool`` in order; returns how many points were stepped. A record
    that does not fit the pool (a sequence stepped without being live) is a StateError."""
    stepped = 0
    for i, record in enumerate(records):
        where = f"{source}: record {i + 1} of {len(records)}"
        kind, doc, points = _decode(record, n_features, where)
        keys = doc["k"]
        if kind == "E":
            for key in keys:
                if key in pool:
                    pool.remove(key)
            continue
        stepped += _replay_round(pool, keys, doc, points, n_features, where)
    return stepped


def _replay_round(pool: StreamPool, keys: list, doc: dict, points: bytes, n_features: int,
                  where: str) -> int:
    steps = doc.get("t", [1] * len(keys))
    if (not isinstance(steps, list) or len(steps) != len(keys)
            or not all(type(t) is int and t >= 1 for t in steps)):
        raise StateError(f"{where}: the record's point counts do not match its keys")
    starts = _indices(doc.get("s"), len(keys), where)
    ends = _indices(doc.get("e"), len(keys), where)
    total = sum(steps) * n_features
    if len(points) != total * _F32.itemsize:
        raise StateError(f"{where}: {len(points)} bytes of points; expected {total} float32")
    flat = np.frombuffer(points, _F32)
    rows, offset = [], 0
    for t in steps:
        rows.append(flat[offset:offset + t * n_features].reshape(t, n_features))
        offset += t * n_features
    missing = [k for i, k in enumerate(keys) if i not in starts and k not in pool]
    if missing:
        raise StateError(f"{where}: steps sequence {missing[0]!r}, which is not live in the "
                         "snapshot and earlier records; the log does not continue this snapshot")
    for i in sorted(starts):
        if keys[i] in pool:
            pool.reset(keys[i])
        else:
            pool.add(keys[i])
    for t in range(max(steps, default=0)):
        live = [i for i, n in enumerate(steps) if n > t]
        pool.step_many([keys[i] for i in live], np.stack([rows[i][t] for i in live]))
    for i in sorted(ends):
        pool.remove(keys[i])
    return sum(steps)
