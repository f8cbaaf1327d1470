"""`rnnstream stream`: one point per input line in, one prediction per line out.

Needs only the base install (numpy + onnxruntime): it imports rnnstream.runtime and nothing
that pulls in torch or onnx.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import time
import zlib
from collections.abc import Iterator
from typing import Any, TextIO

import numpy as np

from ._common import add_live_args, live_config

DESCRIPTION = """\
Stream predictions: read one data point per line, print one prediction per line as soon as
it is computed (flushed, so it works inside a pipe).

Input lines are CSV (comma-separated numbers; a first line that is not numeric is a header
naming the features) or JSON lines (a number, a list, or an object of feature -> value).
Blank lines are skipped. On a bad line the command reports 'line N: <problem>' on stderr,
saves the state reached by the last good line (with --state) and exits with status 1.
"""

EPILOG = """\
examples:
  printf '0.1\\n0.2\\n0.3\\n' | rnnstream stream model.onnx
  rnnstream stream model.onnx --input prices.csv --state run.npz   # resumes next time
  tail -f ticks.jsonl | rnnstream stream model.onnx --key ticker --state pool.npz

  rnnstream stream model.onnx --input prices.csv --coverage 0.9       # prediction,lower,upper

  crash safety (--state FILE, --durability log, the default): rerun the same command after a
  crash and it goes on where it stopped: FILE plus FILE.wal hold every line whose prediction
  was printed, and an --input file is skipped to the first line not yet consumed (a line is
  checked against what was consumed; another file is refused). Standard input cannot be
  skipped: stderr says how many lines earlier runs consumed, and every line read is new.

  with --key, each line carries a stream key (a CSV column or JSON field); every key is its own
  stream (new keys are added on first sight) and output lines read 'key,prediction...'.

live accuracy and intervals (--coverage C):
  each line reads 'prediction,lower,upper' (one target) or 'a,lower_a,upper_a,b,lower_b,...'
  (the model's targets in order), after 'key,' with --key. The interval is calibrated online,
  per stream and target, from the stream's own errors (quantile tracking of errors scaled by
  the recent MAE, Angelopoulos, Candes and Tibshirani 2023), starting from the validation
  quantiles stored at training: usable from the first point, widening at once when the errors
  grow, and about C of the values it was scored on fall inside it. Bounds are 'inf'
  while a stream has no calibration yet. Every point is also scored against the prediction made
  for it: the model, persistence and seasonal naive (the season the model was trained with, or
  --season), over all time and recently. A summary goes to stderr at the end, and on SIGUSR1
  ('kill -USR1 PID') between lines. With --state the scores and the calibration are saved and
  resumed with the stream's state.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stream", help="stream predictions from a model, one line per point",
                       description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the .onnx model")
    p.add_argument("--input", default="-", metavar="FILE",
                   help="input file, or - for standard input (default)")
    p.add_argument("--state", metavar="FILE",
                   help="state snapshot (.npz): resumed from when it exists, saved atomically "
                        "at the end, on SIGTERM/Ctrl-C, and every --save-every seconds; with "
                        "--key it holds every stream")
    p.add_argument("--save-every", type=float, default=10.0, metavar="SECONDS",
                   help="with --state, also save after the line being processed once this "
                        "long has passed since the last save, so a crash loses at most that "
                        "much (default: 10; 0 saves after every line)")
    p.add_argument("--durability", choices=["log", "snapshot"], default="log",
                   help="with --state: 'log' (default) writes every line's point to FILE.wal "
                        "(fsynced) right after its prediction is printed and records how many "
                        "input lines were consumed, so after a crash (even SIGKILL) the same "
                        "command on the same --input file continues after the last prediction "
                        "printed; 'snapshot' keeps only the periodic snapshots")
    p.add_argument("--key", metavar="COLUMN",
                   help="column or JSON field naming the stream of each line (many streams)")
    add_live_args(p, "print a prediction interval holding about C of the values (e.g. 0.9) "
                     "after each prediction, and score every stream live (see below)")


class LineError(Exception):
    """A line that cannot be parsed."""


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise LineError(f"{text.strip()!r} is not a number") from None


