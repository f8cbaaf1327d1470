"""gRPC: tritonclient's gRPC client, unary and bidirectional streaming (start_stream /
async_stream_infer), interleaved sequences; answers equal StreamPool's bit for bit."""

from __future__ import annotations

import queue

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .conftest import LEGACY, Reference, same_bits

pytestmark = pytest.mark.serve


def _input(x: np.ndarray) -> grpcclient.InferInput:
    inp = grpcclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def test_unary_interleaved_sequences_match_pool(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("multi")
    assert not client.is_model_ready("nope")
    meta = client.get_model_metadata("multi")
    assert [i.name for i in meta.inputs] == ["x", "sequence_id", "sequence_start", "sequence_end"]
    assert "sequence" in client.get_server_metadata().extensions
    ref = Reference(LEGACY)
    rng = np.random.default_rng(3)
    order = [201, "g-202", 201, 203, "g-202", 203, 201, 201, "g-202"]
    started = set()
    for seq in order:
        x = (rng.standard_normal((1, int(rng.integers(1, 3)), 1)) * 2).astype(np.float32)
        start = seq not in started
        started.add(seq)
        got = client.infer("lstm", [_input(x)], sequence_id=seq, sequence_start=start)
        same_bits(got.as_numpy("y"), ref.run([seq], x, start))
    client.close()


def test_stream_infer_interleaved_in_order_with_errors_inline(server, multi_model):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    ref = Reference(multi_model)
    rng = np.random.default_rng(4)
    sent = []
    for i in range(40):
        seq = 300 + i % 5
        x = rng.standard_normal((1, 1, 3)).astype(np.float32)
        start = i < 5
        client.async_stream_infer("multi", [_input(x)], sequence_id=seq, sequence_start=start,
                                  request_id=str(i))
        sent.append((seq, x, start))
        if i == 20:  # a refused request answers with an error and the stream goes on
            client.async_stream_infer("multi", [_input(x)], sequence_id=99999,
                                      request_id="bad")
    got = {}
    errors = []
    for _ in range(41):
        result, error = answers.get(timeout=30)
        if error is not None:
            errors.append(str(error))
        else:
            got[result.get_response().id] = result.as_numpy("y")
    client.stop_stream()
    client.close()
    assert len(errors) == 1
    assert "99999" in errors[0]
    assert "sequence_start" in errors[0]
    for i, (seq, x, start) in enumerate(sent):
        same_bits(got[str(i)], ref.run([seq], x, start))


def _flags(name: str, values: list[bool]) -> grpcclient.InferInput:
    inp = grpcclient.InferInput(name, [len(values)], "BOOL")
    inp.set_data_from_numpy(np.array(values, bool))
    return inp


def test_grpc_batched_request_with_per_row_ids_and_flags(server, multi_model):
    """Many sequences in one request: INT64 input sequence_id, BOOL sequence_start/_end."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    ref = Reference(multi_model)
    rng = np.random.default_rng(5)
    ids = np.array([41, 42, 43], np.int64)
    id_in = grpcclient.InferInput("sequence_id", [3], "INT64")
    id_in.set_data_from_numpy(ids)
    x = rng.standard_normal((3, 2, 3)).astype(np.float32)
    got = client.infer("multi", [_input(x), id_in, _flags("sequence_start", [True] * 3)])
    same_bits(got.as_numpy("y"), ref.run(ids.tolist(), x, start=True))
    x = rng.standard_normal((3, 1, 3)).astype(np.float32)
    got = client.infer("multi", [_input(x), id_in, _flags("sequence_end", [False, True, False])])
    want = ref.run(ids.tolist(), x)
    ref.pool.remove(42)
    same_bits(got.as_numpy("y"), want)
    with pytest.raises(InferenceServerException, match="sequence 42 is not live"):
        client.infer("multi", [_input(x), id_in])
    client.close()


def test_grpc_status_codes(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    x = np.zeros((1, 1, 1), np.float32)
    with pytest.raises(InferenceServerException, match=r"FAILED_PRECONDITION.*never started"):
        client.infer("lstm", [_input(x)], sequence_id=424242)
    with pytest.raises(InferenceServerException, match=r"NOT_FOUND.*unknown model 'nope'"):
        client.infer("nope", [_input(x)], sequence_id=1, sequence_start=True)
    bad = np.zeros((1, 1, 2), np.float32)
    with pytest.raises(InferenceServerException,
                       match=r"INVALID_ARGUMENT.*shape \[1, 1, 2\]; expected \[sequences, "
                             r"time, 1\]"):
        client.infer("lstm", [_input(bad)], sequence_id=1, sequence_start=True)
    client.close()
