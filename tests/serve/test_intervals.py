"""`rnnstream serve --coverage`: outputs `lower`/`upper` beside `y` over HTTP JSON, HTTP binary
and gRPC, bit for bit a local StreamPool(coverage=...)'s interval after every point (priming
requests and many-sequence requests included); metadata; output selection; refused requests
change nothing; /metrics equals the pool's live scores. Without --coverage nothing changes,
byte for byte."""

from __future__ import annotations

import json
import queue
import re

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from .conftest import LEGACY, Reference, get, infer_doc, post, same_bits, serving

pytestmark = pytest.mark.serve

COVERAGE = 0.9
BOUNDS = ("lower", "upper")


@pytest.fixture(scope="module")
def cov_server(multi_model):
    with serving([LEGACY, multi_model], "--coverage", str(COVERAGE),
                 names=["lstm", "multi"]) as running:
        yield running


def _outputs(body: dict) -> dict[str, np.ndarray]:
    return {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"])
            for o in body["outputs"]}


def _check(got: dict[str, np.ndarray], ref: Reference, y: np.ndarray) -> None:
    assert list(got) == ["y", "lower", "upper"]
    same_bits(got["y"], y)
    same_bits(got["lower"], ref.lower)
    same_bits(got["upper"], ref.upper)


def test_http_json_binary_and_grpc_intervals_match_pool(cov_server, multi_model):
    """Three sequences of the one-target model, interleaved, over the three encodings; 1-4
    points a request (priming); long enough that the intervals calibrate (infinite before:
    these models store no validation quantiles)."""
    ref = Reference(LEGACY, coverage=COVERAGE)
    rng = np.random.default_rng(21)
    http = httpclient.InferenceServerClient(f"127.0.0.1:{cov_server.http_port}")
    grpc = grpcclient.InferenceServerClient(cov_server.grpc_url)
    url = f"{cov_server.url}/v2/models/lstm/infer"
    started: set = set()
    for call in range(24):
        seq = (31, "thirty-two", 33)[call % 3]
        x = (rng.standard_normal((1, int(rng.integers(1, 5)), 1)) * 2).astype(np.float32)
        start = seq not in started
        started.add(seq)
        y = ref.run([seq], x, start)
        how = call % 4
        if how == 0:  # plain JSON
            status, body = post(url, infer_doc(x, seq=seq, start=start))
            assert status == 200, body
            _check(_outputs(body), ref, y)
        elif how in (1, 2):  # tritonclient HTTP, binary outputs (its default) or JSON
            inp = httpclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=how == 1)
            asked = None if how == 1 else [httpclient.InferRequestedOutput(n, binary_data=False)
                                           for n in ("y", *BOUNDS)]
            r = http.infer("lstm", [inp], sequence_id=seq, sequence_start=start, outputs=asked)
            _check({n: r.as_numpy(n) for n in ("y", *BOUNDS)}, ref, y)
        else:  # gRPC
            inp = grpcclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            r = grpc.infer("lstm", [inp], sequence_id=seq, sequence_start=start)
            assert [o.name for o in r.get_response().outputs] == ["y", *BOUNDS]
            _check({n: r.as_numpy(n) for n in ("y", *BOUNDS)}, ref, y)
    assert np.isfinite(ref.lower).all()
    assert np.isfinite(ref.upper).all()
    assert (ref.lower < ref.upper).all()
    http.close()
    grpc.close()


