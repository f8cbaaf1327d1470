"""Snapshots survive a new process bit for bit; the runtime never loads torch or onnx."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np

from rnnstream.runtime import Predictor, StreamPool


def _py(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_snapshot_restored_in_new_process_equals_uninterrupted(lstm, tmp_path):
    path = lstm[0]
    xs = np.random.default_rng(4).normal(size=60).astype(np.float32)
    np.save(tmp_path / "xs.npy", xs)
    whole = Predictor(path)
    ref = np.array([whole.step(float(v)) for v in xs], np.float64)
    first = Predictor(path)
    for v in xs[:30]:
        first.step(float(v))
    first.save_state(tmp_path / "s.npz")
    assert not list(tmp_path.glob("*.rnnstream-tmp"))  # the temporary file was renamed
    out = _py(f"""
        import numpy as np
        from rnnstream.runtime import Predictor
        p = Predictor({str(path)!r})
        p.load_state({str(tmp_path / "s.npz")!r})
        xs = np.load({str(tmp_path / "xs.npy")!r})
        ys = [p.step(float(v)) for v in xs[30:]]
        np.save({str(tmp_path / "ys.npy")!r}, np.array(ys, np.float64))
        p.save_state({str(tmp_path / "end.npz")!r})
    """)
    assert out == ""
    np.testing.assert_array_equal(np.load(tmp_path / "ys.npy"), ref[30:])
    end = Predictor(path)
    end.load_state(tmp_path / "end.npz")
    for name in ("h", "c"):
        np.testing.assert_array_equal(end.get_state()[name], whole.get_state()[name])
    np.testing.assert_array_equal(end.forecast(3), whole.forecast(3))


def test_pool_snapshot_in_new_process(lstm, tmp_path):
    path = lstm[0]
    pool = StreamPool(path, auto_add=True)
    pool.step({"a": 0.5, "b": -0.5})
    pool.save_state(tmp_path / "pool.npz")
    expected = pool.step({"a": 0.25, "b": 0.75})
    out = _py(f"""
        from rnnstream.runtime import StreamPool
        pool = StreamPool({str(path)!r})
        pool.load_state({str(tmp_path / "pool.npz")!r})
        y = pool.step({{"a": 0.25, "b": 0.75}})
        print(repr(y["a"]), repr(y["b"]))
    """)
    assert out.split() == [repr(expected["a"]), repr(expected["b"])]


def test_runtime_never_imports_torch_or_onnx(lstm, tmp_path):
    out = _py(f"""
        import sys
        import rnnstream.runtime as rt
        p = rt.Predictor({str(lstm[0])!r})
        p.step(0.1); p.prime([0.1, 0.2]); p.forecast(2)
        p.save_state({str(tmp_path / "s.npz")!r}); p.load_state({str(tmp_path / "s.npz")!r})
        pool = rt.StreamPool({str(lstm[0])!r}, auto_add=True)
        pool.step({{"a": 1.0}})
        import rnnstream.cli.stream_cmd
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "onnx")))
    """)
    assert out.strip() == "[]"


def test_save_sweeps_temp_files_of_dead_writers_only(lstm, tmp_path):
    """A writer killed mid-save leaves its temp file; the next save removes it, but never the
    temp file of a writer that is still alive."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_temp = tmp_path / f".s.npz.{int(dead.stdout)}.abc123.rnnstream-tmp"
    live_temp = tmp_path / f".s.npz.{os.getppid()}.def456.rnnstream-tmp"
    other = tmp_path / f".other.npz.{int(dead.stdout)}.x.rnnstream-tmp"  # another snapshot's
    for t in (dead_temp, live_temp, other):
        t.write_bytes(b"partial")
    p = Predictor(lstm[0])
    p.step(0.5)
    p.save_state(tmp_path / "s.npz")
    assert not dead_temp.exists()
    assert live_temp.exists()
    assert other.exists()
    q = Predictor(lstm[0])
    q.load_state(tmp_path / "s.npz")
    assert q.get_state()["h"].tobytes() == p.get_state()["h"].tobytes()
