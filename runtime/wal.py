"""Write-ahead logs: framed, checksummed records appended after a snapshot, replayed on top of it.

A log belongs to one snapshot file and one model. The server (``rnnstream serve --state``)
logs the inputs of every round before answering it; ``rnnstream stream --state`` logs every
line before going on. Recovery is the snapshot plus the log's records, replayed in order.

File layout (little-endian)::

    b"RNNSWAL1"                       magic, 8 bytes
    frame(header)                     JSON {"format": "rnnstream-log", "version": 1 or 2,
                                      "kind": ..., "fingerprint": ..., "base": ..., ...}
    frame(record) ...                 payloads, the caller's format

    frame(payload) = u32 length, u32 CRC32(payload), payload

``base`` is the SHA-256 (hex) of the snapshot file the log continues, ``""`` when there was
none. A checkpoint writes the snapshot (atomically), then replaces the log with an empty one
whose base is the new snapshot's digest (atomically too). A crash between the two leaves a log
whose base is not the snapshot's digest: its records are all in the snapshot already, and the
reader says so (``LogContents.stale``) instead of applying them twice.

A log may be *preallocated* (``LogWriter.create(..., preallocate=N)``): the file is extended
with zeros ahead of the records (``posix_fallocate``) and each record overwrites them in place,
so an fdatasync after an append need not also commit a new file size. A frame whose length is
0 marks the end of the log (no record is empty: :meth:`LogWriter.append` refuses one), so the
zeros after the last record read as "end of log", never as a record, and are not counted as a
torn tail. A preallocated log's header says version 2, so that a runtime that reads only
version 1 (and would take the zeros for an empty record) refuses it by its version.

A crash in the middle of an append leaves a torn record at the end: a length that runs past the
end of the file, or a checksum that does not match. Reading stops at the first such record and
reports how many bytes follow it (``dropped``); :meth:`LogWriter.open` cuts them off before
appending, so a record is applied whole or not at all. A log of another kind or another model
(fingerprint) is refused with :class:`StateError`, as a snapshot would be.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .atomic import write_bytes
from .errors import StateError

__all__ = ["LOG_FORMAT", "LogContents", "LogWriter", "file_digest", "read_log"]

MAGIC = b"RNNSWAL1"
LOG_FORMAT = "rnnstream-log"
LOG_VERSION = 1
# A preallocated log says version 2: a reader of version 1 only would take its zeros for an
# empty record, so it refuses the file by its version instead. This one reads both.
PREALLOCATED_VERSION = 2
READS_VERSIONS = (LOG_VERSION, PREALLOCATED_VERSION)
_FRAME = struct.Struct("<II")  # length, CRC32
MAX_RECORD = 1 << 30  # a length beyond this is corruption, not a record


def frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's bytes; ``""`` when it does not exist."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except FileNotFoundError:
        return ""
    return h.hexdigest()


@dataclass
class LogContents:
    """What :func:`read_log` found: the header, the whole records, where they end."""

    header: dict[str, Any]
    records: list[bytes] = field(default_factory=list)
    end: int = 0  # offset just past the last whole record
    dropped: int = 0  # bytes after it (a torn or corrupt tail), cut off by LogWriter.open
    stale: bool = False  # the snapshot is newer than the log's base: its records are in it


def read_log(path: str | os.PathLike[str], kind: str, fingerprint: str,
             snapshot_digest: str) -> LogContents:
    """Read the log at ``path``; ``snapshot_digest`` is :func:`file_digest` of the snapshot it
    should continue. Raises :class:`StateError` for a file that is not a log of ``kind`` for
    this model."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise StateError(f"{source}: cannot read the log ({exc})") from exc
    if data[:len(MAGIC)] != MAGIC:
        raise StateError(f"{source}: not an rnnstream log (no {MAGIC.decode()} magic)")
    payload, pos = _next(data, len(MAGIC))
    if payload is None:
        raise StateError(f"{source}: the log's header is torn or corrupt")
    try:
        header = json.loads(payload)
    except ValueError as exc:
        raise StateError(f"{source}: the log's header is not JSON ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != LOG_FORMAT:
        raise StateError(f"{source}: not an rnnstream log")
    if header.get("version") not in READS_VERSIONS:
        raise StateError(f"{source}: log version {header.get('version')!r}; this runtime "
                         f"reads versions {list(READS_VERSIONS)}")
    if header.get("kind") != kind:
        raise StateError(f"{source}: is a {header.get('kind')!r} log, expected {kind!r}")
    found = str(header.get("fingerprint", ""))
    if found != fingerprint:
        raise StateError(f"{source}: the log belongs to another model (fingerprint "
                         f"{found[:23]!r}, this model is {fingerprint[:23]!r}); its records "
                         "only make sense with the weights that produced them")
    out = LogContents(header)
    while True:
        record, after = _next(data, pos)
        if record is None:
            break
        out.records.append(record)
        pos = after
    # what follows the last record, less the zeros of a preallocated tail
    out.end, out.dropped = pos, max(0, len(data.rstrip(b"\0")) - pos)
    base = str(header.get("base", ""))
    if base != snapshot_digest:
        if not snapshot_digest:
            raise StateError(f"{source}: the log continues a snapshot (sha256 {base[:16]}...) "
                             "that is missing; restore that snapshot file, or move the log "
                             "away to start without its records")
        out.stale = True
    return out


def _next(data: bytes, pos: int) -> tuple[bytes | None, int]:
    """The payload of the frame at ``pos`` and the offset after it; None if torn or corrupt."""
    head = data[pos:pos + _FRAME.size]
    if len(head) < _FRAME.size:
        return None, pos
    length, crc = _FRAME.unpack(head)
    start = pos + _FRAME.size
    if length == 0 or length > MAX_RECORD:  # 0: the end (a preallocated tail's zeros)
        return None, pos
    if start + length > len(data):
        return None, pos
    payload = data[start:start + length]
    if zlib.crc32(payload) != crc:
        return None, pos
    return payload, start + length


class LogWriter:
    """Appends framed records to a log; :meth:`sync` makes them durable (one fdatasync for
    every record appended since the last one: group commit).

    With ``preallocate=N`` (bytes) the file is extended N bytes at a time with zeros ahead of
    the records and each record overwrites them (``pwrite``), so most fdatasyncs flush data
    only, not a size change; where the file system cannot preallocate, records extend the file
    as they would without it."""

    def __init__(self, path: str | os.PathLike[str], fd: int, size: int,
                 preallocate: int = 0) -> None:
        self.path = os.fspath(path)
        self._fd = fd
        self.size = size  # bytes of the header and records (the file may hold zeros after)
        self.unsynced = 0  # bytes appended since the last sync
        self.total = 0  # bytes appended since opened, across resets (only grows)
        self.synced_total = 0  # of which are durable (fsynced)
        self.preallocate = max(0, preallocate)
        self.allocated = os.fstat(fd).st_size  # bytes the file holds (records + zeros)

    @classmethod
    def create(cls, path: str | os.PathLike[str], header: Mapping[str, Any],
               preallocate: int = 0) -> LogWriter:
        """Replace ``path`` (atomically) by an empty log with ``header``."""
        version = PREALLOCATED_VERSION if preallocate > 0 else LOG_VERSION
        data = MAGIC + frame(json.dumps({"format": LOG_FORMAT, "version": version,
                                         **header}).encode())
        write_bytes(path, data)
        writer = cls(path, os.open(path, os.O_WRONLY), len(data), preallocate)
        writer._grow(preallocate)
        return writer

    @classmethod
    def open(cls, path: str | os.PathLike[str], contents: LogContents,
             preallocate: int = 0) -> LogWriter:
        """Append to a log read by :func:`read_log`, its torn tail (if any) cut off first (the
        zeros of a preallocated tail stay: records overwrite them)."""
        fd = os.open(path, os.O_WRONLY)
        if contents.dropped:
            os.ftruncate(fd, contents.end)
            _sync(fd)
        return cls(path, fd, contents.end, preallocate)

    def append(self, payload: bytes) -> None:
        if not payload:
            raise ValueError("an empty record cannot be logged (a zero length marks the end "
                             "of the log)")
        data = frame(payload)
        self._reserve(len(data))
        view, at = memoryview(data), self.size
        while view:
            n = os.pwrite(self._fd, view, at)
            view, at = view[n:], at + n
        self.size += len(data)
        self.unsynced += len(data)
        self.total += len(data)

    def _reserve(self, n: int) -> None:
        """Zeros ahead of the records for ``n`` more bytes and more, when preallocating."""
        if self.preallocate and self.size + n > self.allocated:
            self._grow(max(self.preallocate, self.size + n - self.allocated))

    def _grow(self, grow: int) -> None:
        if not grow:
            return
        try:
            os.posix_fallocate(self._fd, self.allocated, grow)
        except (OSError, AttributeError):  # not on this file system (or OS): extend as we go
            self.preallocate = 0
            return
        self.allocated += grow

    def sync(self) -> None:
        if self.unsynced:
            self.sync_fd()

    def sync_fd(self) -> None:
        """fdatasync, whatever was appended (the group commit's thread calls this)."""
        total = self.total  # appended before the fsync: durable after it
        _sync(self._fd)
        self.unsynced = 0
        self.synced_total = total

    def reset(self, header: Mapping[str, Any]) -> None:
        """Start over with an empty log (after a checkpoint), atomically."""
        fresh = LogWriter.create(self.path, header, self.preallocate)  # the old file stays
        self.close()  # whole until replaced
        self._fd, self.size, self.unsynced = fresh._fd, fresh.size, 0
        self.allocated, self.preallocate = fresh.allocated, fresh.preallocate
        self.synced_total = self.total  # the new file was fsynced whole

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _sync(fd: int) -> None:
    # fdatasync: the data and the file size, not the timestamps (Linux); fsync elsewhere
    (getattr(os, "fdatasync", None) or os.fsync)(fd)
