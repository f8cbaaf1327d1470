"""Prometheus metrics in the text exposition format (version 0.0.4), written by hand.

A handful of counters and histograms does not justify a dependency: each type below renders
itself as ``# HELP``/``# TYPE`` lines and samples, and :meth:`Metrics.render` joins them. Every
update happens on the event loop thread, so plain integers suffice (no locks).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sequences import LiveSummary

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


def _exact(value: float) -> str:
    """A float as Prometheus reads it, every digit kept (``repr``; NaN, +Inf, -Inf)."""
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class LiveScoreGauges:
    """The live scores of each model with ``--coverage``, pooled over its live sequences per
    target; ``read`` is called once per scrape (O(live sequences), nothing per request)."""

    def __init__(self, read: Callable[[], Mapping[str, LiveSummary | None]]) -> None:
        self.read = read

    def lines(self) -> Iterable[str]:
        summaries = {m: s for m, s in sorted(self.read().items()) if s is not None}
        g = PREFIX
        # name, help, (summary, target index) -> [(extra label values, value)]
        specs: list[tuple[str, str, Callable[[LiveSummary, int],
                                             list[tuple[tuple[str, ...], float]]]]] = [
            ("live_scored_points", "Points scored against the model's predictions, over the "
             "live sequences.", lambda s, j: [((), s.count[j])]),
            ("live_mae", "Mean absolute error over every scored point of the live sequences, "
             "per forecaster (model, persistence, seasonal with a season).",
             lambda s, j: [((f,), v[j]) for f, v in s.mae.items()]),
            ("live_mae_ratio", "Model MAE / persistence MAE (below 1: the model beats "
             "persistence).", lambda s, j: [((), _ratio(s.mae["model"][j],
                                                         s.mae["persistence"][j]))]),
            ("interval_scored", "Prediction intervals scored, over the live sequences.",
             lambda s, j: [((), s.tracked[j])]),
            ("interval_coverage", "Share of the scored intervals that held the value "
             "(realised coverage; NaN before any).",
             lambda s, j: [((), _ratio(s.covered[j], s.tracked[j]))]),
        ]
        for name, help_text, values in specs:
            yield f"# HELP {g}{name} {help_text}"
            yield f"# TYPE {g}{name} gauge"
            for model, s in summaries.items():
                for j, target in enumerate(s.targets):
                    for extra, v in values(s, j):
                        names = ("model", "target", "forecaster")[:2 + len(extra)]
                        labels = _labels(names, (model, target, *extra))
                        yield f"{g}{name}{labels} {_exact(v)}"
        yield f"# HELP {g}interval_coverage_asked The coverage the intervals aim at (--coverage)."
        yield f"# TYPE {g}interval_coverage_asked gauge"
        for model, s in summaries.items():
            yield f"{g}interval_coverage_asked{_labels(('model',), (model,))} {_exact(s.coverage)}"


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b and not math.isnan(float(b)) else math.nan


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
        self.log_sync_seconds = Histogram("log_sync_seconds", "One fdatasync of the log "
                                          "(--durability log); it may cover several rounds.",
                                          _SECONDS)
        self.live: Gauge | None = None
        self.scores: LiveScoreGauges | None = None

    def watch_live(self, read: Callable[[], dict[tuple[str, ...], float]]) -> None:
        self.live = Gauge("live_sequences", "Sequences holding state.", ("model",), read)

    def watch_scores(self, read: Callable[[], Mapping[str, LiveSummary | None]]) -> None:
        """Export the live scores (``--coverage``): ``read`` gives model -> LiveSummary."""
        self.scores = LiveScoreGauges(read)

    def render(self) -> str:
        parts: list[Iterable[str]] = [
            self.requests.lines(), self.errors.lines(), self.predictions.lines(),
            self.sequences_started.lines(), self.sequences_evicted.lines(),
            self.batch_size.lines(), self.queue_seconds.lines(), self.step_seconds.lines(),
            self.request_seconds.lines()]
        if self.log_sync_seconds.count:
            parts.append(self.log_sync_seconds.lines())
        if self.live is not None:
            parts.append(self.live.lines())
        if self.scores is not None:
            parts.append(self.scores.lines())
        return "\n".join(line for p in parts for line in p) + "\n"
