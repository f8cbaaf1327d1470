"""ModelService in process: what a round does when a waiter is gone or the step fails."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("httptools", reason="rnnstream serve needs the 'serve' extra")

from rnnstream.runtime import InferenceError, LiveConfig
from rnnstream.serve.metrics import Metrics
from rnnstream.serve.sequences import Infer, Limits, ModelService

LEGACY = Path(__file__).resolve().parents[1] / "data" / "legacy_v0_1_0" / "model.onnx"


def _request(key, start=False, t=1, value=0.5):
    return Infer(x=np.full((1, t, 1), value, np.float32), keys=[key], starts=[start],
                 ends=[False])


def test_a_cancelled_request_does_not_stop_the_others():
    """A gRPC client that cancels (or hits its deadline) cancels its future; the round that
    computes it still answers every other request and advances every sequence."""

    async def main():
        service = ModelService("m", str(LEGACY), Limits(), Metrics())
        first = service.submit(_request(1, start=True, t=3))
        second = service.submit(_request(2, start=True, t=3))
        first.cancel()
        y = (await asyncio.wait_for(second, 5))["y"]
        assert y.shape == (1, 3, 1)
        third = await asyncio.wait_for(service.submit(_request(2, value=0.1)), 5)
        assert list(third) == ["y"]  # no coverage: y only
        assert third["y"].shape == (1, 1, 1)

    asyncio.run(main())


@pytest.mark.parametrize("coverage", [None, 0.9])
def test_a_failed_step_undoes_the_starts_of_its_round(monkeypatch, coverage):
    async def main():
        service = ModelService("m", str(LEGACY), Limits(), Metrics(),
                               live=LiveConfig(coverage=coverage))
        await service.submit(_request("live", start=True, t=30))
        before = service.pool.get_state("live")
        live = None if coverage is None else service.pool.get_live("live")

        def broken(*args, **kwargs):
            raise InferenceError("onnxruntime failed (injected)")

        monkeypatch.setattr(service.pool, "step_many", broken)
        restarted = service.submit(_request("live", start=True))
        fresh = service.submit(_request("new", start=True))
        for future in (restarted, fresh):
            with pytest.raises(Exception, match="no state changed"):
                await asyncio.wait_for(future, 5)
        assert "new" not in service.pool  # never started: it takes no --max-sequences slot
        for name, value in service.pool.get_state("live").items():
            np.testing.assert_array_equal(value, before[name])
        if live is not None:  # the live scores too (set_state alone starts them afresh)
            assert int(live["seen"][0]) == 30
            for name, value in service.pool.get_live("live").items():
                np.testing.assert_array_equal(value, live[name])

    asyncio.run(main())


def test_a_season_without_coverage_is_refused():
    """Checked once, by LiveConfig, as for Predictor, StreamPool, stream and Spark."""
    from rnnstream.runtime import InputError
    from rnnstream.serve.app import ServeConfig

    with pytest.raises(InputError, match="season=24 set up the live scores, which are off "
                                         "without coverage"):
        ServeConfig(models={"m": str(LEGACY)}, season=24)
    with pytest.raises(InputError, match="not both"):
        ServeConfig(models={"m": str(LEGACY)}, coverage=0.8, live=LiveConfig(coverage=0.9))
    config = ServeConfig(models={"m": str(LEGACY)}, live=LiveConfig(coverage=0.8, season=12))
    assert (config.coverage, config.season) == (0.8, 12)
    again = dataclasses.replace(config, save_every=1.0)  # the mirrored shorthands agree
    assert again.live == config.live
