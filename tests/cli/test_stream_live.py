"""`rnnstream stream --coverage`: intervals on every line, live scores saved and summarised."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rnnstream.runtime import Predictor, StreamPool


def _stream(model, stdin: str, *extra: str):
    return subprocess.run([sys.executable, "-m", "rnnstream.cli.main", "stream", str(model),
                           *extra], input=stdin, capture_output=True, text=True, timeout=60,
                          check=False)


def _series(n: int = 60) -> list[float]:
    rng = np.random.default_rng(2)
    return [round(math.sin(t / 4) + 0.1 * float(rng.normal()), 4) for t in range(n)]


def _fmt(values) -> str:
    return ",".join(format(float(v), ".9g") for v in values)


def test_each_line_is_prediction_lower_upper_as_the_predictor_says(lstm):
    path = lstm[0]
    xs = _series()
    out = _stream(path, "".join(f"{v}\n" for v in xs), "--coverage", "0.8")
    assert out.returncode == 0, out.stderr
    p = Predictor(path, coverage=0.8)
    want = []
    for v in xs:
        y = p.step(v)
        lo, hi = p.interval()
        want.append(_fmt([y, lo, hi]))
    assert out.stdout.splitlines() == want
    assert out.stdout.splitlines()[0].endswith(",-inf,inf")  # this model stores no quantiles
    assert "live scores (1 stream" in out.stderr
    assert "coverage (asked 0.8)" in out.stderr
    plain = _stream(path, "".join(f"{v}\n" for v in xs))
    assert [line.split(",")[0] for line in want] == plain.stdout.splitlines()
    assert plain.stderr == ""  # without --coverage: output and stderr as before


def test_live_metrics_equal_offline_metrics_of_the_printed_predictions_exactly(lstm, tmp_path):
    path = lstm[0]
    xs = _series(80)
    state = tmp_path / "s.npz"
    out = _stream(path, "".join(f"{v}\n" for v in xs), "--coverage", "0.9", "--season", "8",
                  "--state", str(state))
    assert out.returncode == 0, out.stderr
    # 9 significant digits name a float32 exactly: read them back as the float32 they were
    pred = np.float32([line.split(",")[0] for line in out.stdout.splitlines()]).astype(
        np.float64).tolist()
    actual = np.float32(xs).astype(np.float64).tolist()  # what the model was fed
    with np.load(state, allow_pickle=False) as z:
        acc = z["live.acc"][0]  # [6 sums, 3 forecasters, 1 target]
    decay = 0.5 ** (1 / 100)
    forecasts = {0: pred, 1: actual, 2: [math.nan] * 7 + actual}  # seasonal: the value 8 back
    for f, fc in forecasts.items():
        total = sq = ew_w = ew_a = 0.0
        n = 0
        for t in range(1, len(actual)):
            if math.isnan(fc[t - 1]):
                continue
            e = actual[t] - fc[t - 1]
            n, total, sq = n + 1, total + abs(e), sq + e * e
            ew_w, ew_a = ew_w * decay + 1.0, ew_a * decay + abs(e)
        assert acc[0, f, 0] == n
        assert acc[1, f, 0] / acc[0, f, 0] == total / n  # MAE, bit for bit
        assert acc[2, f, 0] / acc[0, f, 0] == sq / n  # MSE
        assert acc[4, f, 0] / acc[3, f, 0] == ew_a / ew_w  # recent MAE


def test_key_mode_prints_groups_per_target_and_resumes_exactly(model_file, tmp_path):
    path = model_file(cell="gru", features=2, targets=2, hidden=8, seed=3)[0]
    rng = np.random.default_rng(5)
    rows = [(k, *rng.normal(size=2).round(3)) for k in "ABAB" * 10 + "CAB"]
    lines = [f"{k},{a},{b}\n" for k, a, b in rows]
    head = "s,f0,f1\n"
    whole = _stream(path, head + "".join(lines), "--key", "s", "--coverage", "0.9")
    assert whole.returncode == 0, whole.stderr
    pool = StreamPool(path, auto_add=True, coverage=0.9)
    want = []
    for k, a, b in rows:
        y = pool.step_many([k], np.array([[a, b]], np.float32))[0]
        lo, hi = pool.interval([k])
        want.append(f"{k}," + _fmt([y[0], lo[0, 0], hi[0, 0], y[1], lo[0, 1], hi[0, 1]]))
    assert whole.stdout.splitlines() == want
    assert "live scores (3 streams" in whole.stderr
    state = str(tmp_path / "pool.npz")
    a = _stream(path, head + "".join(lines[:25]), "--key", "s", "--coverage", "0.9",
                "--state", state)
    b = _stream(path, head + "".join(lines[25:]), "--key", "s", "--coverage", "0.9",
                "--state", state)
    assert a.returncode == b.returncode == 0
    assert a.stdout + b.stdout == whole.stdout  # bands too: the calibration was saved


@pytest.mark.parametrize(("value", "message"), [
    ("1", "'1' is not a coverage strictly between 0 and 1"),
    ("x", "'x' is not a coverage"),
])
def test_bad_coverage_is_a_usage_error(lstm, value, message):
    out = _stream(lstm[0], "", "--coverage", value)
    assert out.returncode == 2
    assert message in out.stderr


def test_season_without_coverage_is_a_usage_error(lstm):
    out = _stream(lstm[0], "0.5\n", "--season", "4")
    assert out.returncode == 2
    assert "--season is for the live scores: give --coverage too" in out.stderr
    assert out.stdout == ""


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="SIGUSR1 is POSIX only")
def test_sigusr1_prints_the_summary_between_lines(lstm):
    proc = subprocess.Popen([sys.executable, "-m", "rnnstream.cli.main", "stream",
                             str(lstm[0]), "--coverage", "0.9"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    assert proc.stdout is not None
    for v in _series(12):
        proc.stdin.write(f"{v}\n")
    proc.stdin.flush()
    for _ in range(12):
        proc.stdout.readline()  # every line answered: the stream waits for input
    proc.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    proc.stdin.write("0.5\n")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert err.count("live scores (1 stream") == 2  # on request, and at the end
    # points scored: 11 of the first 12 on request, 12 of 13 at the end
    assert re.findall(r"^\s+f0\s+(\d+)\s", err, re.MULTILINE) == ["11", "12"]
