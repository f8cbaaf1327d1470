"""`rnnstream serve --coverage` on users' own modules (export_module): the lesson's RNN, its
LSTM variant and a traced (custom) model, in one server. KServe v2 over HTTP JSON and gRPC,
interleaved sequences and many sequences in one request: y, lower and upper are bit for bit a
local StreamPool(coverage=...)'s, y is Predictor's, and the intervals are finite from the first
point (the contract's calibration from the sample)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from lesson_models import BYOM, byom_model, sine

from rnnstream.runtime import Predictor

from .conftest import Reference, get, infer_doc, post, same_bits, serving

pytestmark = pytest.mark.serve

COVERAGE = 0.9
NAMES = sorted(BYOM)


@pytest.fixture(scope="module")
def byom_models(tmp_path_factory) -> dict:
    return {name: byom_model(name, tmp_path_factory) for name in NAMES}


@pytest.fixture(scope="module")
def byom_server(byom_models):
    with serving([byom_models[n] for n in NAMES], "--coverage", str(COVERAGE),
                 names=NAMES) as running:
        yield running


def _outputs(body: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"])
            for o in body["outputs"]}


def _check(got: dict[str, np.ndarray], ref: Reference, y: np.ndarray) -> None:
    assert list(got) == ["y", "lower", "upper"]
    same_bits(got["y"], y)
    same_bits(got["lower"], ref.lower)
    same_bits(got["upper"], ref.upper)


def _series(seed: int, n: int) -> np.ndarray:
    """n held-out points of the training sine, shifted a little per sequence: [n] float32."""
    return (sine(400 + n)[400:, 0] + 0.05 * seed).astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_http_two_sequences_equal_pool_and_predictor(byom_server, byom_models, name):
    """Two sequences interleaved, 1-3 points a request (priming), over plain JSON."""
    model = byom_models[name]
    ref = Reference(model, coverage=COVERAGE)
    url = f"{byom_server.url}/v2/models/{name}/infer"
    series = {"s-1": _series(0, 40), 2: _series(1, 40)}  # a string and an int id
    rng = np.random.default_rng(8)
    chunks = {seq: np.split(points, np.cumsum(rng.integers(1, 4, 20))[:-1])
              for seq, points in series.items()}  # 1-3 points a request
    chunks = {seq: [c for c in cs if len(c)] for seq, cs in chunks.items()}
    slots = [seq for seq, cs in chunks.items() for _ in cs]
    ys: dict = {seq: [] for seq in series}
    for seq in (slots[i] for i in rng.permutation(len(slots))):  # interleaved at random
        points = chunks[seq][len(ys[seq])]
        x = points.reshape(1, len(points), 1)
        start = not ys[seq]
        status, body = post(url, infer_doc(x, seq=seq, start=start))
        assert status == 200, body
        y = ref.run([seq], x, start)
        got = _outputs(body)
        _check(got, ref, y)
        if start:  # the sample's calibration: an interval from the first point
            assert np.isfinite(got["lower"]).all()
            assert (got["lower"] < got["upper"]).all()
        ys[seq].append(got["y"].reshape(-1))
    for seq, points in series.items():  # each sequence is the one stream Predictor runs
        p = Predictor(model)
        want = [p.step(float(v)) for v in points]
        np.testing.assert_allclose(np.concatenate(ys[seq]), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["lesson_rnn", "traced_skip"])
def test_many_sequences_in_one_request_and_grpc(byom_server, byom_models, name):
    """The lesson's module runs one stream a call; its export steps 3 sequences in one request.
    Then gRPC continues the same sequences, one a request."""
    model = byom_models[name]
    ref = Reference(model, coverage=COVERAGE)
    url = f"{byom_server.url}/v2/models/{name}/infer"
    ids = [11, 12, 13]
    x = np.stack([_series(i, 6) for i in range(3)]).reshape(3, 6, 1)
    status, body = post(url, infer_doc(x, ids=ids, start=True))
    assert status == 200, body
    _check(_outputs(body), ref, ref.run(ids, x, True))
    client = grpcclient.InferenceServerClient(byom_server.grpc_url)
    try:
        for i, seq in enumerate([12, 11, 13, 12]):
            x = (_series(i, 2) + 0.5).reshape(1, 2, 1)
            inp = grpcclient.InferInput("x", [1, 2, 1], "FP32")
            inp.set_data_from_numpy(x)
            r = client.infer(name, [inp], sequence_id=seq)
            y = ref.run([seq], x)
            _check({n: r.as_numpy(n) for n in ("y", "lower", "upper")}, ref, y)
    finally:
        client.close()


def test_metadata_of_each_model(byom_server):
    for name in NAMES:
        status, body = get(f"{byom_server.url}/v2/models/{name}")
        assert status == 200
        doc = json.loads(body)
        assert doc["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, -1, 1]}
        assert doc["outputs"] == [{"name": n, "datatype": "FP32", "shape": [-1, -1, 1]}
                                  for n in ("y", "lower", "upper")]
