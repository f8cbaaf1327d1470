"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

A handful of counters and histograms does not justify a dependency: each type below renders
itself as ``# HELP``/``# TYPE`` lines and samples, and :meth:`Metrics.render` joins them. Every
update happens on the event loop thread, so plain integers suffice (no locks).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

__all__ = ["Counter", "Histogram", "Metrics"]

PREFIX = "rnnstream_serve_"


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Counter:
    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.label_names = PREFIX + name, help_text, labels
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *labels: str, by: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + by

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, v in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {v:g}"


class LabelledCounter(Counter):
    """``inc(model, n)``: the count as a positional argument, for readability at call sites."""

    def inc(self, model: str, by: float = 1) -> None:  # type: ignore[override]
        super().inc(model, by=by)


class Histogram:
    def __init__(self, name: str, help_text: str, buckets: list[float]) -> None:
        self.name, self.help, self.buckets = PREFIX + name, help_text, sorted(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        total = 0
        for bound, c in zip(self.buckets, self.counts, strict=False):
            total += c
            yield f'{self.name}_bucket{{le="{bound:g}"}} {total}'
        yield f'{self.name}_bucket{{le="+Inf"}} {self.count}'
        yield f"{self.name}_sum {self.sum:.9g}"
        yield f"{self.name}_count {self.count}"


class Gauge:
    """A value read when the metrics are rendered (label values -> number)."""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...],
                 read: Callable[[], dict[tuple[str, ...], float]]) -> None:
        self.name, self.help, self.label_names, self.read = PREFIX + name, help_text, labels, read

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for labels, v in sorted(self.read().items()):
            yield f"{self.name}{_labels(self.label_names, labels)} {v:g}"


# 10 µs steps up to 200 µs (where a one-point request lands), then coarser
_SECONDS = [i * 1e-5 for i in range(1, 21)] + [3e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2,
                                                5e-2, 0.1, 0.25, 0.5, 1.0]


class Metrics:
    """Every metric the server exports; see docs/serving.md for their meaning."""

    def __init__(self) -> None:
        self.requests = Counter("requests_total", "Inference requests received.",
                                ("model", "protocol"))
        self.errors = Counter("request_errors_total", "Requests refused or failed, by kind.",
                              ("model", "protocol", "kind"))
        self.predictions = Counter("predictions_total", "Stream steps computed (points).",
                                   ("model",))
        self.sequences_started = LabelledCounter("sequences_started_total",
                                                 "Sequences started or restarted.", ("model",))
        self.sequences_evicted = LabelledCounter("sequences_evicted_total",
                                                 "Sequences evicted for idleness.", ("model",))
        self.batch_size = Histogram("batch_size", "Sequences advanced by one pool step.",
                                    [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096])
        self.queue_seconds = Histogram("queue_seconds", "Time from a request's arrival to its "
                                       "first step.", _SECONDS)
        self.step_seconds = Histogram("step_seconds", "Duration of one pool step (all "
                                      "sequences of a batch).", _SECONDS)
        self.request_seconds = Histogram("request_seconds", "Server-side time of an infer "
                                         "request, from parsed body to encoded answer.",
                                         _SECONDS)
        self.live: Gauge | None = None

    def watch_live(self, read: Callable[[], dict[tuple[str, ...], float]]) -> None:
        self.live = Gauge("live_sequences", "Sequences holding state.", ("model",), read)

    def render(self) -> str:
        parts: list[Iterable[str]] = [
            self.requests.lines(), self.errors.lines(), self.predictions.lines(),
            self.sequences_started.lines(), self.sequences_evicted.lines(),
            self.batch_size.lines(), self.queue_seconds.lines(), self.step_seconds.lines(),
            self.request_seconds.lines()]
        if self.live is not None:
            parts.append(self.live.lines())
        return "\n".join(line for p in parts for line in p) + "\n"