def test_many_sequences_in_one_request_and_output_selection(cov_server, multi_model):
    """Two targets, four sequences a request (one block stepped whole), priming 6 points at
    once; then `outputs` picks some, in the order asked, over HTTP and gRPC."""
    ref = Reference(multi_model, coverage=COVERAGE)
    url = f"{cov_server.url}/v2/models/multi/infer"
    rng = np.random.default_rng(22)
    ids = [41, 42, 43, 44]
    for call in range(3):
        x = rng.standard_normal((4, 6, 3)).astype(np.float32)
        status, body = post(url, infer_doc(x, ids=ids, start=call == 0))
        assert status == 200, body
        y = ref.run(ids, x, call == 0)
        got = _outputs(body)
        assert got["y"].shape == got["lower"].shape == (4, 6, 2)
        _check(got, ref, y)
    assert np.isfinite(ref.lower[:, -1]).all()
    x = rng.standard_normal((2, 1, 3)).astype(np.float32)
    doc = {**infer_doc(x, ids=[42, 44]), "outputs": [{"name": "upper"}, {"name": "y"}]}
    status, body = post(url, doc)
    assert status == 200, body
    y = ref.run([42, 44], x)
    assert [o["name"] for o in body["outputs"]] == ["upper", "y"]
    same_bits(_outputs(body)["upper"], ref.upper)
    same_bits(_outputs(body)["y"], y)
    client = grpcclient.InferenceServerClient(cov_server.grpc_url)
    inp = grpcclient.InferInput("x", [1, 1, 3], "FP32")
    inp.set_data_from_numpy(x[:1])
    r = client.infer("multi", [inp], sequence_id=42,
                     outputs=[grpcclient.InferRequestedOutput("lower")])
    y = ref.run([42], x[:1])
    assert [o.name for o in r.get_response().outputs] == ["lower"]
    same_bits(r.as_numpy("lower"), ref.lower)
    answers: queue.Queue = queue.Queue()  # the streaming front end selects the same way
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    for asked in (None, ["upper", "y"]):
        client.async_stream_infer("multi", [inp], sequence_id=42, outputs=None if asked is None
                                  else [grpcclient.InferRequestedOutput(n) for n in asked])
        result, error = answers.get(timeout=30)
        assert error is None
        y = ref.run([42], x[:1])
        names = [o.name for o in result.get_response().outputs]
        assert names == (asked or ["y", *BOUNDS])
        same_bits(result.as_numpy("y"), y)
        same_bits(result.as_numpy("upper"), ref.upper)
    client.stop_stream()
    client.close()


def test_metadata_lists_the_interval_outputs(cov_server):
    status, body = get(f"{cov_server.url}/v2/models/multi")
    assert status == 200
    assert json.loads(body)["outputs"] == [
        {"name": n, "datatype": "FP32", "shape": [-1, -1, 2]} for n in ("y", *BOUNDS)]
    client = grpcclient.InferenceServerClient(cov_server.grpc_url)
    meta = client.get_model_metadata("lstm")
    assert [(o.name, o.datatype, list(o.shape)) for o in meta.outputs] == [
        (n, "FP32", [-1, -1, 1]) for n in ("y", *BOUNDS)]
    client.close()


def test_refused_requests_change_nothing(cov_server):
    """A bad output name, or a non-finite point, for a live sequence: 400 and the next good
    request answers what an uninterrupted pool gives (values, intervals and live scores)."""
    ref = Reference(LEGACY, coverage=COVERAGE)
    url = f"{cov_server.url}/v2/models/lstm/infer"
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(1, 12, 1)
    status, body = post(url, infer_doc(x, seq="probe", start=True))
    assert status == 200, body
    ref.run(["probe"], x, True)
    bad = {**infer_doc(x[:, :2], seq="probe"), "outputs": [{"name": "lower"}, {"name": "z"}]}
    status, body = post(url, bad)
    assert status == 400
    assert "unknown output(s) ['z']; this model has ['y', 'lower', 'upper']" in body["error"]
    nan = x[:, :2].copy()
    nan[0, 1, 0] = np.nan
    status, body = post(url, infer_doc(nan, seq="probe"))
    assert status == 400
    status, body = post(url, infer_doc(x[:, :3], seq="probe"))
    assert status == 200, body
    _check(_outputs(body), ref, ref.run(["probe"], x[:, :3]))


def _samples(text: str, model: str) -> dict[tuple[str, ...], float]:
    """name + label values -> value, for the samples of ``model`` in a /metrics page."""
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(rf'rnnstream_serve_(\w+)\{{model="{model}"(.*)\}} (\S+)', line)
        if m:
            labels = tuple(re.findall(r'="([^"]*)"', m.group(2)))
            out[(m.group(1), *labels)] = float(m.group(3))
    return out


