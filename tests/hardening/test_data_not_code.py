"""Checkpoints and snapshots are data, never code.

* the source never unpickles, evals or execs (a grep over train/, export/, runtime/, cli/);
* a torch checkpoint carrying a malicious pickle is refused, and its payload never runs;
* a snapshot holding an object array, or of the wrong shape, dtype or model, is refused with
  StateError and the live state is unchanged.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnstream.runtime import Predictor, StateError, StreamPool
from rnnstream.train.checkpoint import load_checkpoint, save_checkpoint
from rnnstream.train.errors import CheckpointError

from .conftest import assert_same_state

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["train", "export", "runtime", "cli"]
FORBIDDEN = [
    (re.compile(r"\bpickle\.loads?\("), "pickle.load"),
    (re.compile(r"\bdill\.|\bcloudpickle\.|\bmarshal\.loads?\("), "another unpickler"),
    (re.compile(r"allow_pickle\s*=\s*True"), "allow_pickle=True"),
    (re.compile(r"(?<![\w.`])eval\("), "eval("),  # ``eval()`` in prose is fine
    (re.compile(r"(?<![\w.`])exec\("), "exec("),
    (re.compile(r"weights_only\s*=\s*False"), "weights_only=False"),
]


def _torch_loads_without_weights_only(text: str) -> list[str]:
    """``torch.load(...)`` calls whose argument list lacks ``weights_only=True``."""
    bad = []
    for m in re.finditer(r"torch\.load\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        if not re.search(r"weights_only\s*=\s*True", text[m.end():i]):
            bad.append(text[m.start():i])
    return bad


def test_source_never_runs_code_from_data():
    found = []
    files = [p for d in SOURCES for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 20  # the grep looked where the code is
    for path in files:
        text = path.read_text(encoding="utf-8")
        for pattern, what in FORBIDDEN:
            found += [f"{path.relative_to(ROOT)}: {what}" for _ in pattern.finditer(text)]
        found += [f"{path.relative_to(ROOT)}: {call}"
                  for call in _torch_loads_without_weights_only(text)]
    assert not found, found


class _Payload:
    """Unpickling this would call os.system(...) and create the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_and_never_runs(models, tmp_path):
    good = save_checkpoint(tmp_path / "good.pt", models["multi"].model)
    payload = torch.load(good, weights_only=True)
    marker = tmp_path / "pwned"
    payload["metrics"] = {"evil": _Payload(marker)}
    evil = tmp_path / "evil.pt"
    torch.save(payload, evil)
    with pytest.raises(CheckpointError, match="not a safe rnnstream checkpoint"):
        load_checkpoint(evil)
    assert not marker.exists()
    bare = tmp_path / "bare.pt"
    torch.save(_Payload(marker), bare)
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_checkpoint(bare)
    assert not marker.exists()


def _stream(models, steps: int = 5) -> Predictor:
    p = Predictor(models["multi"].path)
    for i in range(steps):
        p.step([float(i), 2.0 * i, -1.0])
    return p


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    edit(arrays)
    np.savez(dst, **arrays)
    return dst


def _meta_edit(**changes):
    def edit(arrays):
        meta = json.loads(str(arrays["__meta__"]))
        meta.update(changes)
        arrays["__meta__"] = np.array(json.dumps(meta))
    return edit


def _set(key, value):
    def edit(arrays):
        arrays[key] = value
    return edit


BAD_SNAPSHOTS = {
    "object_array": (_set("state.h", np.array([{"a": 1}], dtype=object)),
                     "not a readable rnnstream snapshot"),
    "object_meta": (_set("__meta__", np.array(["x"], dtype=object)),
                    "not a readable rnnstream snapshot"),
    "wrong_shape": (_set("state.h", np.zeros((1, 9), np.float32)), "of shape"),
    "wrong_dtype": (_set("state.h", np.zeros((1, 8), np.float64)), "expected float32"),
    "nan": (_set("state.h", np.full((1, 8), np.nan, np.float32)), "NaN or infinity"),
    "fingerprint": (_meta_edit(fingerprint="sha256:" + "f" * 64), "belongs to another model"),
    "kind": (_meta_edit(kind="pool"), "use StreamPool.load_state"),
    "version": (_meta_edit(version=2), "snapshot version 2"),
    "last_output": (_set("last_output", np.zeros(5, np.float32)), "last_output must be"),
}


@pytest.mark.parametrize("case", sorted(BAD_SNAPSHOTS))
def test_bad_snapshot_is_refused_and_state_unchanged(models, tmp_path, case):
    edit, match = BAD_SNAPSHOTS[case]
    p = _stream(models)
    p.save_state(tmp_path / "good.npz")
    bad = _rewrite(tmp_path / "good.npz", tmp_path / "bad.npz", edit)
    p.step([9.0, 9.0, 9.0])
    before = p.get_state()
    with pytest.raises(StateError, match=match):
        p.load_state(bad)
    assert_same_state(before, p.get_state())
    np.testing.assert_array_equal(before.last_output, p.get_state().last_output)


def test_pool_snapshot_with_object_keys_is_refused(models, tmp_path):
    pool = StreamPool(models["multi"].path)
    pool.add("a")
    pool.step_many(["a"], np.ones((1, 3), np.float32))
    pool.save_state(tmp_path / "p.npz")
    before = pool.get_state("a")
    with zipfile.ZipFile(tmp_path / "p.npz") as z:
        names = z.namelist()
    assert "__meta__.npy" in names
    bad = _rewrite(tmp_path / "p.npz", tmp_path / "bad.npz",
                   _set("state.h", np.array([None], dtype=object)))
    with pytest.raises(StateError, match="not a readable rnnstream snapshot"):
        pool.load_state(bad)
    assert pool.keys() == ["a"]
    assert_same_state(before, pool.get_state("a"))
