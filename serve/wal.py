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

import json
import struct
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from rnnstream.runtime import StateError, StreamPool

__all__ = ["LOG_KIND", "Rows", "encode_evict", "encode_round", "replay"]

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


def encode_round(parts: Sequence[Rows], n_features: int) -> bytes:
    keys: list[Hashable] = []
    steps: list[int] = []
    starts: list[int] = []
    ends: list[int] = []
    for part in parts:
        base = len(keys)
        keys.extend(part.keys)
        steps.extend([part.x.shape[1]] * len(part.keys))
        starts.extend(base + i for i, s in enumerate(part.starts) if s)
        ends.extend(base + i for i, e in enumerate(part.ends) if e)
    doc: dict[str, object] = {"k": keys, "s": starts, "e": ends, "f": n_features}
    if any(t != 1 for t in steps):
        doc["t"] = steps
    meta = json.dumps(doc, separators=(",", ":")).encode()
    points = b"".join(np.ascontiguousarray(p.x, _F32).tobytes() for p in parts)
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
