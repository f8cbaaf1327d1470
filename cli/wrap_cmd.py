"""``rnnstream wrap``: a foreign stateful ONNX file -> an rnnstream model, proven before writing."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from ._common import TRAIN_EXTRA_HINT, fail

DESCRIPTION = """\
Give an ONNX model exported elsewhere (torch, Keras, by hand) the rnnstream contract, so that
inspect, stream (--coverage, --key), the pool and serve all work on it. The graph is rewritten,
not just labelled: its data input is fed from x [batch, time, F] (time-first inputs, [batch, F]
inputs without a time axis and extra unit axes are moved into place), its prediction becomes
y [batch, time, T] (a flattened [batch*time, K] output too), and each state pair IN -> OUT
becomes <name>_in / <name>_out [batch, ...] with the batch first (torch's [layers, batch,
hidden] is transposed). Other outputs are dropped; constant inputs must be given (--fixed).
float16/float64 tensors are cast to and from float32 (a float64 state is then carried in
float32 between calls); integer data or states are refused.

State pairs: --state IN=OUT (repeat per state; IN=OUT:NAME names it), else found by the
runtime's naming conventions (h0 -> hn, state -> stateN, X_in -> X_out, ...). Names default to
h (one state), h and c (two), else s0, s1, .... Axes: found by running the graph at batch 2 and
3 and time 3 and 5 and by changing one stream's input to see which outputs follow; give
--batch-axis / --time-axis when it says the input reads several ways. A data input or state exported
with its batch fixed to 1 (torch without dynamic_axes) gets that axis made free when the graph
runs with other batch sizes there (a fully fixed [1, 1, F] export becomes a one-step model).

