"""Sequences of one model, kept between requests, stepped in batches: :class:`ModelService`.

A request (:class:`Infer`) carries points ``x [B, T, F]`` for ``B`` sequences (``keys``) and
the sequence flags. Everything is checked when it arrives (:meth:`ModelService.submit`), before
any state changes: a refused request changes nothing. An accepted request becomes one
:class:`_Item` per sequence, queued behind that sequence's earlier items.

Many-sequence requests whose sequences have nothing queued skip the per-sequence items: they
form one block (see :class:`_Block`) that a round steps whole, so 1,000 sequences in one request
cost about one request's bookkeeping, not 1,000.

Scheduling (on the event loop thread; a round's StreamPool step may run on the ``rnnstream-
step`` thread, one round in flight at a time, and the log's fsyncs on ``rnnstream-log-sync``:
see ``step_thread_rows`` and ``_settle_inflight``). A sequence is *ready* when it has queued
items; a round takes up to ``max_batch`` ready sequences in arrival order, one point from the
head item of each, and advances them all in one ``StreamPool.step_many`` call. So requests of
one sequence apply in arrival order, a second request for a sequence waits for the first, and
requests of different sequences that arrive within ``queue_delay`` of the first ready one share
a step (like Triton's sequence batcher ``max_queue_delay_microseconds``). ``T > 1`` points
(priming) take ``T`` rounds, each one point, which is exactly what stepping the pool point by
point gives.

Intervals (``coverage``). With a coverage the pool scores every sequence live and keeps an
interval per sequence around its latest prediction (:mod:`rnnstream.runtime.live`); each round
reads it right after its step, for every sequence the step advanced, so a ``T``-point request
gets the interval after each of its points, as ``lower``/``upper`` beside ``y``. The pool's
bounds are float64; they are rounded to the nearest float32 (numpy's cast), like every FP32
output. :meth:`ModelService.live_summary` pools the live scores of every live sequence (the
``/metrics`` gauges).

Flags. ``start`` gives the sequence a fresh state when its first point is applied (a new key is
added, a live one reset); ``end`` removes it after its last point. A request without ``start``
for a sequence that is neither live nor started by a queued request is refused; so is one for a
sequence evicted for idleness (the message says so, instead of starting it afresh).

Idleness (``idle_timeout_s``). The pool keeps the one idle clock (``StreamPool(idle_timeout_s,
clock, auto_evict=False)``): a sequence is active when a round's step advanced it (the clock
read right after the step, not when its request arrived; a failed step touches nothing), and
a restart counts every restored sequence as active at the restart. :meth:`ModelService.
evict_idle` (the server calls it every quarter of the timeout, at most every 10 s) has the
pool remove the idle ones, sparing every sequence with a request queued or in progress (its
points run in later rounds); what is serve's own is the rest: the evicted ids remembered
(``EVICTED_MEMORY``) to answer "evicted" rather than "never started", the log's eviction
record (replayed on recovery), the metric and the log line.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import time
import warnings
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnstream.runtime import ConfigError, LiveConfig, RnnStreamError, StreamPool
from rnnstream.runtime.live import FORECASTERS
from rnnstream.runtime.spec import INPUT_NAME, OUTPUT_NAME
from rnnstream.runtime.wal import LogWriter, file_digest, read_log

from .errors import ServeError
from .metrics import Metrics
from .wal import LOG_KIND, GroupCommit, Rows, encode_evict, encode_round, replay

__all__ = ["BOUNDS", "Infer", "Limits", "LiveSummary", "ModelService", "Outputs"]

log = logging.getLogger("rnnstream.serve")

# Event-loop turns a round may wait for more requests while they keep arriving (see _settle).
SETTLE_TURNS = 8
# How many evicted ids are remembered to answer "evicted" rather than "never started".
EVICTED_MEMORY = 100_000
BOUNDS = ("lower", "upper")  # the interval outputs, with --coverage
DURABILITY = ("log", "snapshot")  # --durability: what an answer with --state promises
# A log longer than this is checkpointed into the snapshot (and emptied) at once.
CHECKPOINT_BYTES = 64 << 20
# Rounds of this many sequences or more step on a worker thread while the loop parses (a
# smaller step costs about what the hand-off to the thread and back does: ~20-30 µs here);
# so do smaller ones while requests arrive concurrently (see ModelService._round).
STEP_THREAD_ROWS = 16
# The log file is extended this much at a time, with zeros that records then overwrite, so a
# round's fdatasync flushes its data without a new file size (runtime.wal.LogWriter).
LOG_PREALLOCATE = 8 << 20


_UNSET: Any = object()  # "not given" for a deprecated keyword (None is a value)


@dataclass
class Limits:
    """Per-model limits and batching knobs (the CLI's flags). ``idle_timeout_s`` (None: never
    evict) is the name StreamPool and Spark use; ``max_idle_seconds`` is its deprecated old
    name, a keyword and an attribute that stand for ``idle_timeout_s``, with a
    DeprecationWarning, for one release."""

    max_sequences: int = 100_000
    idle_timeout_s: float | None = 3600.0
    max_batch: int = 1024
    queue_delay_us: int = 0  # 0: batch what arrives within one event-loop turn
    # a round of this many sequences or more, or any round while requests arrive concurrently,
    # steps on a worker thread (0: every round on the loop); see _Round
    step_thread_rows: int = STEP_THREAD_ROWS

    @property
    def max_idle_seconds(self) -> float | None:
        """Deprecated: ``idle_timeout_s``."""
        warnings.warn("Limits.max_idle_seconds is deprecated and will be removed in the next "
                      "release; read Limits.idle_timeout_s", DeprecationWarning, stacklevel=2)
        return self.idle_timeout_s

    @max_idle_seconds.setter
    def max_idle_seconds(self, value: float | None) -> None:
        warnings.warn("Limits.max_idle_seconds is deprecated and will be removed in the next "
                      "release; set Limits.idle_timeout_s", DeprecationWarning, stacklevel=2)
        self.idle_timeout_s = value


def _taking_max_idle_seconds(init: Callable[..., None]) -> Callable[..., None]:
    """Limits' dataclass __init__, taking the deprecated ``max_idle_seconds=`` too. Not an
    InitVar: dataclasses.replace reads an InitVar back from the instance (here the property),
    so replace(limits, idle_timeout_s=5) would warn and put the old timeout back."""

    @functools.wraps(init)
    def __init__(self: Limits, *args: Any, max_idle_seconds: Any = _UNSET, **kw: Any) -> None:
        init(self, *args, **kw)
        if max_idle_seconds is not _UNSET:
            warnings.warn("Limits(max_idle_seconds=...) is deprecated and will be removed in "
                          "the next release; use Limits(idle_timeout_s=...)",
                          DeprecationWarning, stacklevel=2)
            self.idle_timeout_s = max_idle_seconds

    return __init__


Limits.__init__ = _taking_max_idle_seconds(Limits.__init__)  # type: ignore[method-assign]


@dataclass
class Infer:
    """One inference request, protocol-free: ``x`` [B, T, F] float32, one key per row."""

    x: np.ndarray
    keys: list[Hashable]
    starts: list[bool]  # per row: fresh state before its first point
    ends: list[bool]  # per row: release the sequence after its last point
    protocol: str = "http"
    outputs: tuple[str, ...] = ()  # the outputs asked for, in order; () for every output


# output name -> [B, T, targets] FP32: y, and lower/upper with coverage
Outputs = dict[str, np.ndarray]
# called once with (outputs, None) or (None, error), on the event loop, as soon as it is known
Answer = Callable[[Outputs | None, Exception | None], None]


@dataclass
class _Gather:
    """The answer being assembled for one request."""

    answer: Answer
    y: np.ndarray  # [B, T, targets]
    left: int
    arrived: float
    lower: np.ndarray | None = None  # [B, T, targets], with coverage
    upper: np.ndarray | None = None
    done: bool = False

    def finish(self, error: Exception | None) -> None:
        if self.done:
            return
        self.done = True
        if error is not None:
            self.answer(None, error)
        elif self.lower is None or self.upper is None:
            self.answer({OUTPUT_NAME: self.y}, None)
        else:
            self.answer({OUTPUT_NAME: self.y, "lower": self.lower, "upper": self.upper}, None)


@dataclass
class LiveSummary:
    """One model's live scores pooled over its live sequences, per target (``/metrics``).

    ``mae[f]`` is forecaster ``f``'s mean absolute error over every scored point of every live
    sequence (``count``: how many); forecasters are ``model``, ``persistence`` and, with a
    season, ``seasonal``. ``covered`` of ``tracked`` scored intervals held the value.
    """

    coverage: float
    targets: list[str]
    count: np.ndarray  # [T] points scored (the model's errors)
    mae: dict[str, np.ndarray]  # forecaster -> [T]; NaN where nothing was scored
    tracked: np.ndarray  # [T] intervals scored
    covered: np.ndarray  # [T] of which held the value


@dataclass
class _Item:
    """One sequence's share of a request: points x [T, F], written into gather.y[row]."""

    key: Hashable
    x: np.ndarray
    gather: _Gather
    row: int
    start: bool
    end: bool
    pos: int = 0


