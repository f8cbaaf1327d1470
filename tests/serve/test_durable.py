"""--durability log: every answered request is in the fsynced log, and recovery (the snapshot
plus the log) gives every sequence's state bit for bit; a torn or corrupt tail is dropped
whole, a log of another model is refused, a log older than its snapshot is not applied twice.

"Crash" here is a second ModelService opening the same files while the first one never saved
(what a SIGKILL leaves: the log written up to the last answered round); tests/serve/
test_torture.py does it with real SIGKILLs of `rnnstream serve`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("httptools", reason="rnnstream serve needs the 'serve' extra")

from rnnstream.runtime import LiveConfig, StateError, StreamPool
from rnnstream.runtime.wal import LogWriter, file_digest, read_log
from rnnstream.serve import ServeError
from rnnstream.serve.metrics import Metrics
from rnnstream.serve.sequences import Infer, Limits, ModelService, log_path

from .conftest import LEGACY, infer_doc, post, same_bits, serving

KEYS = [1, 2, "three", 4, "five", 6]


def apply(pool: StreamPool, keys, x, starts, ends) -> None:
    """What the server must do with one request: per row, start, every point, end."""
    for row, key in enumerate(keys):
        if starts[row]:
            if key in pool:
                pool.reset(key)
            else:
                pool.add(key)
        for t in range(x.shape[1]):
            pool.step_many([key], x[row, t][None])
        if ends[row]:
            pool.remove(key)


def random_requests(rng, n, live=None):
    """Requests over KEYS: 1-3 sequences each, 1-4 points, starts where needed, some ends."""
    live = set() if live is None else live
    out = []
    for _ in range(n):
        keys = list(rng.choice(len(KEYS), int(rng.integers(1, 4)), replace=False))
        keys = [KEYS[i] for i in keys]
        starts = [k not in live or bool(rng.random() < 0.1) for k in keys]
        ends = [bool(rng.random() < 0.1) for _ in keys]
        for k, e in zip(keys, ends, strict=True):
            (live.discard if e else live.add)(k)
        x = rng.standard_normal((len(keys), int(rng.integers(1, 5)), 1)).astype(np.float32)
        out.append(Infer(x=x, keys=keys, starts=starts, ends=ends))
    return out


def assert_same_pools(got: StreamPool, want: StreamPool) -> None:
    keys = sorted(want.keys(), key=str)
    assert sorted(got.keys(), key=str) == keys
    for key in keys:
        a, b = got.get_state(key), want.get_state(key)
        for name in b:
            assert a[name].tobytes() == b[name].tobytes(), (key, name)
        if want.live is not None:
            la, lb = got.get_live(key), want.get_live(key)
            for name in lb:
                assert np.asarray(la[name]).tobytes() == np.asarray(lb[name]).tobytes(), \
                    (key, name)


def service(path: Path, coverage=None, durability="log", thread_rows=0) -> ModelService:
    """``thread_rows``: Limits.step_thread_rows (1: every round steps on the step thread)."""
    s = ModelService("m", str(LEGACY), Limits(idle_timeout_s=None,
                                              step_thread_rows=thread_rows), Metrics(),
                     live=LiveConfig(coverage=coverage))
    s.load(str(path), durability)
    return s


async def run_batch(s: ModelService, requests, checkpoint: str | None = None) -> None:
    """Submit every request at once (they batch across rounds); with ``checkpoint``, save
    while a multi-point request is half done."""
    futures = [s.submit(r) for r in requests]
    if checkpoint is not None:
        for _ in range(200):
            if s._before:
                break
            await asyncio.sleep(0)
        assert s._before, "no multi-point request was in progress"
        s.save(checkpoint)
    await asyncio.gather(*futures)


@pytest.mark.parametrize("thread_rows", [0, 1])
@pytest.mark.parametrize("coverage", [None, 0.9])
def test_recovery_is_the_uninterrupted_run_bit_for_bit(tmp_path, coverage, thread_rows):
    """Also with every round on the step thread: a checkpoint taken while a round is in
    flight finishes that round first (its record goes to the log the snapshot replaces)."""
    state = tmp_path / "s.npz"
    rng = np.random.default_rng(1)
    ref = StreamPool(LEGACY, coverage=coverage)
    live: set = set()

    async def main():
        s = service(state, coverage, thread_rows=thread_rows)
        for batch in range(6):
            requests = random_requests(rng, 12, live)
            await run_batch(s, requests, checkpoint=str(state) if batch in (1, 4) else None)
            for r in requests:
                apply(ref, r.keys, r.x, r.starts, r.ends)
        assert s._log is not None
        assert s._log.unsynced == 0

    asyncio.run(main())
    recovered = service(state, coverage)  # no save since the last checkpoint: the log has it
    assert_same_pools(recovered.pool, ref)


def test_a_torn_or_corrupt_tail_is_dropped_whole(tmp_path):
    state = tmp_path / "s.npz"
    before = StreamPool(LEGACY)
    x1 = np.full((2, 3, 1), 0.25, np.float32)
    x2 = np.full((2, 2, 1), -0.5, np.float32)

    async def main():
        s = service(state)
        await s.submit(Infer(x=x1, keys=[1, 2], starts=[True, True], ends=[False, False]))
        await s.submit(Infer(x=x2, keys=[1, 2], starts=[False, False], ends=[False, False]))

    asyncio.run(main())
    apply(before, [1, 2], x1, [True, True], [False, False])
    good = log_path(str(state))
    whole = read_log(good, "serve", before.fingerprint, "")
    assert whole.dropped == 0  # the preallocated zeros after the records are no torn tail
    data = Path(good).read_bytes()[:whole.end]
    last = len(data) - len(whole.records[-1]) - 8
    cuts = sorted({last + 1, last + 4, last + 8, last + 9, len(data) - 1,
                   *np.random.default_rng(2).integers(last + 1, len(data), 5).tolist()})
    for cut in cuts:  # a crash in the middle of the last append
        Path(good).write_bytes(data[:cut])
        assert_same_pools(service(state).pool, before)
        fresh = read_log(good, "serve", before.fingerprint, file_digest(state))
        assert fresh.records == []  # replaced by a fresh, empty log
        assert fresh.end < cut
    for cut in cuts:  # the same, inside a preallocated tail: the torn record, then zeros
        Path(good).write_bytes(data[:cut] + bytes(4096))
        assert_same_pools(service(state).pool, before)
    flipped = bytearray(data)
    flipped[-3] ^= 0x40  # a bit flipped in the last record: its CRC32 no longer matches
    Path(good).write_bytes(bytes(flipped))
    contents = read_log(good, "serve", before.fingerprint, "")
    assert contents.dropped == len(data) - last
    assert_same_pools(service(state).pool, before)
    Path(good).write_bytes(bytes(flipped) + bytes(1000))  # and with zeros after it
    assert read_log(good, "serve", before.fingerprint, "").dropped == len(data) - last


def test_a_log_of_another_model_is_refused(tmp_path, multi_model):
    state = tmp_path / "s.npz"
    other = StreamPool(multi_model)
    LogWriter.create(log_path(str(state)), {"kind": "serve", "fingerprint": other.fingerprint,
                                            "base": ""})
    with pytest.raises(StateError, match="belongs to another model"):
        service(state)
    Path(log_path(str(state))).write_bytes(b"not a log at all")
    with pytest.raises(StateError, match="not an rnnstream log"):
        service(state)


def test_a_log_older_than_its_snapshot_is_not_applied_twice(tmp_path):
    """A crash between the checkpoint's snapshot and its emptied log leaves the old log
    beside the new snapshot: its records are in the snapshot, and are not replayed."""
    state = tmp_path / "s.npz"
    ref = StreamPool(LEGACY)
    x = np.full((1, 2, 1), 0.75, np.float32)

    async def main():
        s = service(state)
        await s.submit(Infer(x=x, keys=["a"], starts=[True], ends=[False]))
        shutil.copy(log_path(str(state)), tmp_path / "old.wal")
        s.save(str(state))

    asyncio.run(main())
    apply(ref, ["a"], x, [True], [False])
    shutil.copy(tmp_path / "old.wal", log_path(str(state)))
    assert_same_pools(service(state).pool, ref)
    os.remove(state)  # a log whose snapshot is gone: refused, not applied to nothing
    shutil.copy(tmp_path / "old.wal", tmp_path / "older.wal")
    LogWriter.create(log_path(str(state)), {"kind": "serve", "fingerprint": ref.fingerprint,
                                            "base": "ab" * 32})
    with pytest.raises(StateError, match="is missing"):
        service(state)


def test_snapshot_durability_replays_a_left_log_then_removes_it(tmp_path):
    state = tmp_path / "s.npz"
    ref = StreamPool(LEGACY)
    x = np.full((1, 1, 1), 0.5, np.float32)

    async def main():
        s = service(state)
        await s.submit(Infer(x=x, keys=[9], starts=[True], ends=[False]))

    asyncio.run(main())
    apply(ref, [9], x, [True], [False])
    s = service(state, durability="snapshot")
    assert_same_pools(s.pool, ref)
    assert not os.path.exists(log_path(str(state)))


def test_a_failed_log_write_answers_an_error_and_refuses_what_follows(tmp_path, monkeypatch):
    state = tmp_path / "s.npz"

    async def main():
        s = service(state)
        await s.submit(Infer(x=np.ones((1, 1, 1), np.float32), keys=[1], starts=[True],
                             ends=[False]))
        assert s._log is not None

        def full(*args):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(s._log, "sync_fd", full)  # the group commit's fsync
        with pytest.raises(ServeError, match=r"log cannot be written.*No space left"):
            await s.submit(Infer(x=np.ones((1, 1, 1), np.float32), keys=[1], starts=[False],
                                 ends=[False]))
        with pytest.raises(ServeError, match="nothing more is accepted"):
            s.submit(Infer(x=np.ones((1, 1, 1), np.float32), keys=[1], starts=[False],
                           ends=[False]))

    asyncio.run(main())


def test_no_answer_before_its_record_is_fsynced(tmp_path):
    """Every answer waits for an fsync of the log that covers its record, the first one
    included (the group commit's thread starts with the first answer)."""
    state = tmp_path / "s.npz"

    async def main():
        s = service(state)
        assert s._log is not None
        log_ = s._log
        synced: list[int] = []
        fsync = log_.sync_fd

        def counted() -> None:
            fsync()
            synced.append(log_.synced_total)

        log_.sync_fd = counted  # type: ignore[method-assign]
        for i in range(5):
            await s.submit(Infer(x=np.full((1, 1, 1), 0.5, np.float32), keys=[1],
                                 starts=[i == 0], ends=[False]))
            assert synced, "answered before any fsync"
            assert synced[-1] == log_.total, "answered before its record was fsynced"
        s.close()

    asyncio.run(main())


@pytest.mark.serve
def test_sigkill_right_after_the_answers_loses_nothing(tmp_path):
    """A real server, killed (SIGKILL) right after its last answer, no snapshot since the
    start: the restart continues every sequence exactly."""
    state = tmp_path / "s.npz"
    ref = StreamPool(LEGACY)
    rng = np.random.default_rng(4)
    for life in range(3):
        with serving([LEGACY], "--state", str(state), "--save-every", "0") as running:
            for seq in (5, "six", 7):
                x = rng.standard_normal((1, int(rng.integers(1, 4)), 1)).astype(np.float32)
                status, body = post(f"{running.url}/v2/models/model/infer",
                                    infer_doc(x, seq=seq, start=life == 0))
                assert status == 200, body
                if life == 0:
                    ref.add(seq)
                want = np.stack([ref.step_many([seq], x[:, t]) for t in range(x.shape[1])],
                                axis=1)
                same_bits(np.array(body["outputs"][0]["data"]).reshape(want.shape), want)
            running.stop(signal.SIGKILL)


def test_a_preallocated_log_reads_back_every_record_and_grows(tmp_path):
    """Records overwrite the zeros ahead of them; the zeros read as the end of the log (never
    as a record), the file grows a chunk at a time, and LogWriter.open appends after them."""
    path = tmp_path / "l.wal"
    header = {"kind": "k", "fingerprint": "f", "base": ""}
    writer = LogWriter.create(path, header, preallocate=256)
    assert os.path.getsize(path) >= 256
    payloads = [bytes([i + 1]) * (7 * i + 1) for i in range(40)]  # 3,000 bytes: many chunks
    for p in payloads:
        writer.append(p)
    writer.sync()
    contents = read_log(path, "k", "f", "")
    assert contents.records == payloads
    assert (contents.end, contents.dropped) == (writer.size, 0)
    assert contents.header["version"] == 2  # a reader of version 1 only refuses it by this
    assert os.path.getsize(path) > writer.size  # zeros still ahead of the records
    writer.close()
    again = LogWriter.open(path, contents, preallocate=256)
    again.append(b"more")
    again.close()
    assert read_log(path, "k", "f", "").records == [*payloads, b"more"]
    with pytest.raises(ValueError, match="empty record"):
        LogWriter.create(path, header).append(b"")
    assert read_log(path, "k", "f", "").header["version"] == 1  # not preallocated
    LogWriter.create(path, {**header, "version": 3})
    with pytest.raises(StateError, match=r"log version 3; this runtime reads versions \[1, 2\]"):
        read_log(path, "k", "f", "")
