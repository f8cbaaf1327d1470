"""`rnnstream stream --state`: a stopped or killed service keeps exactly what it printed."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnstream.export import export_model
from rnnstream.runtime import Predictor
from rnnstream.train.model import Forecaster, ForecasterConfig

POINTS = [0.5, -1.25, 2.0, 0.75, 1.5, -0.5, 0.25]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    torch.manual_seed(7)
    m = Forecaster(ForecasterConfig(cell="lstm", hidden=8)).eval()
    path = tmp_path_factory.mktemp("m") / "model.onnx"
    export_model(m, path)
    return path


def _start(model: Path, state: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rnnstream.cli.main", "stream", str(model), "--state", str(state),
         *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _feed(proc: subprocess.Popen, points: list[float]) -> list[float]:
    got = []
    for p in points:
        proc.stdin.write(f"{p}\n")
        proc.stdin.flush()
        got.append(float(proc.stdout.readline()))  # printed (and flushed) as soon as computed
    return got


def _state_after(model: Path, points: list[float]) -> tuple[Predictor, list[float]]:
    p = Predictor(model)
    return p, [p.step(v) for v in points]


def _assert_state(model: Path, state: Path, points: list[float]) -> None:
    ref, _ = _state_after(model, points)
    got = Predictor(model)
    got.load_state(state)
    for name in ("h", "c"):
        assert got.get_state()[name].tobytes() == ref.get_state()[name].tobytes()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_saves_exactly_the_lines_printed(model, tmp_path, signum) -> None:
    state = tmp_path / "s.npz"
    proc = _start(model, state, "--save-every", "3600")
    printed = _feed(proc, POINTS[:4])
    proc.send_signal(signum)  # while it waits for the next line
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    _assert_state(model, state, POINTS[:4])
    _, expected = _state_after(model, POINTS[:4])
    np.testing.assert_array_equal(np.float32(printed), np.float32(expected))
    # resuming with the rest continues the uninterrupted run exactly
    rest = subprocess.run([sys.executable, "-m", "rnnstream.cli.main", "stream", str(model),
                           "--state", str(state)], input="".join(f"{v}\n" for v in POINTS[4:]),
                          capture_output=True, text=True, timeout=60, check=True)
    _, whole = _state_after(model, POINTS)
    np.testing.assert_array_equal(np.float32(rest.stdout.split()), np.float32(whole[4:]))


def test_periodic_save_survives_sigkill(model, tmp_path) -> None:
    state = tmp_path / "s.npz"
    proc = _start(model, state, "--save-every", "0")  # after every line
    _feed(proc, POINTS[:3])
    time.sleep(0.5)  # the save after line 3 follows its printed prediction
    proc.kill()
    proc.communicate(timeout=30)
    _assert_state(model, state, POINTS[:3])


def test_no_periodic_save_before_the_interval(model, tmp_path) -> None:
    state = tmp_path / "s.npz"
    proc = _start(model, state, "--save-every", "3600")
    _feed(proc, POINTS[:3])
    proc.kill()
    proc.communicate(timeout=30)
    assert not state.exists()  # only the end, a stop signal or the interval save
