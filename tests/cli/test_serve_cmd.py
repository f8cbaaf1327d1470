"""`rnnstream serve` on an address beyond loopback without --token-file: warned once.

The server logs the warning when it starts (event "exposed"); the command line does not print
it again. No front end is opened (--http-port -1 --grpc-port -1), so the test listens nowhere."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("httptools", reason="rnnstream serve needs: pip install 'rnnstream[serve]'")

LEGACY = Path(__file__).parent.parent / "data" / "legacy_v0_1_0" / "model.onnx"
TIMEOUT_S = 60
EVERYWHERE = "0.0.0.0"  # noqa: S104 (the address warned about; no front end listens on it)


def serve_stderr(*args: str) -> list[str]:
    """Every stderr line of `rnnstream serve LEGACY *args`, started, then stopped by SIGTERM."""
    argv = [sys.executable, "-m", "rnnstream.cli.main", "serve", str(LEGACY),
            "--http-port", "-1", "--grpc-port", "-1", *args]
    lines = []
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append(line)
                if '"event": "serving"' in line:
                    proc.send_signal(signal.SIGTERM)
            # the handlers are installed before start() logs "serving": a clean stop
            assert proc.wait(TIMEOUT_S) == 0, "".join(lines)
        finally:
            if proc.poll() is None:
                proc.kill()
    return lines


def test_the_exposure_warning_is_said_once() -> None:
    lines = serve_stderr("--host", EVERYWHERE)
    said = [line for line in lines if "without --token-file" in line]
    assert len(said) == 1, "".join(lines)
    doc = json.loads(said[0])
    assert (doc["event"], doc["level"], doc["host"]) == ("exposed", "warning", EVERYWHERE)


def test_no_exposure_warning_on_loopback() -> None:
    lines = serve_stderr("--host", "127.0.0.1")
    assert not [line for line in lines if "without --token-file" in line], "".join(lines)


def test_limits_max_idle_seconds_reads_and_sets_idle_timeout_s_with_a_warning() -> None:
    """The deprecated attribute stands for idle_timeout_s (it read back as the sentinel that
    marks the keyword as not given); dataclasses.replace neither warns nor undoes a change."""
    import dataclasses
    import warnings

    from rnnstream.serve.sequences import Limits

    limits = Limits(idle_timeout_s=42.0)
    with pytest.warns(DeprecationWarning, match=r"read Limits\.idle_timeout_s") as caught:
        assert limits.max_idle_seconds == 42.0
    assert caught[0].filename == __file__  # the warning points at the caller
    with pytest.warns(DeprecationWarning, match=r"set Limits\.idle_timeout_s"):
        limits.max_idle_seconds = None
    assert limits.idle_timeout_s is None
    with pytest.warns(DeprecationWarning, match=r"use Limits\(idle_timeout_s=\.\.\.\)"):
        assert Limits(max_idle_seconds=9.0).idle_timeout_s == 9.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning without the old name
        assert Limits().idle_timeout_s == 3600.0
        changed = dataclasses.replace(Limits(idle_timeout_s=1.0), idle_timeout_s=5.0)
        assert changed == Limits(idle_timeout_s=5.0)
