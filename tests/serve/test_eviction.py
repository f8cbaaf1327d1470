"""Idle eviction in ModelService, on an injected clock: who counts as idle, who is spared, what
is remembered, logged and counted, and what a restart restores (StreamPool keeps the clock)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("httptools", reason="rnnstream serve needs the 'serve' extra")

from rnnstream.serve.errors import ServeError
from rnnstream.serve.metrics import Metrics
from rnnstream.serve.sequences import Infer, Limits, ModelService

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy_v0_1_0" / "model.onnx"
IDLE = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _request(keys, start=False, t=1, end=False):
    keys = list(keys)
    return Infer(x=np.full((len(keys), t, 1), 0.5, np.float32), keys=keys,
                 starts=[start] * len(keys), ends=[end] * len(keys))


def _service(clock: Clock, metrics: Metrics | None = None) -> ModelService:
    return ModelService("m", str(LEGACY), Limits(idle_timeout_s=IDLE, step_thread_rows=0),
                        metrics or Metrics(), clock=clock)


def _evicted_total(metrics: Metrics) -> str:
    return next(line for line in metrics.sequences_evicted.lines() if "model=" in line)


def test_idle_sequences_go_and_their_ids_answer_evicted():
    clock, metrics = Clock(), Metrics()

    async def main():
        s = _service(clock, metrics)
        await s.submit(_request(["a"], start=True))
        await s.submit(_request(["b"], start=True))
        clock.now += 6
        await s.submit(_request(["b"]))
        clock.now += 4.5  # a idle 10.5 s, b 4.5 s
        assert s.evict_idle() == ["a"]
        assert s.pool.keys() == ["b"]
        assert _evicted_total(metrics).endswith(" 1")
        with pytest.raises(ServeError, match="sequence 'a' was evicted after 10 s"):
            s.submit(_request(["a"]))
        clock.now += 100
        assert s.evict_idle() == ["b"]
        assert _evicted_total(metrics).endswith(" 2")
        await s.submit(_request(["a"], start=True))  # a start begins it again, fresh
        assert s.pool.keys() == ["a"]
        assert s.evict_idle() == []

    asyncio.run(main())


def test_the_idle_clock_starts_when_a_step_is_done_not_when_a_request_arrives():
    clock = Clock()

    async def main():
        s = _service(clock)
        future = s.submit(_request(["a"], start=True))  # arrives at 1000
        clock.now += 5  # its round steps at 1005
        await future
        clock.now += 9  # 14 s after the request, 9 s after its step
        assert s.evict_idle() == []
        clock.now += 1.5
        assert s.evict_idle() == ["a"]

    asyncio.run(main())


def test_sequences_with_queued_or_held_requests_are_spared():
    clock = Clock()

    async def main():
        s = _service(clock)
        await s.submit(_request(["q", "h1", "h2", "idle"], start=True))
        clock.now += 100
        queued = s.submit(_request(["q"]))  # one sequence: queued behind nothing, not run yet
        held = s.submit(_request(["h1", "h2"]))  # many: a block, its keys held until done
        assert "q" in s._queues
        assert "h1" in s._held
        assert s.evict_idle() == ["idle"]
        await asyncio.gather(queued, held)
        assert sorted(s.pool.keys()) == ["h1", "h2", "q"]

    asyncio.run(main())


def test_a_sequence_in_the_middle_of_a_multi_point_request_is_spared():
    clock = Clock()

    async def main():
        s = _service(clock)
        future = s.submit(_request(["m"], start=True, t=40))
        for _ in range(200):  # some of its points have run
            if s._queues.get("m") and s._queues["m"][0].pos > 0:
                break
            await asyncio.sleep(0)
        clock.now += 100
        assert s.evict_idle() == []
        y = (await future)["y"]
        assert y.shape == (1, 40, 1)
        assert s.evict_idle() == []  # its last step was at the new time
        clock.now += IDLE + 1
        assert s.evict_idle() == ["m"]

    asyncio.run(main())


def test_an_ended_sequence_is_not_evicted_later():
    clock = Clock()

    async def main():
        s = _service(clock)
        await s.submit(_request(["e"], start=True))
        await s.submit(_request(["e"], end=True))
        clock.now += 100
        assert s.evict_idle() == []
        with pytest.raises(ServeError, match="not live"):  # ended, never evicted
            s.submit(_request(["e"]))

    asyncio.run(main())


def test_no_idle_timeout_never_evicts():
    clock = Clock()

    async def main():
        s = ModelService("m", str(LEGACY), Limits(idle_timeout_s=None, step_thread_rows=0),
                         Metrics(), clock=clock)
        await s.submit(_request(["a"], start=True))
        clock.now += 1e9
        assert s.evict_idle() == []
        assert s.pool.keys() == ["a"]

    asyncio.run(main())


def test_an_eviction_is_logged_and_a_restart_starts_every_idle_clock_afresh(tmp_path):
    """The log's eviction record is replayed (the evicted sequence stays gone after a crash);
    every sequence a restart restores counts as active at the restart, as a fresh start of
    the server would have it."""
    clock, state = Clock(), str(tmp_path / "s.npz")

    async def first():
        s = _service(clock)
        s.load(state, "log")
        await s.submit(_request(["a", "b"], start=True))
        clock.now += 8
        await s.submit(_request(["b"]))
        clock.now += 3  # a idle 11 s, b 3 s
        assert s.evict_idle() == ["a"]
        s.close()  # no checkpoint: the restart reads the snapshot and the log

    asyncio.run(first())
    clock.now += 1000

    async def second():
        s = _service(clock)
        assert s.load(state, "log") == 1
        assert s.pool.keys() == ["b"]
        clock.now += IDLE - 1
        assert s.evict_idle() == []
        clock.now += 2
        assert s.evict_idle() == ["b"]
        s.close()

    asyncio.run(second())


def test_a_checkpoint_in_the_middle_of_a_request_keeps_the_idle_clock(tmp_path):
    """The checkpoint saves a sequence begun by a multi-point request as before it (takes it
    out, saves, puts it back): put back with the time of its latest step, not the save's."""
    clock, state = Clock(), str(tmp_path / "s.npz")

    async def main():
        s = _service(clock)
        s.load(state, "log")
        future = s.submit(_request(["m"], start=True, t=40))
        for _ in range(200):
            if s._before:
                break
            await asyncio.sleep(0)
        assert "m" in s._before
        stepped = s.pool.last_seen("m")
        clock.now += 5
        s.save(state)
        assert s.pool.last_seen("m") == stepped
        await future
        s.close()

    asyncio.run(main())
