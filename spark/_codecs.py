"""What crosses Spark's boundary: the state store's schema and bytes, the live column's layout
and bytes, and the output columns (the package docstring describes the layouts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyspark.sql import types as T

from rnnstream.runtime import (
    ModelContract,
    StateError,
)
from rnnstream.runtime.live import STATE_ARRAYS, LiveConfig, LiveStream
from rnnstream.runtime.spec import CELLS, INPUT_MODES, TARGET_MODES, state_names

__all__ = ["ERROR_COLUMN", "LIVE_COLUMN", "LIVE_STATE_SCHEMA", "STATE_COLUMNS", "STATE_SCHEMA",
           "LiveSpec", "live_columns", "live_spec"]

ERROR_COLUMN = "error"
# every state name of every cell and input/target mode, in the spec's order: one column each
STATE_COLUMNS = tuple(dict.fromkeys(
    name for mode in INPUT_MODES for target in TARGET_MODES for cell in CELLS
    for name in state_names(cell, mode, target)))
STATE_SCHEMA = T.StructType([
    T.StructField("fingerprint", T.StringType(), False),
    T.StructField("steps", T.LongType(), False),
    T.StructField("bad_rows", T.LongType(), False),
    # a column is nullable unless every cell carries that state
    *(T.StructField(name, T.BinaryType(), not all(name in c.states for c in CELLS.values()))
      for name in STATE_COLUMNS),
])
# with coverage=...: the live scores of the key (rnnstream.runtime.live), one more column
LIVE_COLUMN = "live"
LIVE_STATE_SCHEMA = T.StructType([*STATE_SCHEMA.fields,
                                  T.StructField(LIVE_COLUMN, T.BinaryType(), False)])
_STATE_DTYPE = np.dtype("<f4")
_EVENT_MS = "_rnnstream_event_ms"  # the order timestamp as epoch ms, computed by Spark (exact)


def live_columns(targets: Sequence[str], season: int | None = None) -> list[str]:
    """The double columns ``coverage=...`` adds to the output, in order: each kind, one column
    per target (``lower_<target>``, ``upper_<target>``, ...; docs/spark.md describes them)."""
    kinds = ["lower", "upper", "mae", "recent_mae", "persistence_mae"]
    if season is not None:
        kinds.append("seasonal_mae")
    kinds.append("realised_coverage")
    return [f"{kind}_{t}" for kind in kinds for t in targets]


@dataclass(frozen=True)
class LiveSpec:
    """The live scores predict_stream(coverage=...) keeps per key (picklable: plain fields)."""

    config: LiveConfig  # as asked (season None: the model's own, 0: none)
    # what the stored arrays depend on besides the model: stored after the model's fingerprint
    tag: str
    # (name, shape without the stream axis, little-endian dtype) per array, in STATE_ARRAYS order
    layout: tuple[tuple[str, tuple[int, ...], str], ...]
    columns: tuple[str, ...]  # live_columns(targets, the season in effect)

    def open(self, contract: ModelContract, source: str) -> LiveStream:
        live: LiveStream = self.config.open(contract, source)
        return live

    @property
    def size(self) -> int:
        return sum(math.prod(shape) * np.dtype(code).itemsize for _, shape, code in self.layout)

    def describe(self) -> str:
        return ", ".join(f"{name} {np.dtype(code).name}{list(shape)}"
                         for name, shape, code in self.layout)


def live_spec(contract: ModelContract, coverage: float | None = None, season: int | None = None,
              options: Mapping[str, Any] | None = None, source: str = "model", *,
              live: LiveConfig | None = None) -> LiveSpec | None:
    """The live scores asked for (``live``, or the older ``coverage``, ``season`` and
    ``options``; None without a coverage), checked on the driver: a bad setting raises
    InputError (from :class:`~rnnstream.runtime.live.LiveConfig`) before any query starts."""
    config = LiveConfig.resolve(live, coverage, season, options, "predict_stream")
    if not config.enabled:
        return None
    opened = config.open(contract, source)
    tag = (f"live coverage={opened.coverage!r} season={opened.season!r} lr={opened.lr!r} "
           f"half_life={opened.half_life!r}")
    scales = opened.settings()["scales"]  # the scale's prior acts on every step: part of it
    if any(v is not None for v in scales):
        tag += f" scales={scales!r}"
    fresh = opened.state_arrays()
    layout = tuple((name, tuple(fresh[name].shape[1:]), fresh[name].dtype.newbyteorder("<").str)
                   for name in STATE_ARRAYS)
    return LiveSpec(config, tag, layout, tuple(live_columns(contract.targets, opened.season)))


def _decode_live(blob: bytes | None, spec: LiveSpec, key: Any) -> dict[str, np.ndarray]:
    """The arrays of a ``live`` state column (one stream); their values are checked by
    LiveStream.load_arrays."""
    if blob is None or len(blob) != spec.size:
        raise StateError(f"key {_plain(key)!r}: stored live state has "
                         f"{0 if blob is None else len(blob)} bytes; expected {spec.size} "
                         f"({spec.describe()}, little-endian)")
    arrays, offset = {}, 0
    for name, shape, code in spec.layout:
        dtype, count = np.dtype(code), math.prod(shape)
        flat = np.frombuffer(blob, dtype, count, offset) if count else np.zeros(0, dtype)
        arrays[name] = flat.reshape((1, *shape)).astype(dtype.newbyteorder("="))
        offset += count * dtype.itemsize
    return arrays


def _encode(tensors: dict[str, np.ndarray], contract: ModelContract) -> tuple[bytes | None, ...]:
    """The state as Spark's state store keeps it (see STATE_SCHEMA): float32 LE bytes per
    state, row-major, in its column by name; null in the columns of states the model lacks."""
    return tuple(np.ascontiguousarray(tensors[n], _STATE_DTYPE).tobytes() if n in tensors
                 else None for n in STATE_COLUMNS)


def _plain(value: Any) -> Any:
    """numpy scalars as plain Python values, so that messages read ``ts=11``, not ``np.int64``."""
    return value.item() if isinstance(value, np.generic) else value