@dataclass
class _Block:
    """A many-sequence request whose sequences had nothing queued: stepped as one unit (its
    rows stay together, so a round does per-request work, not per-sequence work). Its keys are
    *held* (``ModelService._held``) until it is done; requests for them that arrive meanwhile
    queue as usual and become ready when the block releases its keys."""

    keys: list[Hashable]
    x: np.ndarray  # [B, T, F]
    gather: _Gather
    starts: list[bool]
    ends: list[bool]
    pos: int = 0


@dataclass
class _Round:
    """One pool step: what :meth:`ModelService._round` took and prepared on the loop, and what
    the step gave. With ``--step-thread-rows N`` a round of N rows or more, or any round while
    requests arrive concurrently, steps on the step thread while the loop parses the next
    requests (onnxruntime releases the GIL), which then share the next step; one round is
    in flight at a time, so a sequence's requests still apply in arrival order, and the pool's
    membership changes only on the loop between rounds."""

    blocks: list[_Block]
    keys: list[Hashable]
    items: list[_Item]
    begun: list[tuple[Hashable, Any]]
    all_keys: list[Hashable]
    x: np.ndarray  # [len(all_keys), F]
    y: np.ndarray | None = None
    bounds: tuple[np.ndarray, np.ndarray] | None = None  # lower, upper (float64), --coverage
    error: Exception | None = None
    seconds: float = 0.0
    future: Future | None = None  # the step thread's, while in flight


