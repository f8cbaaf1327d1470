"""`rnnstream demo` runs the whole chain and its figures are real numbers."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from rnnstream.cli.main import main


def test_demo_trains_exports_streams_and_plots(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "4", "--no-progress",
                 "--forecast", "10"]) == 0
    printed = capsys.readouterr().out
    for name in ("model.pt", "training.png", "model.onnx", "model.onnx.json", "streaming.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "streaming.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # parity at export and runtime-vs-torch while streaming are printed as figures under 1e-5
    parity = re.search(r"max \|diff\| = ([0-9.e+-]+)", printed)
    streamed = re.search(r"max \|runtime - torch full sequence\| = ([0-9.e+-]+)", printed)
    assert parity, printed
    assert streamed, printed
    assert float(parity.group(1)) <= 1e-5
    assert float(streamed.group(1)) <= 1e-5
    assert printed.rstrip().endswith("streaming.png")
    # the streamed 90 % intervals (calibrated online from the contract's validation widths)
    held = re.search(r"90% interval held ([0-9.]+)% of ([0-9]+) points", printed)
    assert held, printed
    share, scored = float(held.group(1)) / 100, int(held.group(2))
    assert scored == 398  # every held-out prediction whose value arrived
    sigma3 = 3 * math.sqrt(0.9 * 0.1 / scored)  # three binomial sigmas
    assert share >= 0.9 - sigma3  # never under-covers
    # The sine is exactly periodic, so the default ships exactly seasonal naive when no network
    # beats it (train's do-no-harm rule): its errors are float32 rounding (~1e-15), and a band
    # of any width holds them all. Over-coverage is only a fault when the errors are real.
    mae = float(re.search(r"live accuracy: MAE model ([0-9.e+-]+)", printed).group(1))
    if mae > 1e-6:
        assert share <= 0.9 + sigma3


def test_help_lists_every_command(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for command in ("train", "export", "stream", "inspect", "demo"):
        assert re.search(rf"^\s+{command}\s", text, re.M), command
