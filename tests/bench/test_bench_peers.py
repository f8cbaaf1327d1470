"""bench/bench_peers.py: its measuring helpers, and a short run against the peers when their
environment (.venv-peers, made by the benchmark on first use) is there. Nothing here installs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "bench_peers.py"


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("bench_peers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_agreement_counts_float32_ulps_across_zero(peers):
    ref = np.array([1.0, -0.0, 0.0, -2.5], np.float32)
    assert peers.agreement(ref.copy(), ref) == (0, 0.0)
    one_up = np.nextafter(ref, np.float32(np.inf))
    assert peers.agreement(one_up, ref)[0] == 1
    # the smallest positive and negative subnormals are 2 ulps apart (through +0 and -0 as one)
    tiny = np.array([np.nextafter(np.float32(0), np.float32(1))], np.float32)
    assert peers.agreement(tiny, -tiny)[0] == 2


def test_tree_cpu_counts_a_child_process(peers):
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        own = peers.tree_cpu(child.pid)
        tree = peers.tree_cpu(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert own > 0.05  # a busy loop for 0.5 s, on however loaded a machine
    assert tree >= own


def test_missing_peers_environment_is_reported_not_installed(peers, tmp_path):
    with pytest.raises(peers.Unavailable, match=r"absent or incomplete.*--no-install"):
        peers.peers_python(tmp_path / "no-venv", install=False)
    assert not (tmp_path / "no-venv").exists()


def test_requests_carry_the_id_or_the_state(peers):
    server = peers.Server("x", None, 0, 0, True, Path("log"))
    doc = json.loads(peers.Sequence(server, 7).http_body(0.1))
    assert doc["parameters"] == {"sequence_id": 7, "sequence_start": True}
    assert [i["name"] for i in doc["inputs"]] == ["x"]
    assert np.float32(doc["inputs"][0]["data"][0]) == np.float32(0.1)
    stateless = peers.Sequence(peers.Server("y", None, 0, 0, False, Path("log")), 7)
    doc = json.loads(stateless.http_body(0.1))
    assert "parameters" not in doc
    assert [i["name"] for i in doc["inputs"]] == ["x", "h_in", "c_in"]
    h = np.arange(peers.HIDDEN, dtype=np.float32) / 3  # values that need all 9 digits
    answer = {"outputs": [{"name": "y", "data": [0.5]},
                          {"name": "h_out", "data": h.tolist()},
                          {"name": "c_out", "data": (-h).tolist()}]}
    assert stateless.http_answer(json.dumps(answer).encode()) == 0.5
    sent = json.loads(stateless.http_body(0.2))["inputs"]
    np.testing.assert_array_equal(np.asarray(sent[1]["data"], np.float32), h)  # bit for bit
    np.testing.assert_array_equal(np.asarray(sent[2]["data"], np.float32), -h)


@pytest.mark.slow
@pytest.mark.serve
@pytest.mark.skipif(not (ROOT / ".venv-peers" / "bin" / "python").exists(),
                    reason=".venv-peers is absent (bench/bench_peers.py makes it on first use)")
def test_short_run_against_both_peers(tmp_path):
    out = tmp_path / "peers.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--rounds", "1", "--points",
                          "50", "--seconds", "0.5", "--no-install", "--json", str(out)],
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["status"] == {}, res["status"]
    assert set(res["median"]) == {"rnnstream", "mlserver", "pytriton"}
    for name, figures in res["median"].items():
        assert figures["http_rate"] > 0, name
        assert figures["grpc_rate"] > 0, name
    # the same graph, the same onnxruntime, one row per call: the same bits in all three
    for name, by_proto in res["agreement"].items():
        for proto, a in by_proto.items():
            assert a["max_ulps"] == 0, (name, proto, a)
    assert "PyTriton" in run.stdout
    assert "MLServer" in run.stdout