class LineParser:
    """Turns lines into (key, point); the first CSV line may be a header."""

    def __init__(self, key: str | None, features: list[str] | None = None) -> None:
        self.key = key
        self.features = features  # the model's feature names, when it has a contract
        self.header: list[str] | None = None
        self.columns: list[int] | None = None  # header positions of the features, in order
        self.first = True

    def parse(self, line: str) -> tuple[Any, Any] | None:
        """(key, point) for a data line; None for a header or blank line."""
        text = line.strip()
        first, self.first = self.first, False
        if not text:
            self.first = first
            return None
        if text[0] in "[{":
            return self._json(text)
        cells = _csv_cells(text)
        if first and not _all_numeric(cells):
            self._set_header(cells)
            return None
        return self._csv(cells)

    def nameless(self, exc: Exception) -> str:
        """What a refused point's message should add for a model without feature names."""
        from rnnstream.runtime import InputError

        if self.features or self.header is None or not isinstance(exc, InputError):
            return ""
        names = [c for c in self.header if c != self.key]
        return (f" (the model has no feature names, so the header's columns {names} are read "
                "in order; give it as many columns as the model takes)")

    def _set_header(self, cells: list[str]) -> None:
        """A header names the columns: the model's features are picked out by name (in any
        order), and other columns (a date, an id) are ignored."""
        self.header = cells
        if self.key is not None and self.key not in cells and not self.key.isdigit():
            raise LineError(f"--key {self.key!r} is not a column of the header {cells}")
        if self.features and any(f in cells for f in self.features):
            missing = [f for f in self.features if f not in cells]
            if missing:
                raise LineError(f"the header {cells} has no column for the model's feature(s) "
                                f"{missing}; the model reads {self.features}")
            self.columns = [cells.index(f) for f in self.features]

    def _json(self, text: str) -> tuple[Any, Any]:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise LineError(f"not valid JSON ({exc})") from None
        key = None
        if self.key is not None:
            if not isinstance(value, dict) or self.key not in value:
                raise LineError(f"expected a JSON object with the key field {self.key!r}")
            value = dict(value)
            key = value.pop(self.key)
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise LineError(f"key field {self.key!r} is {key!r}; expected a string or "
                                "integer")
        return key, self._pick(value)

    def _pick(self, value: Any) -> Any:
        """An object's features by name, in the model's order; other fields (a timestamp, an
        id) are ignored, as other CSV columns are. A missing feature is an error. A model
        without feature names (no contract) reads the object's values in order."""
        if not isinstance(value, dict):
            return value
        if not self.features:
            values = list(value.values())
            return values[0] if len(values) == 1 else values
        missing = [f for f in self.features if f not in value]
        if missing:
            raise LineError(f"no field for the model's feature(s) {missing} in "
                            f"{sorted(value)}; the model reads {self.features}")
        picked = [value[f] for f in self.features]
        return picked[0] if len(picked) == 1 else picked

    def _csv(self, cells: list[str]) -> tuple[Any, Any]:
        key = None
        if self.columns is not None:  # a header named the features: take those, by name
            header = self.header or []
            if len(cells) != len(header):
                raise LineError(f"{len(cells)} columns, but the header has "
                                f"{len(header)}: {header}")
            if self.key is not None:
                key = cells[header.index(self.key) if self.key in header else int(self.key)]
            values = [_number(cells[i]) for i in self.columns]
            return key, values[0] if len(values) == 1 else values
        if self.key is not None:
            index = (self.header.index(self.key) if self.header and self.key in self.header
                     else int(self.key) if self.key.isdigit() else None)
            if index is None or index >= len(cells):
                raise LineError(f"no column {self.key!r} in this line")
            key = cells[index]
            names = [n for i, n in enumerate(self.header or []) if i != index]
            cells = [c for i, c in enumerate(cells) if i != index]
        else:
            names = self.header or []
        values = [_number(c) for c in cells]
        if self.header is not None and not self.features:  # no names to match: in order
            if len(values) != len(names):
                raise LineError(f"{len(values)} values for the {len(names)} header columns "
                                f"{names}")
            return key, values[0] if len(values) == 1 else values
        if self.header is not None:
            if len(values) != len(names):
                raise LineError(f"{len(values)} values for the {len(names)} header columns "
                                f"{names}")
            return key, dict(zip(names, values, strict=True))
        return key, values[0] if len(values) == 1 else values


