"""Bad requests: each answers the right status with a message saying what was expected, and
no sequence's state changes (a probe sequence continues exactly like its reference, which
never saw the bad requests)."""

from __future__ import annotations

import json
import re
import socket

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .conftest import LEGACY, Reference, get, infer_doc, post, same_bits

pytestmark = pytest.mark.serve

PROBE = 777


def _doc(**change):
    doc = infer_doc(np.array([[[0.25]]], np.float32), seq=PROBE)
    doc["inputs"][0].update(change)
    return doc


def _with_params(**params):
    doc = _doc()
    doc["parameters"].update(params)
    return doc


BIG = 16 << 20  # the server's default --max-request-bytes
CASES = [
    ("lstm", _doc(name="input"), 400, r"unknown input\(s\) \['input'\].*takes 'x'"),
    ("lstm", _doc(datatype="FP64"), 400, r"datatype 'FP64'; expected 'FP32'"),
    ("lstm", _doc(shape=[1, 1]), 400, r"shape \[1, 1\]; expected 3 dimensions"),
    ("lstm", _doc(shape=[1, 1, 2], data=[1.0, 2.0]), 400,
     r"shape \[1, 1, 2\]; expected \[sequences, time, 1\]"),
    ("lstm", _doc(shape=[1, 2, 1]), 400, r"1 values for shape \[1, 2, 1\], which holds 2"),
    ("lstm", _doc(data=["a"]), 400, r"'a' in 'data' is not a number"),
    ("lstm", _doc(data=[True]), 400, r"True in 'data' is not a number"),
    ("lstm", _doc(data=[float("nan")]), 400, r"x\[0, 0, 0\] is nan; expected finite"),
    ("lstm", _doc(data=[1e39]), 400, r"is inf; expected finite FP32"),
    ("nope", _doc(), 404, r"unknown model 'nope'; this server has \['lstm', 'multi'\]"),
    ("lstm/versions/2", _doc(), 404, r"no version '2'"),
    ("lstm", infer_doc(np.ones((1, 1, 1), np.float32), seq=31337), 400,
     r"sequence 31337 is not live \(never started.*sequence_start=true"),
    ("lstm", b'{"inputs": [', 400, r"not valid JSON"),
    ("lstm", b'[1, 2]', 400, r"expected a JSON object with an 'inputs' list"),
    ("lstm", {**_doc(), "outputs": [{"name": "z"}]}, 400, r"unknown output\(s\) \['z'\]"),
    ("lstm", _with_params(sequence_start="yes"), 400,
     r"'sequence_start' is 'yes'; expected true or false"),
    ("lstm", _with_params(sequence_id=-3), 400, r"expected an unsigned 64-bit integer"),
    ("lstm", {"inputs": _doc()["inputs"]}, 400, r"no sequence_id: this model keeps a state"),
    ("lstm", infer_doc(np.ones((2, 1, 1), np.float32), ids=[PROBE, PROBE]), 400,
     r"appears twice"),
    # atomic: PROBE is live, 4242 never started: neither steps
    ("lstm", infer_doc(np.ones((2, 1, 1), np.float32), ids=[PROBE, 4242]), 400,
     r"sequence 4242 is not live"),
    ("lstm", b"x" * (BIG + 1), 413, r"over 16777216 bytes \(--max-request-bytes\)"),
]


def test_bad_requests_refused_and_no_state_changes(server):
    ref = Reference(LEGACY)
    url = f"{server.url}/v2/models"
    x = np.array([[[0.5]]], np.float32)
    status, body = post(f"{url}/lstm/infer", infer_doc(x, seq=PROBE, start=True))
    assert status == 200, body
    ref.run([PROBE], x, start=True)
    for model, doc, want, pattern in CASES:
        status, body = post(f"{url}/{model}/infer", doc)
        assert status == want, (pattern, body)
        assert "error" in body
        assert re.search(pattern, body["error"]), body["error"]
    # binary data extension: a size past the end, and bytes nobody claims
    def head(size: int) -> bytes:
        return json.dumps({"parameters": {"sequence_id": PROBE}, "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 1, 1],
             "parameters": {"binary_data_size": size}}]}).encode()

    for body_bytes, size, length, message in (
        (4, 8, None, "binary_data_size 8 runs past the 4 binary bytes"),
        (8, 4, None, "4 binary bytes after the JSON header are not claimed"),
        (4, 4, "x", "Inference-Header-Content-Length 'x' is not a number"),
    ):
        h = head(size)
        status, body = post(f"{url}/lstm/infer", h + b"\0" * body_bytes,
                            {"Inference-Header-Content-Length": length or str(len(h))})
        assert status == 400
        assert message in body["error"]
    # paths and methods
    assert get(f"{server.url}/v2/nothing")[0] == 404
    assert post(f"{url}/lstm/ready", {})[0] == 405
    # gRPC: the same refusals, with gRPC codes
    client = grpcclient.InferenceServerClient(server.grpc_url)
    bad = grpcclient.InferInput("x", [1, 1, 2], "FP32")
    bad.set_data_from_numpy(np.ones((1, 1, 2), np.float32))
    with pytest.raises(InferenceServerException, match=r"INVALID_ARGUMENT.*expected \["):
        client.infer("lstm", [bad], sequence_id=PROBE)
    wrong = grpcclient.InferInput("x", [1, 1, 1], "INT32")
    wrong.set_data_from_numpy(np.ones((1, 1, 1), np.int32))
    with pytest.raises(InferenceServerException, match=r"INVALID_ARGUMENT.*'INT32'"):
        client.infer("lstm", [wrong], sequence_id=PROBE)
    client.close()
    # the probe goes on exactly as if nothing had happened
    x = np.array([[[0.75], [1.0]]], np.float32)
    status, body = post(f"{url}/lstm/infer", infer_doc(x, seq=PROBE))
    assert status == 200, body
    same_bits(np.array(body["outputs"][0]["data"]).reshape(1, 2, 1), ref.run([PROBE], x))


def test_malformed_http_closes_with_400(server):
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400")
    assert b"malformed HTTP request" in reply
