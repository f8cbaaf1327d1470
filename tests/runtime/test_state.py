"""runtime/_state.py on its own: State checks and the snapshot file format."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from rnnstream.runtime import State, StateError
from rnnstream.runtime._io import StateBinding
from rnnstream.runtime._state import (
    check_fingerprint,
    check_tensors,
    read_snapshot,
    state_arrays,
    tensors_from,
    write_snapshot,
)

F32 = np.dtype(np.float32)
PAIRS = [StateBinding("h", "h_in", "h_out", (None, 2, 3), F32, 0),
         StateBinding("c", "c_in", "c_out", (None, 2, 3), F32, 0)]


def _state(value: float = 0.5) -> dict[str, np.ndarray]:
    return {"h": np.full((2, 3), value, np.float32), "c": np.full((2, 3), -value, np.float32)}


def test_check_tensors_copies_and_refuses_misfits():
    given = _state()
    out = check_tensors(given, PAIRS, "src")
    out["h"][0, 0] = 9
    assert given["h"][0, 0] == 0.5  # a copy
    bad = {
        "names": ({"h": given["h"]}, r"src: has states \['h'\], this model has \['h', 'c'\]"),
        "shape": ({**given, "h": np.zeros((3, 2), np.float32)}, "state 'h' is array of shape"),
        "dtype": ({**given, "c": given["c"].astype(np.float64)}, "dtype float64; expected"),
        "nan": ({**given, "c": np.full((2, 3), np.nan, np.float32)}, "'c' contains NaN"),
        "type": ([1, 2], "expected a State or a mapping"),
    }
    for value, match in bad.values():
        with pytest.raises(StateError, match=match):
            check_tensors(value, PAIRS, "src")
    pool = check_tensors({k: np.stack([v, v]) for k, v in given.items()}, PAIRS, "src", 2)
    assert pool["h"].shape == (2, 2, 3)


def test_fingerprint_check():
    check_fingerprint("sha256:a", "sha256:a", "x")
    with pytest.raises(StateError, match="x: the snapshot belongs to another model"):
        check_fingerprint("sha256:a", "sha256:b", "x")


def test_snapshot_round_trip_and_format(tmp_path):
    path = tmp_path / "s.npz"
    write_snapshot(path, {"kind": "stream", "fingerprint": "sha256:f"}, state_arrays(_state()))
    meta, arrays = read_snapshot(path, "stream")
    assert meta == {"format": "rnnstream-state", "version": 1, "kind": "stream",
                    "fingerprint": "sha256:f"}
    got = tensors_from(arrays)
    assert {k: v.tobytes() for k, v in got.items()} == {k: v.tobytes()
                                                         for k, v in _state().items()}
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["__meta__.npy", "state.c.npy", "state.h.npy"]
    with pytest.raises(StateError, match="is a 'stream' snapshot, expected 'pool'"):
        read_snapshot(path, "pool")


def test_unreadable_snapshots(tmp_path):
    with pytest.raises(StateError, match="no such snapshot file"):
        read_snapshot(tmp_path / "none.npz", "stream")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(StateError, match="not a readable rnnstream snapshot"):
        read_snapshot(junk, "stream")
    newer = tmp_path / "newer.npz"
    np.savez(newer, __meta__=np.array(json.dumps({"format": "rnnstream-state", "version": 2,
                                                  "kind": "stream"})))
    with pytest.raises(StateError, match="snapshot version 2; this runtime reads version 1"):
        read_snapshot(newer, "stream")


def test_state_is_a_read_only_mapping_with_a_short_repr():
    s = State(_state(), "sha256:" + "f" * 64)
    assert sorted(s) == ["c", "h"]
    assert len(s) == 2
    assert s["h"].shape == (2, 3)
    assert repr(s).startswith("State({h: (2, 3), c: (2, 3)}, fingerprint='sha256:ffff")