Before anything is written it is proven, every failure collected and refused together:
  (a) the wrapped graph computes what the foreign graph computes (seeded inputs or windows of
      --sample, batch 1 and 3, time 1 and 50, a random non-zero initial state), within 2
      float32 rounding steps at each output's scale;
  (b) time dynamic only: stepping the wrapped graph one point at a time, carrying each
      <name>_out into <name>_in, equals one call over the whole sequence (batch 3, time 50,
      non-zero state, final states included) within 8x the distance that call moves when its
      inputs and state are nudged by 2 float32 rounding steps, plus 8 such steps. A wrong
      state map (an LSTM's h and c swapped, an input paired with an unrelated output) fails
      here. A graph whose time axis is fixed to 1 cannot be checked this way: the report says
      so, and the state map is trusted as given;
  (c) with --sample: rnnstream's Predictor on the very bytes to be written, stepping the
      sample, equals the foreign graph stepped directly (the same derived bound). The sample's
      residuals also give the calibration table, so 'stream --coverage' has intervals from the
      first point (targets must be features for that).

Features and targets default to f0, f1, ... and t0, t1, ... (or, for features, the numeric
columns of --sample). --scaling FILE.json gives the normalisation the foreign model expects
done outside it ({"feature_mean": [...], "feature_std": [...], "target_mean": [...],
"target_std": [...]}): it is folded into the graph, so the wrapped model takes raw values.
"""

EPILOG = """\
example (a torch nn.LSTM(3, 8, 2, batch_first=True) with a Linear head, exported by
torch.onnx.export(..., input_names=["input", "h0", "c0"], output_names=["output", "hn", "cn"],
dynamic_axes={"input": {0: "batch", 1: "time"}, "h0": {1: "batch"}, "c0": {1: "batch"}, ...})):

  rnnstream wrap lstm.onnx --state h0=hn --state c0=cn --features load,temp,hour \\
      --targets load --sample history.csv --out model.onnx
  rnnstream inspect model.onnx
  rnnstream stream model.onnx --input live.csv --coverage 0.9

more:
  rnnstream wrap vad.onnx --state state=stateN --fixed sr=16000 --out vad.rnnstream.onnx
  rnnstream wrap net.onnx --state 1=4:h --state 2=5:c --time-axis 0 --batch-axis 1 --out m.onnx
  rnnstream wrap cell.onnx --no-time-axis --out m.onnx     # [batch, F] input: one step a call

exit status: 0 written; 1 refused (a proof, names, axes, dtypes: the message says what to
pass); 2 usage error or onnx missing.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "wrap",
        help="give a foreign stateful ONNX file the rnnstream contract, proven",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("foreign", metavar="FOREIGN.onnx", help="the ONNX file to wrap")
    p.add_argument("--out", required=True, metavar="MODEL.onnx",
                   help="where to write the wrapped model (and MODEL.onnx.json)")
    p.add_argument("--state", action="append", default=[], metavar="IN=OUT[:NAME]",
                   help="the output carrying this state input's next value (repeat per state); "
                        ":NAME names it in rnnstream (default h; h, c; s0, s1, ...)")
    p.add_argument("--fixed", action="append", default=[], metavar="NAME=VALUE",
                   help="a constant input, folded into the file (VALUE: a number or a JSON "
                        "list)")
    p.add_argument("--output", metavar="NAME",
                   help="the prediction output (default: the first output that is not a "
                        "state output)")
    p.add_argument("--batch-axis", type=int, metavar="N", help="the data input's batch axis")
    time = p.add_mutually_exclusive_group()
    time.add_argument("--time-axis", type=int, metavar="N", help="the data input's time axis")
    time.add_argument("--no-time-axis", action="store_true",
                      help="the data input has no time axis ([batch, F]): one step per call "
                           "(proof (b) cannot be made then)")
    p.add_argument("--features", metavar="a,b,...", help="feature names, in input order")
    p.add_argument("--targets", metavar="a,...", help="target names, in output order")
    p.add_argument("--horizon", type=int, default=1, metavar="N",
                   help="how many steps ahead y[t] predicts (default 1)")
    p.add_argument("--sample", metavar="SERIES.csv",
                   help="raw values of the series (CSV with a header naming the features): the "
                        "proofs run on it, the Predictor steps it, its residuals calibrate "
                        "the intervals")
    p.add_argument("--scaling", metavar="FILE.json",
                   help="feature_mean/feature_std/target_mean/target_std the foreign model "
                        "expects applied outside it (folded into the graph)")
    p.add_argument("--seed", type=int, default=0, help="seed of the proof inputs (default 0)")


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("onnx") is None:
        print(f"rnnstream wrap: needs onnx, which comes with the 'train' extra:\n  "
              f"{TRAIN_EXTRA_HINT}", file=sys.stderr)
        return 2
    from rnnstream.export import ExportError, WrapParityError, wrap_onnx
    from rnnstream.export.wrap import NO_TIME_AXIS, load_scaling

    try:
        state_map, names = _states(args.state)
        features = _list(args.features)
        sample = None
        if args.sample:
            sample, features = read_sample(Path(args.sample), features)
        report = wrap_onnx(
            args.foreign, args.out, state_map=state_map or None, state_names=names or None,
            fixed_inputs=_fixed(args.fixed), output=args.output, features=features,
            targets=_list(args.targets), batch_axis=args.batch_axis,
            time_axis=NO_TIME_AXIS if args.no_time_axis else args.time_axis,
            horizon=args.horizon, sample=sample, seed=args.seed,
            scaling=load_scaling(args.scaling) if args.scaling else None,
        )
    except WrapParityError as exc:
        found = "; ".join(str(f) for f in exc.failures)
        return fail(f"wrap refused, nothing was written: {found}. {exc.advice}")
    except (ExportError, UsageError) as exc:
        return fail(_one_line(str(exc)))
    print(report.summary())
    print(f"wrote {report.path} ({report.path.stat().st_size:,} bytes, fingerprint "
          f"{report.contract.fingerprint[:19]}...)")
    print(f"wrote {report.sidecar}")
    print(f"took {report.seconds:.2f} s; see it with: rnnstream inspect {report.path}")
    return 0


class UsageError(Exception):
    """A malformed --state / --fixed / --sample value."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [part.strip() for part in text.split(",")]


def _states(items: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """--state IN=OUT[:NAME] values -> (state map, names)."""
    state_map: dict[str, str] = {}
    names: dict[str, str] = {}
    for item in items:
        left, eq, right = item.partition("=")
        head, colon, name = right.rpartition(":")  # OUT:NAME; TF's "out:0" has no name
        if colon and name.isidentifier() and not name[0].isdigit():
            right = head
        else:
            name = ""
        if not eq or not left or not right:
            raise UsageError(f"--state {item!r}: expected IN=OUT or IN=OUT:NAME (e.g. h0=hn:h)")
        state_map[left] = right
        if name:
            names[left] = name
    return state_map, names


def _fixed(items: list[str]) -> dict[str, Any]:
    """--fixed NAME=VALUE values (VALUE a JSON number or list)."""
    out: dict[str, Any] = {}
    for item in items:
        name, eq, value = item.partition("=")
        try:
            out[name] = json.loads(value)
        except ValueError:
            eq = ""
        if not eq or not name:
            raise UsageError(f"--fixed {item!r}: expected NAME=VALUE with a number or a JSON "
                             "list as VALUE (e.g. sr=16000)")
    return out


def read_sample(path: Path, features: list[str] | None) -> tuple[list[list[float]],
                                                                  list[str]]:
    """The ``features`` columns of a CSV with a header (default: its numeric columns)."""
    try:
        with path.open(newline="") as f:
            rows = [r for r in csv.reader(f) if any(cell.strip() for cell in r)]
    except OSError as exc:
        raise UsageError(f"--sample {path}: {exc.strerror or exc}") from exc
    if len(rows) < 2:
        raise UsageError(f"--sample {path}: expected a header and at least one row")
    header = [h.strip() for h in rows[0]]
    names = features or [h for i, h in enumerate(header) if _number(rows[1][i:i + 1])]
    missing = [n for n in names if n not in header]
    if missing:
        raise UsageError(f"--sample {path}: no column {missing[0]!r}; the columns are {header}")
    cols = [header.index(n) for n in names]
    values = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            values.append([float(row[c]) for c in cols])
        except (ValueError, IndexError) as exc:
            raise UsageError(f"--sample {path}: data row {line - 1}: {exc}") from exc
    return values, names


def _number(cells: list[str]) -> bool:
    try:
        float(cells[0])
    except (ValueError, IndexError):
        return False
    return True
