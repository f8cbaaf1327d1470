"""HTTP/REST: tritonclient's HTTP client (binary outputs, its default, and JSON) and plain
urllib JSON drive interleaved sequences; every answer equals StreamPool's, bit for bit."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import tritonclient.http as httpclient

from .conftest import LEGACY, Reference, get, infer_doc, post, same_bits

pytestmark = pytest.mark.serve


def _client_infer(client, model, x, seq, start=False, end=False, binary=True):
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    outputs = None if binary else [httpclient.InferRequestedOutput("y", binary_data=False)]
    r = client.infer(model, [inp], sequence_id=seq, sequence_start=start, sequence_end=end,
                     outputs=outputs)
    return r.as_numpy("y")


def test_tritonclient_interleaved_sequences_match_pool(server):
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("lstm")
    meta = client.get_model_metadata("lstm")
    assert meta["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, -1, 1]}
    ref = Reference(LEGACY)
    rng = np.random.default_rng(1)
    seqs = [101, 102, "s-103"]  # int and string ids side by side
    started: set = set()
    for calls in range(60):
        seq = random.Random(calls).choice(seqs)
        t = int(rng.integers(1, 4))  # T > 1 primes several points in one request
        x = (rng.standard_normal((1, t, 1)) * 3).astype(np.float32)
        start = seq not in started
        end = (not start) and rng.random() < 0.1
        got = _client_infer(client, "lstm", x, seq, start, end, binary=calls % 2 == 0)
        same_bits(got, ref.run([seq], x, start, end))
        started.add(seq)
        if end:
            started.discard(seq)
    client.close()


def test_urllib_json_multi_feature_and_batched_request(server, multi_model):
    ref = Reference(multi_model)
    url = f"{server.url}/v2/models/multi/infer"
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 3, 3)).astype(np.float32)
    status, body = post(url, infer_doc(x, seq="one", start=True))
    assert status == 200, body
    out = body["outputs"][0]
    assert out["name"] == "y"
    assert out["datatype"] == "FP32"
    assert out["shape"] == [1, 3, 2]
    same_bits(np.array(out["data"], np.float32).reshape(1, 3, 2), ref.run(["one"], x, True))
    # many sequences in one request: the input sequence_id names each row
    ids = [7, 8, 9, 10]
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    status, body = post(url, infer_doc(x, start=True, ids=ids))
    assert status == 200, body
    same_bits(np.array(body["outputs"][0]["data"]).reshape(4, 2, 2), ref.run(ids, x, True))
    x = rng.standard_normal((3, 1, 3)).astype(np.float32)
    status, body = post(url, infer_doc(x, ids=[9, 7, 10]))
    assert status == 200, body
    same_bits(np.array(body["outputs"][0]["data"]).reshape(3, 1, 2), ref.run([9, 7, 10], x))
    names = ["p", "q"]
    x = rng.standard_normal((2, 1, 3)).astype(np.float32)
    status, body = post(url, infer_doc(x, start=True, ids=names))
    assert status == 200, body
    same_bits(np.array(body["outputs"][0]["data"]).reshape(2, 1, 2), ref.run(names, x, True))


def test_binary_request_body_by_hand(server):
    """The binary data extension without tritonclient: JSON header, then raw FP32 bytes."""
    x = np.array([[[1.5], [2.5]]], np.float32)
    head = json.dumps({"parameters": {"sequence_id": 555, "sequence_start": True},
                       "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2, 1],
                                   "parameters": {"binary_data_size": 8}}],
                       "outputs": [{"name": "y", "parameters": {"binary_data": False}}]}).encode()
    status, body = post(f"{server.url}/v2/models/lstm/infer", head + x.tobytes(),
                        {"Inference-Header-Content-Length": str(len(head))})
    assert status == 200, body
    same_bits(np.array(body["outputs"][0]["data"]).reshape(1, 2, 1),
              Reference(LEGACY).run([555], x, True))


def test_health_metadata_and_metrics(server):
    assert get(f"{server.url}/v2/health/live")[0] == 200
    assert get(f"{server.url}/v2/health/ready")[0] == 200
    status, body = get(f"{server.url}/v2")
    doc = json.loads(body)
    assert status == 200
    assert "sequence" in doc["extensions"]
    assert "binary_tensor_data" in doc["extensions"]
    assert get(f"{server.url}/v2/models/lstm/versions/1/ready")[0] == 200
    assert get(f"{server.url}/v2/models/nope/ready")[0] == 404
    status, body = get(f"{server.url}/v2/models/multi")
    assert json.loads(body)["outputs"] == [{"name": "y", "datatype": "FP32",
                                            "shape": [-1, -1, 2]}]
    post(f"{server.url}/v2/models/lstm/infer",
         infer_doc(np.ones((1, 1, 1), np.float32), seq=999, start=True))
    status, body = get(f"{server.url}/metrics")
    text = body.decode()
    assert status == 200
    for name in ("rnnstream_serve_requests_total", "rnnstream_serve_request_errors_total",
                 "rnnstream_serve_batch_size_bucket", "rnnstream_serve_queue_seconds_bucket",
                 "rnnstream_serve_step_seconds_bucket", "rnnstream_serve_live_sequences"):
        base = name.removesuffix("_bucket")
        assert f"# TYPE {base} " in text, name
    assert '# TYPE rnnstream_serve_step_seconds histogram' in text
    assert 'rnnstream_serve_requests_total{model="lstm",protocol="http"}' in text


def test_logs_are_json_lines_of_the_serve_logger(server):
    lines = [json.loads(line) for line in list(server.lines)]
    assert lines
    assert all(d["logger"] == "rnnstream.serve" for d in lines)
    assert any(d.get("event") == "serving" for d in lines)


def test_pipelined_requests_answer_in_order(server):
    """HTTP/1.1 pipelining: requests written back to back on one connection are answered in
    order, each sequence's points applied in order."""
    import socket

    rng = np.random.default_rng(13)
    xs = [rng.standard_normal((1, 1, 1)).astype(np.float32) for _ in range(4)]
    wire = b""
    for i, x in enumerate(xs):
        payload = json.dumps(infer_doc(x, seq=8800, start=i == 0)).encode()
        wire += (b"POST /v2/models/lstm/infer HTTP/1.1\r\nhost: t\r\ncontent-length: %d\r\n\r\n"
                 % len(payload)) + payload
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
        s.sendall(wire)
        data = b""
        while data.count(b"HTTP/1.1 200") < 4 or not data.endswith(b"}]}"):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    bodies = [json.loads(part[part.index(b"{"):]) for part in data.split(b"HTTP/1.1 ")[1:]]
    ref = Reference(LEGACY)
    for i, (x, body) in enumerate(zip(xs, bodies, strict=True)):
        same_bits(np.array(body["outputs"][0]["data"]).reshape(1, 1, 1),
                  ref.run([8800], x, start=i == 0))


def test_head_has_no_body_and_expect_100_continue_is_answered(server):
    import socket

    payload = json.dumps(infer_doc(np.full((1, 300, 1), 0.5, np.float32), seq=8900,
                                   start=True)).encode()
    assert len(payload) > 1024  # curl asks "Expect: 100-continue" above 1 KiB
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
        s.sendall(b"HEAD /v2 HTTP/1.1\r\nhost: t\r\n\r\n")
        head = s.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        assert head.endswith(b"\r\n\r\n")  # headers only
        s.sendall(b"POST /v2/models/lstm/infer HTTP/1.1\r\nhost: t\r\nexpect: 100-continue\r\n"
                  b"content-length: %d\r\n\r\n" % len(payload))
        assert s.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(payload)
        reply = b""
        while not reply.endswith(b"]}]}"):
            chunk = s.recv(65536)
            assert chunk, reply
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 200")
