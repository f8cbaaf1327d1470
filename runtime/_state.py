"""Stream state snapshots: the :class:`State` value, its checks, and its file format.

A snapshot file is an ``.npz`` archive (read with ``allow_pickle=False``: data, never code)::

    __meta__         0-d unicode array: JSON {"format": "rnnstream-state", "version": 1,
                     "kind": "stream" | "pool", "fingerprint": ..., "states": [names],
                     "keys": [...]  (pool only: the stream keys, str or int, in row order)}
    state.<name>     one array per state: [*row] for a stream, [streams, *row] for a pool
    last_output      stream only, optional: the latest prediction (what forecast feeds back)
    live.<name>      stream only, optional: the live scores of ``Predictor(coverage=...)``
                     (:meth:`rnnstream.runtime.live.LiveScores.state_arrays`, one stream)

Files are written atomically by :mod:`._atomic`: a temporary file in the same folder, flushed
and fsync'ed, then ``os.replace``'d over the target, so a crash leaves the old snapshot or the
new one, never half.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._io import StateBinding
from .atomic import write_file
from .errors import StateError

SNAPSHOT_FORMAT = "rnnstream-state"
SNAPSHOT_VERSION = 1
_META = "__meta__"
_PREFIX = "state."


@dataclass(frozen=True, eq=False)
class State(Mapping[str, np.ndarray]):
    """A copy of one stream's state: state name -> array (``[layers, hidden]`` for rnnstream
    models), plus the fingerprint of the model it belongs to and the latest prediction."""

    tensors: Mapping[str, np.ndarray]
    fingerprint: str = ""
    last_output: np.ndarray | None = field(default=None)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {v.shape}" for k, v in self.tensors.items())
        return f"State({{{shapes}}}, fingerprint={self.fingerprint[:19]!r})"


def check_tensors(given: Any, pairs: Sequence[StateBinding], source: str,
                  streams: int | None = None) -> dict[str, np.ndarray]:
    """Validated copies of ``given`` (name -> array) for ``pairs``; ``streams`` adds a
    leading axis of that many rows (pool snapshots)."""
    if not isinstance(given, Mapping):
        raise StateError(f"{source}: expected a State or a mapping of state name to array, "
                         f"got {type(given).__name__}")
    names = [p.name for p in pairs]
    if sorted(given) != sorted(names):
        raise StateError(f"{source}: has states {sorted(given)}, this model has {names}")
    out = {}
    for p in pairs:
        value = given[p.name]
        shape = p.row_shape if streams is None else (streams, *p.row_shape)
        if not isinstance(value, np.ndarray) or value.dtype != p.dtype or value.shape != shape:
            what = (f"array of shape {value.shape} and dtype {value.dtype}"
                    if isinstance(value, np.ndarray) else type(value).__name__)
            raise StateError(f"{source}: state {p.name!r} is {what}; expected {p.dtype} "
                             f"of shape {shape}")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise StateError(f"{source}: state {p.name!r} contains NaN or infinity")
        out[p.name] = np.array(value, copy=True, order="C")
    return out


def check_fingerprint(found: str, expected: str, source: str) -> None:
    if found != expected:
        raise StateError(
            f"{source}: the snapshot belongs to another model (fingerprint {found[:23]!r}, "
            f"this model is {expected[:23]!r}); a state only makes sense with the weights "
            "that produced it"
        )


# -- files -------------------------------------------------------------------------------------
def write_snapshot(path: str | os.PathLike[str], meta: Mapping[str, Any],
                   arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` and ``meta`` to ``path`` atomically (see :mod:`._atomic`)."""
    payload: dict[str, Any] = {_META: np.array(json.dumps({"format": SNAPSHOT_FORMAT,
                                                           "version": SNAPSHOT_VERSION, **meta}))}
    payload.update(arrays)
    write_file(path, lambda f: np.savez(f, **payload))


def read_snapshot(path: str | os.PathLike[str], kind: str) -> tuple[dict[str, Any],
                                                                    dict[str, np.ndarray]]:
    """(meta, arrays) of a snapshot of ``kind``; any problem is a :class:`StateError`."""
    import struct  # only when loading (np.load uses them anyway)
    import tokenize
    import zipfile
    import zlib

    path = os.fspath(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy file (fuzz finding)
            raise StateError(f"{path}: not an rnnstream snapshot (a single .npy array, not the "
                             "archive save_state writes)")
        with loaded as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError as exc:
        raise StateError(f"{path}: no such snapshot file") from exc
    # what zipfile and numpy raise for a damaged archive (found by fuzz/harnesses.py): an
    # unknown compression method is NotImplementedError, an encrypted member RuntimeError, an
    # .npy header cut inside a bracket tokenize.TokenError (numpy tokenizes the header)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, NotImplementedError,
            RuntimeError, zlib.error, struct.error, tokenize.TokenError, SyntaxError) as exc:
        raise StateError(f"{path}: not a readable rnnstream snapshot ({exc})") from exc
    stray = sorted(k for k, v in arrays.items() if not isinstance(v, np.ndarray))
    if stray:  # np.load hands back a member without the .npy magic as raw bytes (fuzz finding)
        raise StateError(f"{path}: not an rnnstream snapshot (member {stray[0]!r} is not a "
                         "numpy array)")
    if _META not in arrays or arrays[_META].dtype.kind != "U" or arrays[_META].ndim != 0:
        raise StateError(f"{path}: not an rnnstream snapshot (no {_META} record)")
    record = arrays.pop(_META)
    try:
        # decoded from its UCS-4 bytes, strictly: str() of a numpy string holding a code point
        # past U+10FFFF makes an invalid str that json then fails on with a SystemError (found
        # by fuzz/harnesses.py)
        big = record.dtype.byteorder == ">" or (record.dtype.byteorder == "=" and
                                                 sys.byteorder == "big")
        codec = "utf-32-be" if big else "utf-32-le"
        text = np.ascontiguousarray(record).tobytes().decode(codec).rstrip("\0")
        meta = json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError and json's errors are ValueErrors
        raise StateError(f"{path}: the snapshot's {_META} record is not JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != SNAPSHOT_FORMAT:
        raise StateError(f"{path}: not an rnnstream snapshot")
    if meta.get("version") != SNAPSHOT_VERSION:
        raise StateError(f"{path}: snapshot version {meta.get('version')!r}; this runtime "
                         f"reads version {SNAPSHOT_VERSION}")
    if meta.get("kind") != kind:
        other = "StreamPool.load_state" if meta.get("kind") == "pool" else "Predictor.load_state"
        raise StateError(f"{path}: is a {meta.get('kind')!r} snapshot, expected {kind!r} "
                         f"(use {other})")
    return meta, arrays


def state_arrays(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {_PREFIX + k: v for k, v in tensors.items()}


def tensors_from(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k[len(_PREFIX):]: v for k, v in arrays.items() if k.startswith(_PREFIX)}
