"""examples/lesson: the lesson's notebook, exported and streamed, runs as a user would run it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, input=stdin, timeout=300,
                          check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_lesson_example_trains_exports_and_streams(tmp_path):
    out = run(sys.executable, "examples/lesson/lesson.py", "--out", str(tmp_path))
    assert "rebuilt natively as a rnn forecaster" in out
    diff = float(re.search(r"max \|runtime - the lesson's module\| = (\S+);", out).group(1))
    assert diff < 1e-5  # float32 torch vs onnxruntime, one RNN layer of 32 at |y| <= 1
    mae = float(re.search(r"MAE (\S+) \(persistence (\S+)\)", out).group(1))
    assert mae < 0.05  # the lesson's model has learnt the sine (persistence: 0.1)
    model = tmp_path / "sine.onnx"
    rnnstream = str(Path(sys.executable).with_name("rnnstream"))
    assert "features:    sin" in run(rnnstream, "inspect", str(model))
    streamed = run(rnnstream, "stream", str(model), "--coverage", "0.9",
                   stdin=(tmp_path / "held_out.csv").read_text())
    rows = [line.split(",") for line in streamed.splitlines()]
    assert len(rows) == 201
    assert all(len(r) == 3 and float(r[1]) <= float(r[0]) <= float(r[2]) for r in rows)
