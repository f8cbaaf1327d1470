"""The fuzz harnesses (fuzz/harnesses.py): every seed of fuzz/corpus replayed (the findings kept
there stay fixed), then one short coverage-guided atheris run over all of them at once.

`make fuzz` is the long run (FUZZ_SECONDS per harness, default 300). Here the atheris run lasts
RNNSTREAM_FUZZ_SECONDS (default 8) for the seven harnesses together, to keep `make test`
short; set it to 140 for about 20 s per harness.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
sys.path.insert(0, str(FUZZ))

import harnesses  # noqa: E402

pytest.importorskip("httptools", reason="the serve harnesses need the 'serve' extra")


@pytest.mark.parametrize("name", sorted(n for n in harnesses.HARNESSES if n != "all"))
def test_every_seed_is_refused_or_accepted_with_a_typed_error(name):
    seeds = sorted((FUZZ / "corpus" / name).iterdir())
    assert seeds, f"no seed for {name}"
    for seed in seeds:
        harnesses.HARNESSES[name](seed.read_bytes())


@pytest.mark.slow
def test_a_short_coverage_guided_run_finds_nothing(tmp_path):
    pytest.importorskip("atheris", reason="pip install atheris (the test extra)")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, name in enumerate(harnesses.ORDER):  # the first byte picks the harness
        for seed in (FUZZ / "corpus" / name).iterdir():
            (corpus / f"{name}-{seed.name}").write_bytes(bytes([i]) + seed.read_bytes())
    seconds = int(os.environ.get("RNNSTREAM_FUZZ_SECONDS", "8"))
    out = subprocess.run([sys.executable, str(FUZZ / "run.py"), "all",
                          f"-max_total_time={seconds}", f"-artifact_prefix={tmp_path}/",
                          "-max_len=16384", str(corpus)],
                         capture_output=True, text=True, timeout=seconds + 300, check=False)
    findings = list(tmp_path.glob("crash-*")) + list(tmp_path.glob("timeout-*"))
    assert not findings, out.stderr[-4000:]
    assert out.returncode == 0, out.stderr[-4000:]
    assert "Done" in out.stderr