class ModelService:
    """One model's sequences: checks requests, queues them per sequence, steps them in batches."""

    def __init__(self, name: str, path: str, limits: Limits, metrics: Metrics,
                 clock: Callable[[], float] = time.monotonic,
                 live: LiveConfig | None = None) -> None:
        self.name = name
        # the pool keeps the idle clock; evict_idle sweeps (sparing sequences in progress)
        self.pool = StreamPool(path, live=live, idle_timeout_s=limits.idle_timeout_s,
                               clock=clock, auto_evict=False)
        coverage = self.coverage = None if live is None else live.coverage
        self.outputs = (OUTPUT_NAME, *BOUNDS) if coverage is not None else (OUTPUT_NAME,)
        contract = self.pool.contract
        if contract is None:
            raise ServeError("bad_request", f"{path}: not an rnnstream model (no contract); "
                             "rnnstream serve needs the contract to know the state")
        self.contract = contract
        self.n_features = contract.n_features
        self.n_targets = contract.n_targets
        self.limits = limits
        self.metrics = metrics
        self._queues: dict[Hashable, collections.deque] = {}
        self._held: dict[Hashable, _Block] = {}  # key -> the block it is part of, until done
        self._ready: collections.OrderedDict[Hashable, None] = collections.OrderedDict()
        self._blocks: collections.deque[_Block] = collections.deque()
        self._starting: dict[Hashable, int] = {}  # key -> queued start items not yet applied
        # ids evicted for idleness, oldest first (at most EVICTED_MEMORY)
        self._evicted: collections.OrderedDict[Hashable, None] = collections.OrderedDict()
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle_waiters: list[asyncio.Future] = []
        self._arrivals = 0  # requests submitted so far (see _settle)
        # --durability log (see .wal): the log, the rows the current round completed, the
        # answers it holds back until its record is durable, and the state every sequence in
        # the middle of a multi-point request had before it (a checkpoint saves that, since
        # the request is logged whole when it completes)
        self._log: LogWriter | None = None
        self._log_path = ""
        self._state_path = ""
        self._log_broken: str | None = None
        self._done: list[Rows] = []
        self._held_answers: list[tuple[_Gather, ServeError | None]] | None = None
        self._before: dict[Hashable, tuple[Any, Any] | None] = {}
        self._group: GroupCommit | None = None  # the fsync thread, from the first commit
        self._inflight: _Round | None = None  # the round on the step thread
        self._round_arrivals = 0  # self._arrivals when the latest round began
        self._stepper: ThreadPoolExecutor | None = None  # the step thread, from its first round

    # -- facts ----------------------------------------------------------------------------------
    @property
    def live(self) -> int:
        return len(self.pool)

    @property
    def busy(self) -> bool:
        """Requests queued, or answered but waiting for their log record's fsync."""
        return bool(self._queues or self._held or self._inflight is not None
                    or (self._group and self._group.pending))

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "rnnstream_onnx",
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, -1, self.n_features]},
                       {"name": "sequence_id", "datatype": "INT64", "shape": [-1],
                        "optional": True},
                       {"name": "sequence_start", "datatype": "BOOL", "shape": [-1],
                        "optional": True},
                       {"name": "sequence_end", "datatype": "BOOL", "shape": [-1],
                        "optional": True}],
            "outputs": [{"name": name, "datatype": "FP32", "shape": [-1, -1, self.n_targets]}
                        for name in self.outputs],
        }

    def live_summary(self) -> LiveSummary | None:
        """The live scores of every live sequence, pooled per target (None without coverage).
        Reads the pool's arrays once: O(live sequences), meant for a metrics scrape."""
        live = self.pool.live
        if live is None:
            return None
        t = self.n_targets
        count = np.zeros(t, np.int64)
        forecasters = FORECASTERS if live.season else FORECASTERS[:2]
        mae = {f: np.full(t, np.nan) for f in forecasters}
        tracked, covered = np.zeros(t, np.int64), np.zeros(t, np.int64)
        if len(self.pool):
            acc = self.pool.accuracy()
            count = acc["model"]["count"].sum(axis=0)
            for f in forecasters:
                scores = acc[f]
                n = scores["count"].sum(axis=0)
                # mae * count is each sequence's sum of absolute errors (NaN * 0 where none)
                total = np.nansum(scores["mae"] * scores["count"], axis=0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    mae[f] = np.where(n > 0, total / n, np.nan)
            share, scored = self.pool.realised_coverage()
            tracked = scored.sum(axis=0)
            # share * scored is the hit count within rounding (both are counts below 2**53)
            covered = np.rint(np.nan_to_num(share) * scored).astype(np.int64).sum(axis=0)
        return LiveSummary(live.coverage, list(self.contract.targets), count, mae, tracked,
                           covered)

    # -- admission ------------------------------------------------------------------------------
    def submit(self, req: Infer) -> asyncio.Future:
        """Check ``req`` whole, then queue it; the future gets its :data:`Outputs` (``y``
        [B, T, targets], and ``lower``/``upper`` with coverage)."""
        loop = self._loop or asyncio.get_running_loop()
        future = loop.create_future()

        def answer(outputs: Outputs | None, error: Exception | None) -> None:
            if future.done():  # cancelled (a gRPC client's deadline or cancel): nobody waits,
                return  # and the round that computed it must go on for the others
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(outputs)

        self.submit_with(req, answer)
        return future

    def submit_with(self, req: Infer, answer: Answer) -> None:
        """Check ``req`` whole (ServeError when refused), then queue it; ``answer`` is called
        in the round that computes its last point, with no event-loop turn in between."""
        self._check(req)
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        b, t = req.x.shape[:2]
        queues = self._queues
        if (1 < b <= self.limits.max_batch and queues.keys().isdisjoint(req.keys)
                and self._held.keys().isdisjoint(req.keys)):
            self._submit_block(req, answer)
            return
        gather = self._gather(b, t, b, answer)
        for row, key in enumerate(req.keys):
            start = req.starts[row]
            item = _Item(key, req.x[row], gather, row, start, req.ends[row])
            if start:
                self._starting[key] = self._starting.get(key, 0) + 1
                self._evicted.pop(key, None)
            queue = queues.get(key)
            if queue is None:
                queue = queues[key] = collections.deque()
                if key not in self._held:  # else it becomes ready when its block is done
                    self._ready[key] = None
            queue.append(item)
        self._arrivals += 1
        self._schedule()

    def _submit_block(self, req: Infer, answer: Answer) -> None:
        b, t = req.x.shape[:2]
        gather = self._gather(b, t, 1, answer)
        block = _Block(list(req.keys), req.x, gather, list(req.starts), list(req.ends))
        if any(req.starts):
            for key, start in zip(req.keys, req.starts, strict=True):
                if start:
                    self._starting[key] = self._starting.get(key, 0) + 1
                    self._evicted.pop(key, None)
        self._held.update(dict.fromkeys(req.keys, block))
        self._blocks.append(block)
        self._arrivals += 1
        self._schedule()

    def _check(self, req: Infer) -> None:
        if self._log_broken is not None:
            raise ServeError("unavailable", f"model {self.name!r}: the log cannot be written "
                             f"({self._log_broken}); nothing more is accepted until the "
                             "server is restarted (it recovers every answered request)")
        x = req.x
        if x.ndim != 3 or x.shape[2] != self.n_features or x.shape[0] < 1 or x.shape[1] < 1:
            raise ServeError("bad_request", f"model {self.name!r}: input 'x' has shape "
                             f"{list(x.shape)}; expected [sequences, time, {self.n_features}] "
                             "with sequences >= 1 and time >= 1 (FP32)")
        if len(req.keys) != x.shape[0]:
            raise ServeError("bad_request", f"model {self.name!r}: {len(req.keys)} sequence "
                             f"id(s) for {x.shape[0]} rows of 'x'; expected one id per row")
        if len(set(req.keys)) != len(req.keys):
            raise ServeError("bad_request", f"model {self.name!r}: a sequence id appears twice "
                             "in one request; send a sequence's points along the time axis")
        if req.outputs:
            self._check_outputs(req.outputs)
        if not np.isfinite(x).all():
            b, t, f = np.argwhere(~np.isfinite(x))[0]
            raise ServeError("bad_request", f"model {self.name!r}: x[{b}, {t}, {f}] is "
                             f"{x[b, t, f]}; expected finite FP32 values")
        if len(req.starts) != len(req.keys) or len(req.ends) != len(req.keys):
            raise ServeError("bad_request", f"model {self.name!r}: {len(req.starts)} start and "
                             f"{len(req.ends)} end flags for {len(req.keys)} sequences; "
                             "expected one of each per sequence")
        new = [k for k, s in zip(req.keys, req.starts, strict=True)
               if s and k not in self.pool and k not in self._starting]
        room = self.limits.max_sequences - len(self.pool) - len(self._starting)
        if len(new) > room:
            raise ServeError("too_many", f"model {self.name!r}: {len(new)} new sequence(s) "
                             f"would exceed --max-sequences {self.limits.max_sequences} "
                             f"({len(self.pool)} live, {len(self._starting)} starting); "
                             "end finished sequences (sequence_end=true) or retry later")
        for k, s in zip(req.keys, req.starts, strict=True):
            if s or k in self.pool or k in self._starting:
                continue
            if k in self._evicted:
                raise ServeError("not_started", f"model {self.name!r}: sequence {k!r} was "
                                 f"evicted after {self.limits.idle_timeout_s:g} s without "
                                 "requests (--idle-timeout); its state is gone: send "
                                 "sequence_start=true to begin it again")
            raise ServeError("not_started", f"model {self.name!r}: sequence {k!r} is not live "
                             "(never started, or already ended); its first request must "
                             "carry sequence_start=true")

    def _check_outputs(self, names: tuple[str, ...]) -> None:
        unknown = [n for n in names if n not in self.outputs]
        if not unknown:
            return
        if self.coverage is None and set(unknown) <= set(BOUNDS):
            raise ServeError("bad_request", f"model {self.name!r}: output(s) {unknown} are the "
                             "prediction interval, which this server does not compute; start "
                             "the server with --coverage (e.g. rnnstream serve MODEL "
                             "--coverage 0.9)")
        raise ServeError("bad_request", f"model {self.name!r}: unknown output(s) {unknown}; "
                         f"this model has {list(self.outputs)}"
                         + ("" if self.coverage is not None else
                            " (and 'lower', 'upper' with --coverage)"))

    def _gather(self, b: int, t: int, left: int, answer: Answer) -> _Gather:
        shape = (b, t, self.n_targets)
        gather = _Gather(answer, np.empty(shape, np.float32), left, time.perf_counter())
        if self.coverage is not None:
            gather.lower, gather.upper = np.empty(shape, np.float32), np.empty(shape, np.float32)
        return gather

    # -- rounds ---------------------------------------------------------------------------------
    def _schedule(self) -> None:
        loop = self._loop
        if (self._scheduled is not None or self._inflight is not None
                or not (self._ready or self._blocks) or loop is None):
            return
        delay = self.limits.queue_delay_us
        if len(self._ready) >= self.limits.max_batch:
            self._scheduled = loop.call_soon(self._round)
        elif delay <= 0:
            self._scheduled = loop.call_soon(self._settle, self._arrivals, 0)
        else:
            self._scheduled = loop.call_later(delay / 1e6, self._round)

    def _settle(self, seen: int, turns: int) -> None:
        """With no queue delay: run the round at the first event-loop turn that brought no new
        request (at most SETTLE_TURNS turns). A lone request runs at once; requests that keep
        arriving turn after turn (a gRPC stream delivers one message per turn) share a step."""
        if (self._arrivals != seen and turns < SETTLE_TURNS and self._loop is not None
                and len(self._ready) < self.limits.max_batch):
            self._scheduled = self._loop.call_soon(self._settle, self._arrivals, turns + 1)
        else:
            self._round()

    def _round(self) -> None:
        """Advance queued blocks and up to max_batch ready sequences by one point each, in one
        pool step: prepared here, stepped here or on the step thread (see :class:`_Round`),
        finished by :meth:`_finish_round` on the loop."""
        self._scheduled = None
        now = time.perf_counter()
        blocks = self._take_blocks()
        budget = self.limits.max_batch - sum(len(blk.keys) for blk in blocks)
        keys, items = self._take_singles(max(0, min(len(self._ready), budget)))
        if not blocks and not keys:
            self._schedule()
            return
        parts: list[np.ndarray] = []
        all_keys: list[Hashable] = []
        begun: list[tuple[Hashable, Any]] = []  # what _begin changed, undone if the step fails
        logged = self._log is not None
        for blk in blocks:
            if blk.pos == 0:
                for key, start in zip(blk.keys, blk.starts, strict=True):
                    if start:
                        begun.append(self._begin(key))
                    elif logged and blk.x.shape[1] > 1:
                        self._before[key] = self._snapshot_of(key)
                if logged and blk.x.shape[1] > 1:
                    self._before.update(begun[len(begun) - sum(blk.starts):])
                self.metrics.queue_seconds.observe(now - blk.gather.arrived)
            parts.append(blk.x[:, blk.pos])
            all_keys += blk.keys
        for item in items:
            if item.pos == 0:
                if item.start:
                    begun.append(self._begin(item.key))
                    if logged and item.x.shape[0] > 1:
                        self._before[item.key] = begun[-1][1]
                elif logged and item.x.shape[0] > 1:
                    self._before[item.key] = self._snapshot_of(item.key)
                self.metrics.queue_seconds.observe(now - item.gather.arrived)
        if len(items) == 1 and not blocks:
            x = items[0].x[items[0].pos:items[0].pos + 1]  # a contiguous [1, F] view
        else:
            parts.extend(item.x[item.pos][None] for item in items)
            x = np.concatenate(parts) if len(parts) > 1 else np.ascontiguousarray(parts[0])
        all_keys += keys
        rnd = _Round(blocks, keys, items, begun, all_keys, x)
        rows = self.limits.step_thread_rows
        # requests that arrived since the previous round began: more than one means clients
        # are concurrent (a lone client's next request comes after its answer), and a step
        # on the thread lets the loop take in the next ones meanwhile, which then share a step
        arrived, self._round_arrivals = self._arrivals - self._round_arrivals, self._arrivals
        if rows and (len(all_keys) >= rows or arrived > 1) and self._loop is not None:
            self._inflight = rnd
            if self._stepper is None:
                self._stepper = ThreadPoolExecutor(1, thread_name_prefix="rnnstream-step")
            rnd.future = self._stepper.submit(self._compute, rnd, self._loop)
            return
        self._compute(rnd, None)
        self._finish_round(rnd)

    def _compute(self, rnd: _Round, loop: asyncio.AbstractEventLoop | None) -> None:
        """The round's pool step (and its intervals); on the step thread when ``loop`` is
        given, which then hands the round back to the loop. Touches only the pool, whose
        membership the loop leaves alone while a round is in flight (see _settle_inflight)."""
        started = time.perf_counter()
        try:
            rnd.y = self.pool.step_many(rnd.all_keys, rnd.x)
            if self.coverage is not None:  # the interval after this step, before an ended
                rnd.bounds = self.pool.interval(rnd.all_keys)  # sequence is removed
        except RnnStreamError as exc:  # onnxruntime failed: the pool left every state as it was
            rnd.error = exc
        except Exception as exc:  # not expected, but on the step thread an
            # exception would reach nobody and leave the round in flight for ever: its
            # requests get an error instead (the pool changes nothing on any exception)
            log.exception("step raised", extra={"event": "step_failed", "model": self.name})
            rnd.error = exc
        rnd.seconds = time.perf_counter() - started
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(self._round_done, rnd)

    def _round_done(self, rnd: _Round) -> None:
        if self._inflight is rnd:  # else _settle_inflight finished it already
            self._inflight = None
            self._finish_round(rnd)

    def _settle_inflight(self) -> None:
        """Wait for the round on the step thread and finish it here: before anything outside
        a round changes the pool or reads it whole (a checkpoint, an eviction, a stop)."""
        rnd = self._inflight
        if rnd is not None and rnd.future is not None:
            rnd.future.result()
            self._inflight = None
            self._finish_round(rnd)

    def _finish_round(self, rnd: _Round) -> None:
        blocks, keys, items = rnd.blocks, rnd.keys, rnd.items
        logged = self._log is not None
        if logged:
            self._held_answers = []
        y = rnd.y
        if rnd.error is not None or y is None:
            self._undo_begins(rnd.begun)  # the starts of this round are undone too
            log.error("step failed", extra={"event": "step_failed", "model": self.name,
                                            "error": str(rnd.error)})
            error = ServeError("internal", f"model {self.name!r}: the step failed "
                               f"({rnd.error}); no state changed")
            if logged:  # points of multi-point requests that earlier rounds applied stay
                self._log_partial(blocks, items)
            for blk in blocks:
                self._release_block(blk, error)
            self._fail(keys, items, error)
            self._commit()
            self._schedule()
            return
        self.metrics.step_seconds.observe(rnd.seconds)
        lower, upper = rnd.bounds if rnd.bounds is not None else (None, None)
        self.metrics.batch_size.observe(len(rnd.all_keys))
        offset = 0
        for blk in blocks:
            n = len(blk.keys)
            blk.gather.y[:, blk.pos] = y[offset:offset + n]
            if lower is not None and upper is not None:
                _put(blk.gather, (slice(None), blk.pos), lower[offset:offset + n],
                     upper[offset:offset + n])
            offset += n
            blk.pos += 1
            if blk.pos < blk.x.shape[1]:
                self._blocks.append(blk)
            else:
                if logged:
                    self._done.append(Rows(blk.keys, blk.x, blk.starts, blk.ends))
                    if blk.x.shape[1] > 1:
                        for key in blk.keys:
                            self._before.pop(key, None)
                self._release_block(blk, None)
        self._advance(keys, items, y[offset:],
                      None if lower is None or upper is None else
                      (lower[offset:], upper[offset:]))
        if logged:
            self._commit()
        if not self.busy:
            self._wake_idle()
        self._schedule()

    # -- the log (--durability log) ---------------------------------------------------------------
    def _commit(self) -> None:
        """Append the round's completed rows to the log (one record), and send the answers
        the round held back once it is durable (the group commit's fsync, off the loop). If
        the log cannot be written, those answers are errors and the model refuses every later
        request: its state is ahead of its log."""
        held, self._held_answers = self._held_answers or [], None
        done, self._done = self._done, []
        log_ = self._log
        if done and log_ is not None and self._log_broken is None:
            try:
                log_.append(encode_round(done, self.n_features))
            except OSError as exc:
                self._break_log(exc)
            else:
                if log_.size > CHECKPOINT_BYTES and self._loop is not None:
                    self._loop.call_soon(self._checkpoint_now)
        if not held:
            return
        group = self._group_commit()
        if self._log_broken is not None or group is None:
            self._release(held, OSError(self._log_broken or "no log"))
            return
        # always on the thread: an fsync inline would save a lone request the hand-off (about
        # 100 µs here) but stall every gRPC stream for a whole fsync (ms on a busy disk)
        group.after_sync(lambda exc: self._release(held, exc))

    def _release(self, held: list[tuple[_Gather, ServeError | None]],
                 exc: Exception | None) -> None:
        if exc is not None:
            if self._log_broken is None:
                self._break_log(exc)
            error = ServeError("internal", f"model {self.name!r}: the log cannot be written "
                               f"({self._log_broken}); this request may or may not survive a "
                               "restart")
            held = [(gather, error) for gather, _ in held]
        for gather, err in held:
            gather.finish(err)
        if not self.busy:
            self._wake_idle()

    def _group_commit(self) -> GroupCommit | None:
        if self._group is None and self._log is not None and self._loop is not None:
            self._group = GroupCommit(self._log, self._loop,
                                      self.metrics.log_sync_seconds.observe)
        return self._group

    def _break_log(self, exc: Exception) -> None:
        self._log_broken = str(exc)
        log.error("log write failed", extra={"event": "log_failed", "model": self.name,
                                             "path": self._log_path, "error": str(exc)})

    def _finish(self, gather: _Gather, error: ServeError | None) -> None:
        """Answer now, or once the round's record is durable (--durability log)."""
        if self._held_answers is not None:
            self._held_answers.append((gather, error))
        else:
            gather.finish(error)

    def _snapshot_of(self, key: Hashable) -> tuple[Any, Any]:
        return (self.pool.get_state(key),
                None if self.coverage is None else self.pool.get_live(key))

    def _log_partial(self, blocks: list[_Block], items: list[_Item]) -> None:
        """A failed round drops its requests; the points earlier rounds applied for them stay
        in the states, so they are logged (as rows without an end) to keep the log exact."""
        for blk in blocks:
            if blk.pos > 0:
                self._done.append(Rows(blk.keys, blk.x[:, :blk.pos], blk.starts,
                                       [False] * len(blk.keys)))
                for key in blk.keys:
                    self._before.pop(key, None)
        for item in items:
            if item.pos > 0:
                self._done.append(Rows([item.key], item.x[None, :item.pos], [item.start],
                                       [False]))
                self._before.pop(item.key, None)

    def _take_blocks(self) -> list[_Block]:
        """Whole blocks, oldest first, while they fit max_batch (at least one)."""
        out: list[_Block] = []
        room = self.limits.max_batch
        while self._blocks and (not out or len(self._blocks[0].keys) <= room):
            blk = self._blocks.popleft()
            room -= len(blk.keys)
            out.append(blk)
        return out

    def _take_singles(self, n: int) -> tuple[list[Hashable], list[_Item]]:
        ready = self._ready
        keys = [ready.popitem(last=False)[0] for _ in range(n)]
        items = [self._queues[k][0] for k in keys]
        lost = [i for i, item in enumerate(items)
                if item.pos == 0 and not item.start and item.key not in self.pool]
        if lost:  # ended (sequence_end) by a request queued before this one
            self._fail([keys[i] for i in lost], [items[i] for i in lost], ServeError(
                "not_started", f"model {self.name!r}: sequence {keys[lost[0]]!r} was ended by "
                "an earlier request; send sequence_start=true to begin it again"))
            gone = set(lost)
            keys = [k for i, k in enumerate(keys) if i not in gone]
            items = [it for i, it in enumerate(items) if i not in gone]
        return keys, items

    def _advance(self, keys: list[Hashable], items: list[_Item], y: np.ndarray,
                 bounds: tuple[np.ndarray, np.ndarray] | None) -> None:
        ready = self._ready
        for i, (key, item) in enumerate(zip(keys, items, strict=True)):
            item.gather.y[item.row, item.pos] = y[i]
            if bounds is not None:
                _put(item.gather, (item.row, item.pos), bounds[0][i], bounds[1][i])
            item.pos += 1
            if item.pos < item.x.shape[0]:
                ready[key] = None
                continue
            queue = self._queues[key]
            queue.popleft()
            if self._log is not None:
                self._done.append(Rows([key], item.x[None], [item.start], [item.end]))
                if item.x.shape[0] > 1:
                    self._before.pop(key, None)
            if item.end:
                self.pool.remove(key)
            if queue:
                ready[key] = None
            else:
                del self._queues[key]
            self._answer(item.gather)

    def _release_block(self, blk: _Block, error: ServeError | None) -> None:
        """The block is done (or failed): requests queued behind it become ready; answer it."""
        held_pop, queues, ready = self._held.pop, self._queues, self._ready
        for key in blk.keys:
            held_pop(key)
        if error is None and any(blk.ends):
            for key, end in zip(blk.keys, blk.ends, strict=True):
                if end:
                    self.pool.remove(key)
        if queues:
            for key in blk.keys:
                if key in queues:
                    ready[key] = None
        self._finish(blk.gather, error)

    def _begin(self, key: Hashable) -> tuple[Hashable, Any]:
        """Start (or restart) ``key`` at the initial state; returns what :meth:`_undo_begins`
        needs to put it back: the key and its previous state and live scores (None: it was
        not live)."""
        left = self._starting[key] - 1
        if left:
            self._starting[key] = left
        else:
            del self._starting[key]
        previous = None
        if key in self.pool:
            previous = (self.pool.get_state(key),
                        None if self.coverage is None else self.pool.get_live(key))
            self.pool.reset(key)
        else:
            self.pool.add(key)
        self.metrics.sequences_started.inc(self.name)
        return key, previous

    def _undo_begins(self, begun: list[tuple[Hashable, Any]]) -> None:
        """The round's step failed: sequences it started are as they were before the round (the
        failed requests are dropped, so their starts are not queued again)."""
        for key, previous in reversed(begun):
            if previous is None:
                self.pool.remove(key)
            else:
                state, live = previous
                self.pool.set_state(key, state)  # (which starts the live scores afresh)
                if live is not None:
                    self.pool.set_live(key, live)

    def _answer(self, gather: _Gather) -> None:
        gather.left -= 1
        if gather.left == 0:
            self._finish(gather, None)

    def _fail(self, keys: list[Hashable], items: list[_Item], error: ServeError) -> None:
        """Drop the failed items (their requests get ``error``); keep later ones queued."""
        for key, item in zip(keys, items, strict=True):
            self._finish(item.gather, error)
            queue = self._queues[key]
            queue.popleft()
            if queue:
                self._ready[key] = None
            else:
                del self._queues[key]

    # -- idleness, eviction, shutdown -------------------------------------------------------------
    def evict_idle(self) -> list[Hashable]:
        """Have the pool remove the sequences idle longer than idle_timeout_s, sparing those
        with a request queued or in progress; remember, log and count the evicted ids."""
        if self.limits.idle_timeout_s is None:
            return []
        self._settle_inflight()  # the round in flight first: its step makes its rows active
        gone = self.pool.evict_idle(spare=_InProgress(self._queues, self._held))
        for key in gone:
            self._evicted[key] = None
        while len(self._evicted) > EVICTED_MEMORY:
            self._evicted.popitem(last=False)
        if gone and self._log is not None and self._log_broken is None:
            try:  # made durable by the next round's fsync (nobody waits for an eviction)
                self._log.append(encode_evict(gone))
            except OSError as exc:
                self._break_log(exc)
        if gone:
            self.metrics.sequences_evicted.inc(self.name, len(gone))
            log.info("evicted idle sequences", extra={"event": "evicted", "model": self.name,
                                                      "count": len(gone)})
        return gone

    async def drained(self) -> None:
        """Wait until no request is queued (for a graceful stop)."""
        while self.busy:
            fut = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(fut)
            await fut

    def _wake_idle(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    # -- snapshots --------------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Every live sequence's state, atomically (StreamPool.save_state); with a log, a
        checkpoint: the snapshot, then the log emptied (see :mod:`rnnstream.runtime.wal`)."""
        self._settle_inflight()
        if self._log is None:
            self.pool.save_state(path)
            return
        if self._log_broken is not None:
            raise OSError(f"the log cannot be written ({self._log_broken}); the snapshot is "
                          "left as it was, so a restart recovers every answered request")
        try:  # what was appended is durable, and its answers go out, before the snapshot
            if self._group is not None:
                self._group.flush()
            else:
                self._log.sync()
        except OSError as exc:
            self._break_log(exc)
            raise
        self._save_completed(path)
        try:
            if self._group is not None:
                with self._group.locked:
                    self._log.reset(self._log_header(file_digest(path)))
            else:
                self._log.reset(self._log_header(file_digest(path)))
        except OSError as exc:  # the snapshot is newer than the log: later records would be
            self._break_log(exc)  # dropped as stale on recovery, so nothing more is accepted
            raise

    def _save_completed(self, path: str) -> None:
        """Save the states as the log sees them: a sequence in the middle of a multi-point
        request is saved as it was before the request (which is logged whole later)."""
        pool, swapped = self.pool, []
        for key, before in self._before.items():
            swapped.append((key, self._snapshot_of(key), pool.last_seen(key)))
            if before is None:
                pool.remove(key)
            else:
                pool.set_state(key, before[0])
                if before[1] is not None:
                    pool.set_live(key, before[1])
        try:
            pool.save_state(path)
        finally:
            for key, (state, live), seen in swapped:
                if key in pool:
                    pool.set_state(key, state)
                else:
                    pool.add(key, state)
                    pool.touch([key], at=seen)  # put back as it was, idle clock included
                if live is not None:
                    pool.set_live(key, live)

    def _checkpoint_now(self) -> None:
        """The log outgrew CHECKPOINT_BYTES: checkpoint between rounds."""
        if not self._state_path or self._log is None or self._log_broken is not None:
            return
        try:
            self.save(self._state_path)
        except (OSError, RnnStreamError) as exc:
            log.error("checkpoint failed", extra={"event": "save_failed", "model": self.name,
                                                  "path": self._state_path, "error": str(exc)})

    def _log_header(self, base: str) -> dict[str, Any]:
        return {"kind": LOG_KIND, "fingerprint": self.pool.fingerprint, "base": base,
                "model": self.name}

    def load(self, path: str, durability: str = "snapshot") -> int:
        """Continue the sequences of a snapshot written by :meth:`save`, and the records of
        its log (``path + ".wal"``) when there is one; returns their count. With
        ``durability="log"``, keep logging from here (every answer waits for its record)."""
        if durability not in DURABILITY:
            raise ConfigError(f"durability {durability!r}; expected one of {DURABILITY}")
        self._state_path, self._log_path = path, log_path(path)
        if os.path.exists(path):
            self.pool.load_state(path)
        digest = file_digest(path)
        if os.path.exists(self._log_path):
            contents = read_log(self._log_path, LOG_KIND, self.pool.fingerprint, digest)
            points = 0
            if not contents.stale:
                points = replay(self.pool, contents.records, self.n_features, self._log_path)
            log.info("log read", extra={"event": "log_replayed", "model": self.name,
                                        "path": self._log_path,
                                        "records": len(contents.records),
                                        "points": points, "stale": contents.stale,
                                        "dropped_bytes": contents.dropped})
            if contents.records and not contents.stale:  # the recovered states become
                # the snapshot that the new log continues
                self.pool.save_state(path)
                digest = file_digest(path)
        if durability == "log":
            self._log = LogWriter.create(self._log_path, self._log_header(digest),
                                         preallocate=LOG_PREALLOCATE)
        elif os.path.exists(self._log_path):
            os.remove(self._log_path)  # its records are in the snapshot now
        self.pool.touch()  # every restored sequence is active as of the restart
        return len(self.pool)

    def close(self) -> None:
        self._settle_inflight()
        if self._stepper is not None:
            self._stepper.shutdown()
            self._stepper = None
        if self._group is not None:
            self._group.close()
            self._group = None
        if self._log is not None:
            self._log.close()


class _InProgress:
    """The sequences eviction spares: a request queued, or held by a block in progress."""

    __slots__ = ("_held", "_queues")

    def __init__(self, queues: dict[Hashable, Any], held: dict[Hashable, Any]) -> None:
        self._queues, self._held = queues, held

    def __contains__(self, key: object) -> bool:
        return key in self._queues or key in self._held


def log_path(state: str) -> str:
    """The log beside a snapshot: ``sequences.npz`` -> ``sequences.npz.wal``."""
    return state + ".wal"


def _put(gather: _Gather, at: tuple[Any, Any], lower: np.ndarray, upper: np.ndarray) -> None:
    """Write float64 bounds into the request's FP32 outputs (numpy's cast: nearest float32; a
    bound beyond the float32 range is +-inf, as an interval that wide means)."""
    if gather.lower is not None and gather.upper is not None:
        with np.errstate(over="ignore"):
            gather.lower[at] = lower
            gather.upper[at] = upper