def _csv_cells(text: str) -> list[str]:
    """One CSV line's cells, by the csv module (as training's load_csv reads files): a quoted
    field may hold a comma (``"Smith, J",1.5``)."""
    try:
        cells = next(csv.reader([text]))
    except csv.Error as exc:
        raise LineError(f"not a valid CSV line ({exc})") from None
    return [c.strip() for c in cells]


def _all_numeric(cells: list[str]) -> bool:
    try:
        for c in cells:
            float(c)
    except ValueError:
        return False
    return True


def _format(y: Any) -> str:
    if isinstance(y, float):
        return format(y, ".9g")
    return ",".join(format(float(v), ".9g") for v in y)


def _with_bounds(y: Any, lower: Any, upper: Any) -> str:
    """'y,lower,upper' per target, the targets in order."""
    ys, lo, hi = (np.atleast_1d(np.asarray(v, np.float64)).tolist() for v in (y, lower, upper))
    return _format([v for group in zip(ys, lo, hi, strict=True) for v in group])


def summary(target: Any) -> str:
    """The live accuracy and coverage of every stream, per target, as a small table."""
    from rnnstream.runtime import Predictor

    if isinstance(target, Predictor):
        acc = {f: {k: np.atleast_1d(np.asarray(v, np.float64))[None] for k, v in m.items()}
               for f, m in target.accuracy().items()}
        share, scored = (np.atleast_1d(np.asarray(v, np.float64))[None]
                         for v in target.realised_coverage())
        lo, hi = (np.atleast_1d(np.asarray(v, np.float64))[None] for v in target.interval())
        streams = 1
    else:
        keys = target.keys()
        if not keys:
            return "live scores: no stream has seen a point yet"
        acc = target.accuracy()
        share, scored = target.realised_coverage()
        lo, hi = target.interval(keys)
        streams = len(keys)
    live = target.live
    names = target.targets or []
    rows = [("target", "points", "model MAE", "persistence MAE", "seasonal MAE",
             "model/persist.", "recent model MAE", f"coverage (asked {live.coverage:g})",
             "width now")]  # MAEs pooled over every scored point; recent: mean over streams
    with np.errstate(invalid="ignore", divide="ignore"):
        for j, name in enumerate(names):
            def pooled(f: str, metric: str, j: int = j) -> float:
                count = acc[f]["count"][:, j].astype(np.float64)
                value = np.nan_to_num(acc[f][metric][:, j]) * count
                return float(value.sum() / count.sum()) if count.sum() else float("nan")

            n = int(acc["model"]["count"][:, j].sum())
            model, persist = pooled("model", "mae"), pooled("persistence", "mae")
            k = scored[:, j].astype(np.float64)
            realised = float((np.nan_to_num(share[:, j]) * k).sum() / k.sum()) if k.sum() \
                else float("nan")
            span = hi[:, j] - lo[:, j]  # NaN: no prediction yet; inf: not calibrated yet
            width = (float(np.nanmedian(span)) if not np.isnan(span).all() else float("nan"))
            recent = acc["model"]["recent_mae"][:, j]  # each stream's own recent past
            rows.append((name, str(n), _g(model), _g(persist),
                         _g(pooled("seasonal", "mae")), _g(model / persist),
                         _g(float(np.nanmean(recent)) if not np.isnan(recent).all()
                            else float("nan")),
                         f"{realised:.3f} of {int(k.sum())}" if k.sum() else "-", _g(width)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"live scores ({streams} stream{'s' if streams != 1 else ''}; MAE pooled over "
             "streams; seasonal: " + (f"season {live.season}" if live.season else "none") + ")"]
    lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _g(value: float) -> str:
    return "-" if value != value else format(value, ".4g")


def _lines(source: str) -> Iterator[str]:
    if source == "-":
        yield from sys.stdin
        return
    # utf-8-sig: spreadsheets often write a byte-order mark before the header (as load_csv)
    with open(source, encoding="utf-8-sig") as f:
        yield from f


def run(args: argparse.Namespace) -> int:
    from rnnstream.runtime import Predictor, RnnStreamError, StreamPool

    target: Predictor | StreamPool
    live = live_config(args, "stream")
    if live is None:
        return 2
    try:
        if args.key is not None:
            target = StreamPool(args.model, auto_add=True, live=live)
        else:
            target = Predictor(args.model, live=live)
        if args.state and os.path.exists(args.state):
            target.load_state(args.state)
        journal = _Journal.recover(target, args) if args.state else None
    except RnnStreamError as exc:
        print(f"error: {with_wrap_hint(str(exc), args.model)}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot open the log beside {args.state}: {exc}", file=sys.stderr)
        return 1
    if target.contract is None:
        print(f"note: {args.model} has no rnnstream contract: streaming it as a foreign model "
              f"(state pairs {target.state_pairs}, no feature names: each line's values are "
              f"read in order). {_wrap_hint(args.model)}", file=sys.stderr)
    saver = _Saver(target, args.state, args.save_every, journal)
    report = ((lambda: print(summary(target), file=sys.stderr, flush=True)) if live.enabled
              else None)
    with _StopSignals(report) as stop:
        try:
            code = _serve(target, args, sys.stdout, saver, stop, journal)
        except _Stop as exc:  # SIGTERM / Ctrl-C between lines: save what was printed, exit
            code = 128 + exc.signum
    if report is not None:
        report()
    if not saver.save():
        return 1
    return code


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _StopSignals:
    """SIGTERM and SIGINT stop the stream *between* lines: a line being processed is finished
    (its prediction printed, its state kept) before the stop, so the saved state always matches
    exactly the lines whose predictions were printed. While waiting for input, they stop at once.
    """

    def __init__(self, report: Any = None) -> None:
        self.busy = False
        self.pending: int | None = None
        self.report = report  # SIGUSR1: print the live summary (between lines)
        self.report_wanted = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
            usr1 = getattr(signal, "SIGUSR1", None)  # not on Windows
            if self.report is not None and usr1 is not None:
                self._old[usr1] = signal.signal(usr1, self._report)
        return self

    def _report(self, signum: int, frame: Any) -> None:
        if self.busy:
            self.report_wanted = True
        elif self.report is not None:
            self.report()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.busy:
            self.pending = signum
        else:
            raise _Stop(signum)

    def line_done(self) -> None:
        self.busy = False
        if self.report_wanted and self.report is not None:
            self.report_wanted = False
            self.report()
        if self.pending is not None:
            raise _Stop(self.pending)


SYNC_SECONDS = 0.005  # --durability log: the longest a line's record waits for its fsync


class _Journal:
    """``--durability log``: FILE.wal beside the ``--state`` snapshot (the framing of
    :mod:`rnnstream.runtime.wal`). Each data line's point is appended and fsynced right after
    its prediction is printed, with the input consumed so far (lines, bytes, CRC32 of those
    bytes); a checkpoint (every save) writes the snapshot, then empties the log, whose header
    keeps the position. Recovery: the snapshot, the log's points stepped again (nothing is
    printed), and an ``--input`` file skipped to the position (its lines checked against the
    CRC32).

    Printing first and logging second means a kill between the two (microseconds) makes the
    rerun print that one prediction again, the same value; the other order would skip a
    prediction never printed. Each record is written to the operating system before the next
    line is read, which is all a killed process needs (SIGKILL, a crash); the fsync that a
    power cut needs is shared (group commit): at most SYNC_SECONDS of lines wait for it, so a
    slow stream syncs every line and a fast one every few milliseconds. A power cut can lose
    those lines' records, never skip them: the rerun prints their predictions again."""

    KIND = "stream"

    def __init__(self, target: Any, state: str, keyed: bool) -> None:
        self.target, self.state, self.keyed = target, state, keyed
        self.path = state + ".wal"
        self.lines = self.bytes = self.crc = 0  # input consumed: what a rerun skips
        self.writer: Any = None  # rnnstream.runtime.wal.LogWriter, --durability log
        self.synced = 0.0  # when the log was last fsynced

    @classmethod
    def recover(cls, target: Any, args: argparse.Namespace) -> _Journal:
        """Replay FILE.wal onto the restored target; keep logging (``--durability log``) or
        fold the log into the snapshot and remove it (``snapshot``)."""
        from rnnstream.runtime.wal import LogWriter, file_digest, read_log

        journal = cls(target, args.state, args.key is not None)
        digest = file_digest(args.state)
        contents = None
        if os.path.exists(journal.path):
            contents = read_log(journal.path, cls.KIND, target.fingerprint, digest)
            journal._replay(contents.header, contents.records, contents.stale)
        if args.durability == "snapshot":
            if contents is not None:
                if contents.records and not contents.stale:
                    target.save_state(args.state)
                os.remove(journal.path)
        elif contents is not None and not contents.stale:
            journal.writer = LogWriter.open(journal.path, contents)
        else:
            journal.writer = LogWriter.create(journal.path, journal.header(digest))
        return journal

    def _replay(self, header: dict, records: list[bytes], stale: bool) -> None:
        from rnnstream.runtime import StateError

        if bool(header.get("keyed")) != self.keyed:
            raise StateError(f"{self.path}: the log was written "
                             f"{'with' if header.get('keyed') else 'without'} --key; run the "
                             "command as it was")
        self._position(header)
        for i, record in enumerate(records):
            try:
                doc = json.loads(record)
            except ValueError as exc:
                raise StateError(f"{self.path}: record {i + 1} is not JSON ({exc})") from exc
            if not isinstance(doc, dict) or "p" not in doc:
                raise StateError(f"{self.path}: record {i + 1} holds no point")
            if not stale:  # a stale log's points are in the snapshot already
                self._apply(doc.get("k"), doc["p"])
            self._position(doc)

    def _position(self, doc: dict) -> None:
        from rnnstream.runtime import StateError

        n, b, c = doc.get("n", 0), doc.get("b", 0), doc.get("c", 0)
        if not all(type(v) is int and v >= 0 for v in (n, b, c)):
            raise StateError(f"{self.path}: a position that is not a count of lines and bytes")
        self.lines, self.bytes, self.crc = n, b, c

    def _apply(self, key: Any, point: Any) -> None:
        if self.keyed:
            self.target.step_many([key], [_as_row(point, self.target)])
        else:
            self.target.step(point)

    def header(self, digest: str) -> dict[str, Any]:
        return {"kind": self.KIND, "fingerprint": self.target.fingerprint, "base": digest,
                "keyed": self.keyed, "n": self.lines, "b": self.bytes, "c": self.crc}

    def consume(self, line: str) -> None:
        data = line.encode()
        self.lines += 1
        self.bytes += len(data)
        self.crc = zlib.crc32(data, self.crc)

    def record(self, key: Any, point: Any) -> None:
        if self.writer is None:
            return
        try:
            self.writer.append(json.dumps({"n": self.lines, "b": self.bytes, "c": self.crc,
                                           "k": key, "p": point}).encode())
            now = time.monotonic()
            if now - self.synced >= SYNC_SECONDS:
                self.writer.sync()
                self.synced = now
        except OSError as exc:
            print(f"error: cannot write the log {self.path}: {exc}", file=sys.stderr)
            raise _SaveFailed from exc

    def checkpoint(self) -> None:
        """After the snapshot was saved: empty the log (its header keeps the position)."""
        from rnnstream.runtime.wal import file_digest

        if self.writer is not None:
            self.writer.reset(self.header(file_digest(self.state)))
            self.synced = time.monotonic()

    def skip(self, lines: Iterator[str], parser: LineParser, source: str) -> None:
        """Skip what earlier runs consumed of an --input file (the parser still reads a
        header among those lines); the lines must be the ones consumed."""
        crc = 0
        for n in range(1, self.lines + 1):
            line = next(lines, None)
            if line is None:
                raise LineError(f"{source} has {n - 1} lines, but the state {self.state} "
                                f"consumed {self.lines}: not the input it was streaming")
            crc = zlib.crc32(line.encode(), crc)
            parser.parse(line)
        if crc != self.crc:
            raise LineError(f"the first {self.lines} lines of {source} are not the ones the "
                            f"state {self.state} consumed (CRC32 differs): not the input it "
                            "was streaming; give it that input, or another --state")


class _Saver:
    """Atomic state saves: at the end, on a stop, and every ``every`` seconds of streaming."""

    def __init__(self, target: Any, path: str | None, every: float,
                 journal: _Journal | None = None) -> None:
        self.target, self.path, self.every = target, path, max(0.0, every)
        self.journal = journal
        self.last = time.monotonic()

    def maybe(self) -> None:
        if self.path and time.monotonic() - self.last >= self.every and not self.save():
            raise _SaveFailed

    def save(self) -> bool:
        if not self.path:
            return True
        from rnnstream.runtime import RnnStreamError

        try:
            self.target.save_state(self.path)
            if self.journal is not None:
                self.journal.checkpoint()
        except (RnnStreamError, OSError) as exc:
            print(f"error: cannot save the state to {self.path}: {exc}", file=sys.stderr)
            return False
        self.last = time.monotonic()
        return True


class _SaveFailed(Exception):
    """A periodic save failed (already reported)."""


def _serve(target: Any, args: argparse.Namespace, out: TextIO, saver: _Saver,
           stop: _StopSignals, journal: _Journal | None = None) -> int:
    from rnnstream.runtime import RnnStreamError

    parser = LineParser(args.key, _features(target))
    lineno = skipped = 0
    try:
        lines = _lines(args.input)
        if journal is not None and journal.lines:
            skipped = journal.lines
            if args.input == "-":
                print(f"note: the state {args.state} has consumed {skipped} input lines in "
                      "earlier runs; standard input cannot be skipped, so every line read now "
                      "is new", file=sys.stderr)
            else:
                print(f"note: resuming after line {skipped} of {args.input} (consumed by "
                      "earlier runs)", file=sys.stderr)
                try:
                    journal.skip(lines, parser, args.input)
                except LineError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    return 1
        for lineno, line in enumerate(lines, start=skipped + 1):  # noqa: B007
            stop.busy = True
            parsed = parser.parse(line)
            if parsed is None and journal is not None:
                journal.consume(line)
            if parsed is not None:
                key, point = parsed
                if args.key is None:
                    y = target.step(point)
                    text = _with_bounds(y, *target.interval()) if args.coverage else _format(y)
                    out.write(text + "\n")
                else:
                    y = target.step_many([key], [_as_row(point, target)])[0]
                    if args.coverage:
                        lo, hi = target.interval([key])
                        text = _with_bounds(y, lo[0], hi[0])
                    else:
                        text = _format(y.tolist() if len(y) > 1 else float(y[0]))
                    out.write(f"{key},{text}\n")
                out.flush()
                if journal is not None:  # printed first: see _Journal
                    journal.consume(line)
                    journal.record(key, point)
                saver.maybe()
            stop.line_done()
    except (LineError, RnnStreamError) as exc:
        print(f"line {lineno}: {exc}{parser.nameless(exc)}", file=sys.stderr)
        return 1
    except _SaveFailed:
        return 1
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):  # the reader went away; keep what we have
            return 0
        print(f"error: cannot read {args.input}: {exc}", file=sys.stderr)
        return 1
    finally:
        stop.busy = False
    if lineno == skipped == 0:
        print("warning: the input was empty", file=sys.stderr)
    return 0


def _wrap_hint(model: str) -> str:
    from rnnstream.runtime.session import wrap_hint

    return wrap_hint(model)


def with_wrap_hint(message: str, model: str) -> str:
    """``message``, and how to give ``model`` a contract when it has none (a foreign file)."""
    from rnnstream.runtime.session import contract_missing

    if "rnnstream wrap" in message or not contract_missing(model):
        return message
    return f"{message.rstrip('.')}. {_wrap_hint(model)}"


def _features(target: Any) -> list[str] | None:
    contract = getattr(target, "contract", None)
    return list(contract.features) if contract is not None else None


def _as_row(point: Any, pool: Any) -> Any:
    """A pool row from a line's point: mappings in the contract's feature order."""
    if isinstance(point, dict):
        from rnnstream.runtime import InputError

        names = (pool.contract.features if pool.contract is not None else None) or []
        if len(point) == 1 and len(names) == 1:  # {"ticker": "A", "price": 1.5}: one value
            return [next(iter(point.values()))]
        unknown = [k for k in point if k not in names]
        missing = [k for k in names if k not in point]
        if unknown or missing or not names:
            raise InputError(f"features {sorted(point)} do not match the model's {names}")
        return [point[n] for n in names]
    return point if isinstance(point, list) else [point]
