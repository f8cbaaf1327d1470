"""Cross-request batching: concurrent requests of different sequences share one pool step;
requests of one sequence apply in arrival order, a second waiting for the first. Answers stay
exactly StreamPool's (its results do not depend on which rows share a step)."""

from __future__ import annotations

import queue
import re

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from .conftest import LEGACY, Reference, get, same_bits, serving

pytestmark = pytest.mark.serve

SEQUENCES = 64
ROUNDS = 4
SAME = 12  # back-to-back requests of one sequence, all in flight together


def _histogram(text: str, name: str) -> tuple[float, float]:
    total = float(re.search(rf"^{name}_sum (\S+)$", text, re.M).group(1))
    count = float(re.search(rf"^{name}_count (\S+)$", text, re.M).group(1))
    return total, count


# every step on the step thread (1), on the event loop (0): the same answers, in the same order
STEP_THREAD = pytest.mark.parametrize("thread_rows", ["1", "0"])


@STEP_THREAD
def test_concurrent_sequences_share_steps_and_keep_order(thread_rows):
    # a long delay so that batching shows even on a loaded machine (the test asserts no timing)
    with serving([LEGACY], "--queue-delay-us", "20000", "--step-thread-rows",
                 thread_rows) as running:
        client = grpcclient.InferenceServerClient(running.grpc_url)
        answers: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        rng = np.random.default_rng(11)
        sent = []

        def send(seq, start, tag):
            x = rng.standard_normal((1, 1, 1)).astype(np.float32)
            inp = grpcclient.InferInput("x", [1, 1, 1], "FP32")
            inp.set_data_from_numpy(x)
            client.async_stream_infer("model", [inp], sequence_id=seq, sequence_start=start,
                                      request_id=tag)
            sent.append((tag, seq, x, start))

        for r in range(ROUNDS):
            for s in range(SEQUENCES):
                send(1000 + s, r == 0, f"{r}/{s}")
        for i in range(SAME):  # one sequence, many requests in flight at once
            send(5000, i == 0, f"same/{i}")
        got = {}
        for _ in range(len(sent)):
            result, error = answers.get(timeout=60)
            assert error is None, error
            got[result.get_response().id] = result.as_numpy("y")
        client.stop_stream()
        client.close()
        ref = Reference(LEGACY)
        for tag, seq, x, start in sent:  # per sequence, in the order sent
            same_bits(got[tag], ref.run([seq], x, start))
        text = get(f"{running.url}/metrics")[1].decode()
        steps_total, steps = _histogram(text, "rnnstream_serve_batch_size")
        single = float(re.search(r'^rnnstream_serve_batch_size_bucket\{le="1"\} (\S+)$', text,
                                 re.M).group(1))
        assert steps_total == len(sent)  # every point stepped once
        assert single < steps  # ... and some steps carried several sequences


@STEP_THREAD
def test_many_sequence_requests_and_single_ones_keep_each_sequence_in_order(thread_rows):
    """A many-sequence request, then single requests for its sequences, then another
    many-sequence request, all in flight at once: each sequence sees its points in order."""
    with serving([LEGACY], "--step-thread-rows", thread_rows) as running:
        client = grpcclient.InferenceServerClient(running.grpc_url)
        answers: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        rng = np.random.default_rng(12)
        ids = list(range(7001, 7009))
        sent = []

        def send(keys, tag, start=False):
            x = rng.standard_normal((len(keys), 2, 1)).astype(np.float32)
            inputs = [grpcclient.InferInput("x", list(x.shape), "FP32")]
            inputs[0].set_data_from_numpy(x)
            if len(keys) > 1:
                inputs.append(grpcclient.InferInput("sequence_id", [len(keys)], "INT64"))
                inputs[1].set_data_from_numpy(np.array(keys, np.int64))
                inputs.append(grpcclient.InferInput("sequence_start", [len(keys)], "BOOL"))
                inputs[2].set_data_from_numpy(np.full(len(keys), start))
                client.async_stream_infer("model", inputs, request_id=tag)
            else:
                client.async_stream_infer("model", inputs, sequence_id=keys[0],
                                          request_id=tag)
            sent.append((tag, keys, x, start))

        send(ids, "block-1", start=True)
        for k in ids[::2]:
            send([k], f"single-{k}")
        send(ids[::-1], "block-2")
        got = {}
        for _ in range(len(sent)):
            result, error = answers.get(timeout=60)
            assert error is None, error
            got[result.get_response().id] = result.as_numpy("y")
        client.stop_stream()
        client.close()
    ref = Reference(LEGACY)
    for tag, keys, x, start in sent:
        same_bits(got[tag], ref.run(keys, x, start))


def test_request_queued_behind_the_end_of_its_sequence_is_refused_at_its_turn():
    with serving([LEGACY], "--queue-delay-us", "50000") as running:  # both queue first
        client = grpcclient.InferenceServerClient(running.grpc_url)
        answers: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        inp = grpcclient.InferInput("x", [1, 1, 1], "FP32")
        inp.set_data_from_numpy(np.ones((1, 1, 1), np.float32))
        client.async_stream_infer("model", [inp], sequence_id=61, sequence_start=True,
                                  sequence_end=True, request_id="a")
        client.async_stream_infer("model", [inp], sequence_id=61, request_id="b")
        got = [answers.get(timeout=30) for _ in range(2)]
        client.stop_stream()
        client.close()
    assert got[0][1] is None
    assert got[0][0].get_response().id == "a"
    assert got[1][0] is None
    assert "sequence 61 was ended by an earlier request" in str(got[1][1])
