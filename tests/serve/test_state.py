"""State that survives: idle eviction answers a clear error, the sequence limit answers 429 /
RESOURCE_EXHAUSTED, and a server stopped with SIGTERM (or killed after a periodic snapshot)
and restarted continues every sequence exactly like an uninterrupted StreamPool."""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .conftest import LEGACY, Reference, infer_doc, post, same_bits, serving

pytestmark = pytest.mark.serve


def _infer(running, x, **kw):
    status, body = post(f"{running.url}/v2/models/model/infer", infer_doc(x, **kw))
    if status != 200:
        return status, body
    return status, np.array(body["outputs"][0]["data"], np.float32).reshape(x.shape)


def _infer_all(running, x, **kw):
    """Every output of the answer (y, and lower/upper with --coverage), name -> array."""
    status, body = post(f"{running.url}/v2/models/model/infer", infer_doc(x, **kw))
    assert status == 200, body
    return {o["name"]: np.array(o["data"], np.float32).reshape(x.shape)
            for o in body["outputs"]}


def test_eviction_and_sequence_limit():
    one = np.ones((1, 1, 1), np.float32)
    # an idle limit long enough that a loaded machine never evicts between two requests below
    with serving([LEGACY], "--idle-timeout", "3", "--max-sequences", "2") as running:
        assert _infer(running, one, seq=1, start=True)[0] == 200
        time.sleep(4.5)  # > idle-timeout + one sweep period
        status, body = _infer(running, one, seq=1)
        assert status == 400
        assert "sequence 1 was evicted after 3 s without requests" in body["error"]
        assert "sequence_start=true" in body["error"]
        # starting it again gives a fresh state, like any new sequence
        status, y = _infer(running, one, seq=1, start=True)
        same_bits(y, Reference(LEGACY).run([1], one, start=True))
        assert _infer(running, one, seq=2, start=True)[0] == 200
        status, body = _infer(running, one, seq=3, start=True)
        assert status == 429
        assert "would exceed --max-sequences 2" in body["error"]
        client = grpcclient.InferenceServerClient(running.grpc_url)
        inp = grpcclient.InferInput("x", [1, 1, 1], "FP32")
        inp.set_data_from_numpy(one)
        with pytest.raises(InferenceServerException, match="RESOURCE_EXHAUSTED"):
            client.infer("model", [inp], sequence_id=3, sequence_start=True)
        # the live ones were not dropped; ending one makes room
        assert _infer(running, one, seq=2)[0] == 200
        assert _infer(running, one, seq=2, end=True)[0] == 200
        assert client.infer("model", [inp], sequence_id=3, sequence_start=True) is not None
        client.close()


SEQS = [11, "twelve", 13]


def _drive(running, ref, rng, rounds, first, points=3):
    for r in range(rounds):
        for seq in SEQS:
            x = rng.standard_normal((1, int(rng.integers(1, points)), 1)).astype(np.float32)
            start = first and r == 0
            got = _infer_all(running, x, seq=seq, start=start)
            same_bits(got["y"], ref.run([seq], x, start=start))
            if ref.lower is not None:  # --coverage: the intervals continue exactly too
                assert list(got) == ["y", "lower", "upper"]
                same_bits(got["lower"], ref.lower)
                same_bits(got["upper"], ref.upper)


@pytest.mark.parametrize(("stop", "coverage"), [("sigterm", None),
                                           ("sigkill-after-periodic-save", None),
                                           ("sigterm", 0.9)])
def test_restart_continues_every_sequence_exactly(tmp_path, stop, coverage):
    state = tmp_path / "sequences.npz"
    ref = Reference(LEGACY, coverage)  # the uninterrupted run
    rng = np.random.default_rng(9)
    every = "0" if stop == "sigterm" else "0.2"
    flags = ["--state", str(state), "--save-every", every]
    # with coverage, enough points before the stop that the intervals are calibrated (finite;
    # this model stores no validation quantiles), so the restart carries the calibration
    points = 3 if coverage is None else 6
    if coverage is not None:
        flags += ["--coverage", str(coverage)]
    with serving([LEGACY], *flags) as running:
        _drive(running, ref, rng, 4, first=True, points=points)
        if coverage is not None:
            assert np.isfinite(ref.lower).all()
        if stop == "sigterm":
            assert running.stop(signal.SIGTERM) == 0
            events = [json.loads(line).get("event") for line in running.lines]
            assert events[-3:] == ["stopping", "saved", "stopped"]
        else:
            time.sleep(1.0)  # several periodic saves, no request since
            running.stop(signal.SIGKILL)
    assert state.exists()
    with serving([LEGACY], *flags) as running:
        restored = [json.loads(line) for line in running.lines]
        assert any(d.get("event") == "restored" and d["sequences"] == 3 for d in restored)
        _drive(running, ref, rng, 3, first=False, points=points)
