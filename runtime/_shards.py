"""A pool's batch on several cores: contiguous blocks of rows, one worker thread per block.

:func:`shards` cuts ``n`` rows into pieces (each at most one cache-sized chunk) and hands each
thread a contiguous run of them; :class:`Workers` runs one task per thread, the caller's own
thread taking the first, and raises the first failure only after every task has returned (the
pool writes state back only after that, so a failure anywhere leaves every stream unchanged).

onnxruntime releases the GIL inside ``run()`` and ``run_with_iobinding()``, so the threads run
the model in parallel; every thread calls the one shared session (its ``intra_op_num_threads``
stays 1: the threads here are the parallelism, and no global setting is touched). A row's result
does not depend on which piece it is in (checked bit for bit by the tests), so any number of
threads gives the same numbers as one.

Threads are started on the first call that uses them, are daemons (they never keep the
interpreter alive), and stop on :meth:`Workers.close` -- which :class:`StreamPool.close` calls,
and a finalizer calls when the pool is collected unclosed.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence

__all__ = ["Workers", "default_threads", "shards"]

Piece = tuple[int, int]  # rows [start, stop)


def default_threads(cap: int) -> int:
    """The cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` where
    there is none), at most ``cap``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(1, min(cap, cores))


def shards(n: int, chunk: int, threads: int, min_rows: int, lead: int = 0
           ) -> list[list[Piece]]:
    """``n`` rows as one list of pieces per thread: contiguous, in row order, each piece at most
    ``chunk`` rows, evenly sized within a thread. Each thread gets at least ``min_rows`` rows,
    so a small batch stays one list (one thread, no hop). The first list (the caller's thread,
    which starts at once and does not wait to be woken at the end) gets ``lead`` rows more than
    an even share, spread evenly over the workers' shares: with ``lead`` rows' worth of hand-off
    time, every thread then finishes together."""
    used = max(1, min(threads, n // max(1, min_rows)))
    if used == 1:
        sizes = [n]
    else:
        lead = min(lead, n // used)  # a worker keeps most of its share
        first = (n + lead * (used - 1)) // used
        sizes = [first] + [(n - first) * (t + 1) // (used - 1) - (n - first) * t // (used - 1)
                           for t in range(used - 1)]
    groups, start = [], 0
    for size in sizes:
        per = max(1, -(-size // chunk))
        bounds = [start + i * size // per for i in range(per + 1)]
        groups.append([(bounds[i], bounds[i + 1]) for i in range(per)])
        start += size
    return groups


class Workers:
    """``threads - 1`` worker threads and the caller's: :meth:`run` runs one task on each."""

    def __init__(self, threads: int, name: str = "rnnstream-pool") -> None:
        self.threads = threads
        self._name = name
        self._inboxes: list[queue.SimpleQueue[Callable[[], None] | None]] = []
        self._outboxes: list[queue.SimpleQueue[BaseException | None]] = []
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def running(self) -> int:
        """Threads a large step runs on now: ``threads``, or 1 once closed."""
        return 1 if self._closed else self.threads

    def run(self, tasks: Sequence[Callable[[], None]]) -> None:
        """Run ``tasks[0]`` here and each other task on a worker; return when all have
        returned; raise the first task's exception (by position) if any raised."""
        if len(tasks) == 1 or self._closed:  # one block, or closed: this thread does it all
            for task in tasks:
                task()
            return
        if len(tasks) > self.threads:
            raise ValueError(f"{len(tasks)} tasks for {self.threads} threads")
        self._start()
        for inbox, task in zip(self._inboxes, tasks[1:], strict=False):
            inbox.put(task)
        errors: list[BaseException | None] = []
        try:
            tasks[0]()
            errors.append(None)
        except BaseException as exc:  # the workers still run: wait for them before raising
            errors.append(exc)
        errors.extend(out.get() for out in self._outboxes[:len(tasks) - 1])
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first

    def _start(self) -> None:
        if self._threads:
            return
        for i in range(1, self.threads):
            inbox: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
            outbox: queue.SimpleQueue[BaseException | None] = queue.SimpleQueue()
            thread = threading.Thread(target=_serve, args=(inbox, outbox), daemon=True,
                                      name=f"{self._name}-{i}")
            thread.start()
            self._inboxes.append(inbox)
            self._outboxes.append(outbox)
            self._threads.append(thread)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the threads (each finishes the task it holds first); later runs use the
        caller's thread alone."""
        self._closed = True
        threads, self._threads = self._threads, []
        for inbox in self._inboxes:
            inbox.put(None)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout)
        self._inboxes, self._outboxes = [], []

    @property
    def alive(self) -> int:
        """Worker threads running now (the caller's not counted)."""
        return sum(t.is_alive() for t in self._threads)


def _serve(inbox: queue.SimpleQueue[Callable[[], None] | None],
           outbox: queue.SimpleQueue[BaseException | None]) -> None:
    """A worker's loop: run each task it is given, report None or the exception raised."""
    while True:
        task = inbox.get()
        if task is None:
            return
        try:
            task()
        except BaseException as exc:  # handed to the caller, which raises it
            outbox.put(exc)
        else:
            outbox.put(None)
        del task  # drop the references (the plan's buffers) before waiting again