def test_metrics_equal_the_pools_live_scores(multi_model):
    """A server of its own, so that its live sequences are exactly the reference's."""
    ref = Reference(multi_model, coverage=COVERAGE)
    rng = np.random.default_rng(23)
    ids = [51, 52, 53]
    with serving([multi_model], "--coverage", str(COVERAGE), names=["m"]) as running:
        url = f"{running.url}/v2/models/m/infer"
        status, text = get(f"{running.url}/metrics")
        got = _samples(text.decode(), "m")  # nothing scored yet
        assert got[("live_scored_points", "a")] == 0
        assert np.isnan(got[("interval_coverage", "b")])
        for call in range(4):
            x = (rng.standard_normal((3, 5, 3)) * 3).astype(np.float32)
            assert post(url, infer_doc(x, ids=ids, start=call == 0))[0] == 200
            ref.run(ids, x, call == 0)
        x = rng.standard_normal((1, 2, 3)).astype(np.float32)  # one sequence ends: not counted
        assert post(url, infer_doc(x, seq=53, end=True))[0] == 200
        ref.run([53], x, end=True)
        status, text = get(f"{running.url}/metrics")
    assert status == 200
    got = _samples(text.decode(), "m")
    acc = ref.pool.accuracy(ids[:2])
    share, scored = ref.pool.realised_coverage(ids[:2])
    eps = 2 * np.finfo(np.float64).eps  # a sum of two terms and a division, in float64
    assert got[("interval_coverage_asked",)] == COVERAGE
    for j, target in enumerate(["a", "b"]):
        count = acc["model"]["count"][:, j]
        assert got[("live_scored_points", target)] == count.sum() > 0
        mae = {}
        for f in ("model", "persistence"):
            total = sum(float(m) * int(c) for m, c in zip(acc[f]["mae"][:, j],
                                                          acc[f]["count"][:, j], strict=True))
            mae[f] = total / acc[f]["count"][:, j].sum()
            assert got[("live_mae", target, f)] == pytest.approx(mae[f], rel=eps)
        assert got[("live_mae_ratio", target)] == pytest.approx(mae["model"] / mae["persistence"],
                                                                rel=2 * eps)
        assert got[("interval_scored", target)] == scored[:, j].sum() > 0
        hits = sum(float(s) * int(n) for s, n in zip(share[:, j], scored[:, j], strict=True))
        assert got[("interval_coverage", target)] == pytest.approx(hits / scored[:, j].sum(),
                                                                   rel=eps)


# -- without --coverage ---------------------------------------------------------------------------
def test_without_coverage_answers_are_unchanged_byte_for_byte(server):
    """`server` runs without --coverage: its body is exactly the one-output body of before,
    and asking for the interval says how to get it."""
    ref = Reference(LEGACY)
    x = np.array([[[0.25], [-0.5]]], np.float32)
    y = ref.run(["plain"], x, True)
    body = json.dumps({**infer_doc(x, seq="plain", start=True), "id": "r1"}).encode()
    status, raw = _post_raw(f"{server.url}/v2/models/lstm/infer", body)
    assert status == 200
    assert raw == json.dumps({"model_name": "lstm", "model_version": "1", "outputs": [
        {"name": "y", "datatype": "FP32", "shape": [1, 2, 1], "data": y.reshape(-1).tolist()}],
        "id": "r1"}, separators=(",", ":")).encode()
    status, raw = get(f"{server.url}/v2/models/lstm")
    assert raw == json.dumps({
        "name": "lstm", "versions": ["1"], "platform": "rnnstream_onnx",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1, 1]},
                   {"name": "sequence_id", "datatype": "INT64", "shape": [-1], "optional": True},
                   {"name": "sequence_start", "datatype": "BOOL", "shape": [-1],
                    "optional": True},
                   {"name": "sequence_end", "datatype": "BOOL", "shape": [-1], "optional": True}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, -1, 1]}]}).encode()
    doc = {**infer_doc(x, seq="plain"), "outputs": [{"name": "lower"}]}
    status, err = post(f"{server.url}/v2/models/lstm/infer", doc)
    assert status == 400
    assert "start the server with --coverage" in err["error"]
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inp = grpcclient.InferInput("x", [1, 2, 1], "FP32")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException,
                       match=r"INVALID_ARGUMENT.*start the server with --coverage"):
        client.infer("lstm", [inp], sequence_id="plain",
                     outputs=[grpcclient.InferRequestedOutput("upper")])
    r = client.infer("lstm", [inp], sequence_id="plain")  # the refusals changed nothing
    assert [o.name for o in r.get_response().outputs] == ["y"]
    same_bits(r.as_numpy("y"), ref.run(["plain"], x))
    client.close()
    status, text = get(f"{server.url}/metrics")
    assert b"rnnstream_serve_interval_coverage" not in text


def _post_raw(url: str, body: bytes) -> tuple[int, bytes]:
    import urllib.request

    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
        return r.status, r.read()
