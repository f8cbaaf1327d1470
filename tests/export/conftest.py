"""Figures of the export tests: the parity space prints one line per exported model.

``PARITY_FIGURES`` (test id -> figures) is filled by tests/export/test_parity_space.py and printed
at the end of the run; when ``RNNSTREAM_PARITY_FIGURES`` names a file it is also written there
as JSON (docs/api.md's parity table quotes it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

PARITY_FIGURES: dict[str, dict] = {}


@pytest.fixture
def parity_figures() -> dict[str, dict]:
    """Where a test records its model's figures (printed at the end of the run)."""
    return PARITY_FIGURES


def pytest_terminal_summary(terminalreporter) -> None:
    if not PARITY_FIGURES:
        return
    terminalreporter.section("parity figures (onnxruntime and torch float32 vs torch float64)")
    for test, f in PARITY_FIGURES.items():
        terminalreporter.write_line(
            f"{test}: ort {f['ort']:.3g}, torch {f['torch']:.3g}, bound {f['bound']:.3g} "
            f"({f['used']:.0%} used), |c|max {f['c_max']:.3g}, {f['seconds']:.1f} s")
    target = os.environ.get("RNNSTREAM_PARITY_FIGURES")
    if target:
        Path(target).write_text(json.dumps(PARITY_FIGURES, indent=2, sort_keys=True) + "\n")
