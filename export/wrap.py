"""``wrap_onnx``: give a foreign stateful ONNX file the rnnstream contract, proven before writing.

A model exported by someone else (torch, Keras, a hand-built graph) keeps its state in its own
layout: torch's LSTM reads ``h0``/``c0`` as ``[layers, batch, hidden]``, a time-first model reads
``[time, batch, F]``, a lesson-style model returns ``[batch * time, K]``. ``wrap_onnx`` rewrites
the graph so that it has the one interface every rnnstream model has (:mod:`~rnnstream.runtime.
spec`)::

    x [batch, time, F] -> (Sub mean, Div std) -> Reshape/Transpose -> foreign data input
    <s>_in [batch, *row] -> Transpose -> foreign state input           (one per state pair)
    foreign prediction -> Transpose/Reshape -> (Mul std, Add mean) -> y [batch, time, T]
    foreign state output -> Transpose -> <s>_out [batch, *row]

Every foreign name is prefixed with ``foreign/`` (so none collides with ``x``, ``y`` or a
``<s>_in``), float16/float64 tensors are Cast to and from float32, constant inputs are folded
in as initializers, other outputs are dropped and the
nodes only they needed are pruned. A graph whose time axis cannot vary (``[batch, F]`` inputs,
or a prediction without a time axis) becomes ``step_only``: its ``x`` is ``[batch, 1, F]``.

Order (nothing is written unless every step passes)::

    plan: pairs (state_map or the runtime's naming conventions), data input, prediction,
          axes (given, or found by running the foreign graph at batch 2 and 3, time 3 and 5,
          and by changing one stream's input to see which output entries follow)
      -> rewrite -> onnx.checker
      -> proofs, every failure collected and refused together (WrapParityError):
         (a) exact: the wrapped graph equals the foreign graph (through the same layout moves
             in numpy) on seeded inputs, batch 1 and 3, time 1 and 50, a non-zero state,
             within EXACT_ULPS float32 steps at each output's scale;
         (b) streaming (time dynamic only): the wrapped graph stepped one point at a time,
             carrying <s>_out -> <s>_in, equals one call on the whole sequence (batch 3, time
             50, non-zero state), final state included, within FACTOR times the distance the
             same call moves when its inputs and state are nudged by 2 float32 steps, plus a
             floor (export.verify's BoundRule): this refuses a state map that does not
             round-trip, such as an LSTM's h and c swapped;
         (c) with a sample: rnnstream's Predictor on the bytes to be written, stepping the
             sample, equals the foreign graph stepped directly (same derived bound)
      -> contract (cell "custom", declared states, calibration from the sample), fingerprint
      -> model + sidecar written atomically

A graph fixed to one time step cannot be checked by (b): the report says so.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import tempfile
import time as _time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from rnnstream.runtime import spec
from rnnstream.runtime.contract import MAX_HIDDEN, MAX_STATE_RANK, ModelContract, sidecar_path
from rnnstream.runtime.errors import RnnStreamError
from rnnstream.runtime.session import ORT_ERRORS, find_pairs

from .calibrate import sample_calibration
from .errors import ExportError, GraphError, ParityError, ParityFailure
from .exporter import write_atomically
from .graph import pin_ir_version
from .metadata import attach_metadata, fingerprint, json_safe, load_contract
from .verify import (
    STATE_DRAWS,
    BoundRule,
    ParityCase,
    ParityReport,
    _baseline_errors,
    max_abs_diffs,
    ort_runner,
    stream_outputs,
)

__all__ = ["EXACT_ULPS", "NO_TIME_AXIS", "WrapParityError", "WrapReport", "wrap_onnx"]

NO_TIME_AXIS = "none"  # time_axis=NO_TIME_AXIS: the data input has no time axis (step_only)
PREFIX = "foreign/"  # every name of the foreign graph gets it in the wrapped graph
# (a): the wrapped graph only adds layout moves (exact) and the scaling (one rounding each):
# it may differ from the foreign graph run through the same moves by this many float32 steps
# at each output's scale (onnxruntime may fuse the added ops differently).
EXACT_ULPS = 2
EXACT_CASES = tuple(ParityCase(b, t) for b in (1, 3) for t in (1, 50))
STREAM_CASE = ParityCase(3, 50)  # (b): stepped vs one call
PROBES = ((2, 3), (3, 5))  # (batch, time) of the shape probes: every size and product distinct
MAX_CANDIDATES = 24  # (batch, time) layouts of the data input tried before asking for the axes
MAX_SAMPLE = 5000  # points of a sample stepped by proof (c)
RECHECK = 100  # ...and by the final bytes, which must give the very same predictions
BATCH_HINTS = ("batch", "n", "b", "bs", "num_seqs")
TIME_HINTS = ("time", "seq", "len", "step", "t", "frames")
DEFAULT_NAMES = {1: ("h",), 2: ("h", "c")}
FLOAT_TYPES: dict[str, np.dtype] = {"tensor(float)": np.dtype(np.float32),
                                    "tensor(float16)": np.dtype(np.float16),
                                    "tensor(double)": np.dtype(np.float64)}

Runner = Callable[[np.ndarray, tuple[np.ndarray, ...]], dict[str, np.ndarray]]


class WrapParityError(ParityError):
    """A proof of :func:`wrap_onnx` failed; ``failures`` lists every output, the message says
    what to pass (the state map, the axes)."""

    def __init__(self, failures: Sequence[ParityFailure], advice: str):
        super().__init__(failures, "wrap")
        self.advice = advice
        lines = "\n".join(f"  {f}" for f in self.failures)
        Exception.__init__(self, f"wrap refused, {len(self.failures)} output(s) out of "
                                 f"tolerance:\n{lines}\nNothing was written. {advice}")


# -- the plan: what goes where ---------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where a foreign tensor keeps batch and time, and the sizes of its other axes (in order).

    ``flat``: the axis holding batch and time flattened into one (a prediction ``[B*T, K]``),
    ``time_major`` its order (``t * B + b``; otherwise ``b * T + t``).
    """

    rank: int
    batch: int | None
    time: int | None = None
    sizes: tuple[int, ...] = ()
    flat: int | None = None
    time_major: bool = False

    @property
    def others(self) -> tuple[int, ...]:
        lead = (self.batch, self.time, self.flat)
        return tuple(i for i in range(self.rank) if i not in lead)

    @property
    def order(self) -> list[int]:
        """Foreign axes in rnnstream order: [flat | batch, time, *others]."""
        lead = [a for a in (self.flat, self.batch, self.time) if a is not None]
        return lead + list(self.others)

    @property
    def to_foreign(self) -> list[int]:
        """Transpose perm from rnnstream order to the foreign layout."""
        return [self.order.index(i) for i in range(self.rank)]

    def describe(self, names: Sequence[Any]) -> str:
        dims = list(names)
        flat = "time*batch" if self.time_major else "batch*time"
        for axis, word in ((self.batch, "batch"), (self.time, "time"), (self.flat, flat)):
            if axis is not None:
                dims[axis] = word
        for axis, size in zip(self.others, self.sizes, strict=True):
            dims[axis] = size
        return "[" + ", ".join(str(d) for d in dims) + "]"


@dataclass(frozen=True)
class StatePlan:
    name: str  # the rnnstream name: <name>_in / <name>_out
    input: str  # the foreign names
    output: str
    layout: Layout

    @property
    def row(self) -> tuple[int, ...]:
        return self.layout.sizes


@dataclass
class Plan:
    """How the foreign graph is fed and read; every name here is the foreign file's."""

    data: str
    x: Layout
    output: str
    y: Layout
    states: list[StatePlan]
    fixed: dict[str, np.ndarray]
    n_features: int
    n_targets: int
    dtypes: dict[str, np.dtype] = field(default_factory=dict)  # foreign name -> its dtype
    dropped: list[str] = field(default_factory=list)
    how: dict[str, str] = field(default_factory=dict)  # what -> how it was found

    @property
    def step_only(self) -> bool:
        return self.x.time is None or (self.y.time is None and self.y.flat is None)

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)


@dataclass
class WrapReport:
    """What :func:`wrap_onnx` wrote and the figures that prove it."""

    path: Path
    sidecar: Path
    contract: ModelContract
    plan: Plan
    exact: ParityReport
    streaming: ParityReport | None  # None: the graph's time axis is fixed to 1
    predictor: ParityReport | None  # None: no sample
    source: str
    seconds: float = 0.0

    def summary(self) -> str:
        p = self.plan
        lines = [f"wrapped {self.source} -> {self.path} (cell custom, "
                 + ("step_only: time fixed to 1" if p.step_only else "time dynamic") + ")"]
        lines.append(f"  data input  {p.data!r} {p.x.describe(['?'] * p.x.rank)} -> x "
                     f"[batch, {1 if p.step_only else 'time'}, {p.n_features}] "
                     f"({p.how.get('x', '')})")
        dropped = f"; dropped outputs {p.dropped}" if p.dropped else ""
        lines.append(f"  prediction  {p.output!r} {p.y.describe(['?'] * p.y.rank)} -> y "
                     f"[batch, {1 if p.step_only else 'time'}, {p.n_targets}] "
                     f"({p.how.get('y', '')}{dropped})")
        for s in p.states:
            lines.append(f"  state {s.name:<4} {s.input!r} -> {s.output!r} "
                         f"{s.layout.describe(['?'] * s.layout.rank)} as {s.name}_in/"
                         f"{s.name}_out [batch, {', '.join(map(str, s.row))}] "
                         f"({p.how.get('pairs', '')})")
        if "relaxed" in p.how:
            lines.append(f"  declared with a batch of 1, made free: {p.how['relaxed']} (the "
                         "graph runs at other batch sizes there; proven below)")
        lines.append("  (a) wrapped graph vs foreign graph, " + _figures(self.exact))
        lines.append("  (b) " + ("stepped one point a call vs one call over the sequence, "
                                 + _figures(self.streaming) if self.streaming is not None else
                                 "not checked: the graph's time axis is fixed to 1, so a "
                                 "stepped run cannot be compared with one call over a sequence; "
                                 "the state map is trusted as given"))
        if self.predictor is not None:
            lines.append("  (c) rnnstream Predictor on the file vs the foreign graph stepped, "
                         + _figures(self.predictor))
        cal = self.contract.live_facts().calibration
        if cal:
            lines.append(f"  calibration from the sample: {cal.info['residuals']} residuals")
        return "\n".join(lines)


def _figures(report: ParityReport) -> str:
    """'<inputs>: max |diff| D (output, case), bound B[ = rule], N checks, ok|FAILED': the figures
    of the output closest to its bound (or, all being 0, the one with the tightest bound)."""
    rows = [(d / b if b > 0 else math.inf * d, -b, d, b, out, case)
            for case, diffs in report.cases.items() for out, d in diffs.items()
            for b in [report.bounds[case][out]]]
    _, _, diff, bound, out, case = max(rows)
    rule = ""
    if report.baseline is not None and report.rule is not None:
        base = report.baseline_error[case][out]
        rule = (f" = {report.rule.factor:g} x {base:.3g} ({report.baseline}) + "
                f"{report.rule.floor_ulps:g} ulps")
    elif report.rule is None:
        rule = f" ({EXACT_ULPS} float32 ulps at the output's scale)"
    verdict = "FAILED" if report.failures() else "ok"
    return (f"{report.inputs} inputs: max |diff| {diff:.3g} ({out}, {case}), bound "
            f"{bound:.3g}{rule}; {len(report.cases)} case(s), {verdict}")


# -- public entry point ----------------------------------------------------------------------
def wrap_onnx(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    state_map: Mapping[str, str] | None = None,
    features: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    batch_axis: int | None = None,
    time_axis: int | str | None = None,
    horizon: int = 1,
    sample: Any = None,
    scaling: Mapping[str, Sequence[float]] | None = None,
    seed: int = 0,
    fixed_inputs: Mapping[str, Any] | None = None,
    state_names: Mapping[str, str] | None = None,
    output: str | None = None,
) -> WrapReport:
    """Write ``out`` (+ ``out.json``): ``src`` rewritten to the rnnstream contract, proven first.

    ``state_map``: foreign state input -> the output that carries its next value (default: the
    runtime's naming conventions, ``h0 -> hn``, ``state -> stateN``, ``X_in -> X_out``...).
    ``state_names``: foreign state input -> rnnstream state name (default ``h``; ``h``, ``c``;
    else ``s0``, ``s1``... in input order). ``batch_axis``/``time_axis``: the data input's axes
    (default: found by running the graph; ``time_axis="none"``: it has none, the model takes one
    step per call). ``features``/``targets``: names (default ``f0..``/``t0..``, sized from the
    graph). ``fixed_inputs``: constant inputs, folded into the file. ``output``: the prediction
    output (default: the first output that is not a state output). ``sample``: ``[time, F]``
    raw values of the series (>= 50 points): the proofs run on its windows, the Predictor is
    stepped through it, and its residuals give ``metrics["calibration"]``. ``scaling``:
    ``feature_mean``/``feature_std``/``target_mean``/``target_std`` the foreign model expects
    applied outside it, folded in so the wrapped file takes and returns raw values.

    Raises :class:`ExportError` (the plan: names, axes, dtypes) or :class:`WrapParityError`
    (a proof); nothing is written then.
    """
    start = _time.perf_counter()
    src, out_path = os.fspath(src), Path(out)
    _check_paths(src, out_path)
    if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1:
        raise ExportError(f"horizon {horizon!r}: expected a whole number of steps >= 1")
    foreign = _load(src)
    fixed = _fixed_values(foreign, fixed_inputs or {}, src)
    plan, foreign = plan_wrap(foreign, src, state_map=state_map, fixed=fixed,
                              features=features, batch_axis=batch_axis, time_axis=time_axis,
                              state_names=state_names, output=output, seed=seed)
    names = _names(features, plan.n_features, "f", "features")
    tnames = _names(targets, plan.n_targets, "t", "targets")
    norm = _scaling(scaling, plan.n_features, plan.n_targets)
    arr = None if sample is None else _sample(sample, plan.n_features)
    graph = rewrite(foreign, plan, norm)
    reports, failures = prove(foreign, graph, plan, norm, arr, seed)
    contract = _contract(graph, plan, names, tnames, horizon, norm, reports, src, foreign)
    predictor, ys = None, np.zeros(0)
    if arr is not None:
        predictor, calibration, more, ys = _prove_predictor(graph, contract, plan, foreign,
                                                            norm, arr, seed)
        failures += more
        if calibration:
            contract.metrics["calibration"] = json_safe(calibration, "calibration")
        contract.parity["predictor"] = predictor.to_dict()
    if failures:
        raise WrapParityError(failures, _advice(plan))
    files = _final_files(graph, contract, out_path)
    if arr is not None:
        _recheck(files, arr[:RECHECK], ys[:RECHECK])
    write_atomically(files)
    return WrapReport(out_path, Path(sidecar_path(str(out_path))), contract, plan,
                      reports["exact"], reports.get("streaming"), predictor, src,
                      _time.perf_counter() - start)


def _recheck(files: Mapping[Path, bytes], rows: np.ndarray, proven: np.ndarray) -> None:
    """The final bytes carry (c)'s own figures in their contract: they must predict bit for bit
    what the proven bytes did."""
    again, _ = predictor_run(files, rows)
    if not np.array_equal(again, proven):
        raise ExportError("the final file streams differently from the one proven; nothing "
                          "was written (a bug: please report it)")


def _advice(plan: Plan) -> str:
    pairs = ", ".join(f"{s.input}->{s.output} as {s.name}" for s in plan.states)
    return (f"The state pairs were {pairs} ({plan.how.get('pairs')}), the data input's axes "
            f"{plan.how.get('x')}. A stepped run that differs from one call means a state "
            "output was paired with the wrong input: check --state IN=OUT (state_map={in: "
            "out}); a difference between the wrapped and the foreign graph or the Predictor "
            "means an axis is wrong: give --batch-axis / --time-axis.")


# -- loading ---------------------------------------------------------------------------------
def _check_paths(src: str, out: Path) -> None:
    if not os.path.isfile(src):
        raise ExportError(f"{src}: no such file")
    if not out.parent.is_dir():
        raise ExportError(f"{out.parent} does not exist; create the folder first")
    if out.is_dir():
        raise ExportError(f"{out} is a folder; give a file name such as {out / 'model.onnx'}")
    if out.exists() and os.path.samefile(src, out):
        raise ExportError(f"{out} is the foreign file itself; write the wrapped model elsewhere")


def _load(src: str) -> onnx.ModelProto:
    try:
        model = onnx.load(src)
    except Exception as exc:  # protobuf's DecodeError and friends have no common base
        raise ExportError(f"{src}: not a readable ONNX file ({exc})") from exc
    if any(p.key == "rnnstream" for p in model.metadata_props):
        raise ExportError(f"{src}: already carries an rnnstream contract; nothing to wrap")
    return model


def _session(model: onnx.ModelProto | bytes, src: str) -> ort.InferenceSession:
    """A single-threaded session that logs nothing (probes fail on purpose; the failures are
    reported in the message that needs them)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.log_severity_level = 4
    data = model if isinstance(model, bytes) else model.SerializeToString()
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors share no base class
        raise ExportError(f"{src}: onnxruntime cannot load it ({exc})") from exc


def _fixed_values(model: onnx.ModelProto, given: Mapping[str, Any],
                  src: str) -> dict[str, np.ndarray]:
    """Constant inputs as arrays of the input's dtype (and declared shape, when fixed)."""
    inputs = {v.name: v for v in _free_inputs(model)}
    fixed = {}
    for name, value in given.items():
        if name not in inputs:
            raise ExportError(f"{src}: --fixed names {name!r}, but its inputs are "
                              f"{sorted(inputs)}")
        t = inputs[name].type.tensor_type
        arr = np.asarray(value, dtype=helper.tensor_dtype_to_np_dtype(t.elem_type))
        dims = [d.dim_value for d in t.shape.dim if d.HasField("dim_value")]
        if len(dims) == len(t.shape.dim) and arr.size == math.prod(dims):
            arr = arr.reshape(dims)
        fixed[name] = arr
    return fixed


def _free_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


# -- planning --------------------------------------------------------------------------------
def plan_wrap(
    foreign: onnx.ModelProto,
    src: str,
    *,
    state_map: Mapping[str, str] | None = None,
    fixed: Mapping[str, np.ndarray] | None = None,
    features: Sequence[str] | None = None,
    batch_axis: int | None = None,
    time_axis: int | str | None = None,
    state_names: Mapping[str, str] | None = None,
    output: str | None = None,
    seed: int = 0,
) -> tuple[Plan, onnx.ModelProto]:
    """Pairs, data input, prediction output and every axis; ExportError naming what to pass.

    Also returns the model the plan is for: ``foreign`` itself, or a copy whose state or data
    inputs declared with a fixed batch of 1 (torch exports without ``dynamic_axes``) have that
    axis made free, when the graph runs with other batch sizes there (probing decides).
    """
    fixed = dict(fixed or {})
    sess = _session(foreign, src)
    inputs = {i.name: i for i in sess.get_inputs()}
    outputs = {o.name: o for o in sess.get_outputs()}
    pairs, how = _pairs(inputs, outputs, state_map, fixed, src)
    data, pred, preds, dtypes = _roles(inputs, outputs, pairs, fixed, output, src)
    named = _state_names(list(pairs), state_names or {}, src)
    options = {i: _state_layouts(inputs[i], outputs[o], src) for i, o in pairs.items()}
    relaxed = {i: [lay.batch for lay in lays] for i, lays in options.items()
               if not any(isinstance(d, str) or d is None for d in _dims(inputs[i]))}
    if relaxed:
        foreign = _relax(foreign, {**relaxed, **{pairs[i]: a for i, a in relaxed.items()}})
        sess = _session(foreign, src)
    states = [[StatePlan(named[i], i, o, lay) for lay in options[i]] for i, o in pairs.items()]
    n_features = None if features is None else len(features)
    x_dims = _dims(inputs[data])

    def find(sess: ort.InferenceSession, ones: Sequence[int]) -> Plan:
        probe = _Probe(sess, src, data, pred, fixed, dtypes, np.random.default_rng([seed, 7]))
        return _find_axes(probe, x_dims, ones, states, n_features, batch_axis, time_axis)

    ones = [i for i, d in enumerate(x_dims) if d == 1]
    try:
        plan = find(sess, ())
    except ExportError:  # a data input exported with its batch fixed to 1: try those axes
        if not ones:
            raise
        foreign = _relax(foreign, {data: ones})
        plan = find(_session(foreign, src), ones)
    plan.dropped = [n for n in preds if n != pred]
    plan.how["pairs"] = how
    made_free = [f"{s.input} axis {s.layout.batch}" for s in plan.states if s.input in relaxed]
    if plan.x.batch in ones:
        made_free.insert(0, f"{data} axis {plan.x.batch}")
    if made_free:
        plan.how["relaxed"] = ", ".join(made_free)
    return plan, foreign


def _roles(inputs: Mapping[str, Any], outputs: Mapping[str, Any], pairs: Mapping[str, str],
           fixed: Mapping[str, Any], output: str | None,
           src: str) -> tuple[str, str, list[str], dict[str, np.dtype]]:
    """(data input, prediction output, every output that is not a state, their dtypes)."""
    data = [n for n in inputs if n not in pairs and n not in fixed]
    if len(data) != 1:
        raise ExportError(
            f"{src}: expected one data input besides the state inputs {sorted(pairs)}"
            f"{' and fixed inputs ' + str(sorted(fixed)) if fixed else ''}, found {data}; give "
            "the constant ones with --fixed NAME=VALUE (fixed_inputs={name: value}) and the "
            "state ones with --state IN=OUT")
    preds = [n for n in outputs if n not in pairs.values()]
    pred = _prediction(preds, output, src)
    dtypes = _dtypes(src, [inputs[data[0]], outputs[pred],
                           *(inputs[i] for i in pairs), *(outputs[o] for o in pairs.values())])
    return data[0], pred, preds, dtypes


def _relax(model: onnx.ModelProto, axes: Mapping[str, Sequence[int | None]]) -> onnx.ModelProto:
    """A copy with the given axes of graph inputs and outputs (by name) declared free."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for value in [*out.graph.input, *out.graph.output]:
        dims = value.type.tensor_type.shape.dim
        for axis in axes.get(value.name, ()):
            if axis is not None and axis < len(dims):
                dims[axis].Clear()
                dims[axis].dim_param = f"wrap_free_{axis}"
    return out


def _pairs(inputs: Mapping[str, Any], outputs: Mapping[str, Any],
           state_map: Mapping[str, str] | None, fixed: Mapping[str, Any],
           src: str) -> tuple[dict[str, str], str]:
    if state_map:
        bad = [f"{i}={o}" for i, o in state_map.items()
               if i not in inputs or o not in outputs or i in fixed]
        if bad:
            raise ExportError(f"{src}: --state {' '.join(bad)} names no such input/output pair; "
                              f"the inputs are {sorted(inputs)}, the outputs {sorted(outputs)}")
        if len(set(state_map.values())) != len(state_map):
            raise ExportError(f"{src}: the state map feeds one output to several inputs: "
                              f"{dict(state_map)}")
        return dict(state_map), "given"
    free = [a for a in inputs.values() if a.name not in fixed]
    pairs = find_pairs(free, list(outputs.values()))
    if not pairs:
        raise ExportError(
            f"{src}: no state input/output pairs found by naming convention (inputs "
            f"{sorted(inputs)}, outputs {sorted(outputs)}); say which output carries each "
            "state input's next value: --state IN=OUT (state_map={'h0': 'hn'})")
    return pairs, "found by naming convention"


def _prediction(preds: Sequence[str], output: str | None, src: str) -> str:
    if output is not None:
        if output not in preds:
            raise ExportError(f"{src}: --output {output!r} is not one of the outputs that are "
                              f"not state outputs: {list(preds)}")
        return output
    if not preds:
        raise ExportError(f"{src}: every output is paired with a state input; nothing is left "
                          "to predict (check --state)")
    return preds[0]


def _dtypes(src: str, args: Sequence[Any]) -> dict[str, np.dtype]:
    """Each tensor's dtype: float32, or float16/float64 (Cast to and from float32 in the
    wrapped graph: rnnstream's x, y and states are float32, so a float64 state is rounded to
    float32 between calls; the proofs compare with the foreign graph carried the same way)."""
    bad = [f"{a.name!r} ({a.type})" for a in args if a.type not in FLOAT_TYPES]
    if bad:
        raise ExportError(
            f"{src}: {', '.join(bad)} are not floating point; rnnstream's data input, "
            "prediction and states are float32 (float16 and float64 are cast). Convert the "
            "model first, or re-export it with float inputs and outputs")
    return {a.name: FLOAT_TYPES[a.type] for a in args}


def _state_names(inputs: Sequence[str], given: Mapping[str, str], src: str) -> dict[str, str]:
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        raise ExportError(f"{src}: state names given for {unknown}, which are not state inputs "
                          f"({list(inputs)})")
    default = DEFAULT_NAMES.get(len(inputs)) or tuple(f"s{i}" for i in range(len(inputs)))
    names = {i: given.get(i, d) for i, d in zip(inputs, default, strict=True)}
    # (a keyword such as `in` is fine: inspect --code keys the states by name, not variables)
    reserved = spec.model_state_names()  # the states rnnstream's own modes carry
    bad = [n for n in names.values() if not spec.is_state_name(n) or n in reserved]
    if bad or len(set(names.values())) != len(names):
        raise ExportError(f"state names {list(names.values())}: each must be a distinct "
                          f"identifier (letters, digits, _), not x, y or "
                          f"{', '.join(sorted(reserved))}")
    return names


def _dims(arg: Any) -> list[int | str | None]:
    """An onnxruntime NodeArg's declared dims: sizes, symbolic names, or None."""
    return [d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) else None)
            for d in (arg.shape or [])]


def _state_layouts(arg_in: Any, arg_out: Any, src: str) -> list[Layout]:
    """The state's possible layouts: its one free axis as the batch, or, when every axis is
    fixed, each axis of size 1 (a batch fixed to 1 at export; probing decides which)."""
    dims = _dims(arg_in)
    free = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    ones = [i for i, d in enumerate(dims) if d == 1]
    if len(free) > 1 or not (free or ones):
        what = ("has no free axis and no axis of size 1: no batch axis" if not free else
                f"has free axes {free}: besides the batch, rnnstream carries fixed sizes only")
        raise ExportError(
            f"{src}: state input {arg_in.name!r} {dims} {what}. Re-export the model with a "
            f"dynamic batch axis on the state only (torch: dynamic_axes={{'{arg_in.name}': "
            "{1: 'batch'}, ...})")
    _check_pair(arg_in, arg_out, dims, src)
    return [Layout(len(dims), b, None,
                   tuple(int(d) for i, d in enumerate(dims) if i != b))  # type: ignore[arg-type]
            for b in (free or ones)]


def _check_pair(arg_in: Any, arg_out: Any, dims: list[int | str | None], src: str) -> None:
    sizes = [d for d in dims if isinstance(d, int)]
    out = _dims(arg_out)
    if len(out) != len(dims) or any(isinstance(a, int) and isinstance(b, int) and a != b
                                    for a, b in zip(dims, out, strict=True)):
        raise ExportError(f"{src}: state pair {arg_in.name!r} {dims} -> {arg_out.name!r} {out}: "
                          "the shapes differ; check --state")
    if len(dims) > MAX_STATE_RANK or any(not 1 <= s <= MAX_HIDDEN for s in sizes):
        raise ExportError(f"{src}: state {arg_in.name!r} {dims} is beyond what a contract "
                          f"declares (rank <= {MAX_STATE_RANK}, sizes 1..{MAX_HIDDEN})")


# -- axes, by probing ------------------------------------------------------------------------
def _x_candidates(dims: Sequence[int | str | None], ones: Sequence[int],
                  n_features: int | None, batch_axis: int | None,
                  time_axis: int | str | None, src: str, data: str) -> list[Layout]:
    """Every (batch, time) reading of the data input the user's axes allow, best guess first;
    ``ones``: axes declared 1 that may be the batch (made free)."""
    free = [i for i, d in enumerate(dims) if not isinstance(d, int)]
    for axis, what, allowed in ((batch_axis, "--batch-axis", [*free, *ones]),
                                (time_axis, "--time-axis", free)):
        if isinstance(axis, int) and axis not in allowed:
            raise ExportError(f"{src}: {what} {axis}: the data input {data!r} {list(dims)} has "
                              f"free axes {free}; the batch and time axes must be among them")
    if time_axis is not None and not isinstance(time_axis, int) and time_axis != NO_TIME_AXIS:
        raise ExportError(f"time_axis={time_axis!r}: expected an axis or {NO_TIME_AXIS!r}")
    batches = [batch_axis] if batch_axis is not None else [*free, *ones]
    found = []
    for b in batches:
        times: list[int | None] = ([None] if time_axis == NO_TIME_AXIS
                                   else [time_axis] if isinstance(time_axis, int)
                                   else [*(a for a in free if a != b), None])
        for t in times:
            if t == b:
                continue
            sizes = _feature_sizes(dims, b, t, n_features)
            if sizes is not None:
                found.append(Layout(len(dims), b, t, sizes))
    found.sort(key=lambda lay: _preference(lay, dims))
    if not found:
        raise ExportError(
            f"{src}: the data input {data!r} {list(dims)} cannot be read as [batch, time, "
            f"features]: {'pass --features a,b,... (how many values a point has)' if n_features is None else f'{n_features} features do not fit its other axes'}")  # noqa: E501
    return found[:MAX_CANDIDATES]


def _feature_sizes(dims: Sequence[int | str | None], b: int, t: int | None,
                   n_features: int | None) -> tuple[int, ...] | None:
    """The sizes of the axes other than batch and time; None when they cannot hold a point."""
    rest = [d for i, d in enumerate(dims) if i not in (b, t)]
    known = math.prod(d for d in rest if isinstance(d, int))
    free = [i for i, d in enumerate(rest) if not isinstance(d, int)]
    if len(free) > 1 or (free and n_features is None):
        return None
    if free and n_features is not None:
        if known == 0 or n_features % known:
            return None
        rest[free[0]] = n_features // known
    sizes = tuple(int(d) for d in rest)  # type: ignore[arg-type]
    if n_features is not None and math.prod(sizes) != n_features:
        return None
    return sizes


def _preference(lay: Layout, dims: Sequence[int | str | None]) -> tuple[int, int]:
    """Sort key: a time axis first (streaming needs it), then names that say batch/time."""
    def says(axis: int | None, hints: Sequence[str]) -> bool:
        name = dims[axis] if axis is not None else None
        return isinstance(name, str) and any(
            h == name.lower() or (len(h) > 2 and h in name.lower()) for h in hints)

    hinted = says(lay.batch, BATCH_HINTS) + says(lay.time, TIME_HINTS)
    return (lay.time is None, -hinted)


@dataclass
class _Probe:
    """What every probing run needs: the session, the foreign names and dtypes, constants."""

    sess: ort.InferenceSession
    src: str
    data: str
    pred: str
    fixed: Mapping[str, np.ndarray]
    dtypes: Mapping[str, np.dtype]
    rng: np.random.Generator

    def feeds(self, lay: Layout, states: Sequence[StatePlan], batch: int,
              time: int) -> dict[str, np.ndarray]:
        """Random inputs of these sizes: x ~ N(0, 1), states uniform in (-0.9, 0.9)."""
        x = self.rng.standard_normal(_shape(lay, batch, time))
        feeds = {self.data: x.astype(self.dtypes[self.data])}
        for s in states:
            value = self.rng.uniform(-0.9, 0.9, _shape(s.layout, batch, time))
            feeds[s.input] = value.astype(self.dtypes[s.input])
        feeds.update(self.fixed)
        return feeds


def _find_axes(probe: _Probe, dims: Sequence[int | str | None], ones: Sequence[int],
               options: list[list[StatePlan]], n_features: int | None,
               batch_axis: int | None, time_axis: int | str | None) -> Plan:
    """Probe every reading of the data input (and of states whose batch was fixed to 1)."""
    src, data, pred = probe.src, probe.data, probe.pred
    candidates = _x_candidates(dims, ones, n_features, batch_axis, time_axis, src, data)
    combos = list(itertools.islice(itertools.product(*options), MAX_CANDIDATES))
    tried: list[str] = []
    fits: list[tuple[Layout, list[StatePlan], Layout]] = []
    for lay, combo in itertools.product(candidates, combos):
        states = list(combo)
        y_lay, why = _probe_shapes(probe, lay, states)
        if y_lay is None:
            tried.append(f"batch axis {lay.batch}, time axis {lay.time}"
                         + "".join(f", {s.input} batch axis {s.layout.batch}"
                                   for s, o in zip(states, options, strict=True) if len(o) > 1)
                         + f": {why}")
        else:
            fits.append((lay, states, y_lay))
    if not fits:
        raise ExportError(f"{src}: no reading of the data input {data!r} {dims} runs and "
                          "gives outputs that follow the batch and time: "
                          + "; ".join(tried[:6]) + ". Give --batch-axis / --time-axis")
    best = [f for f in fits if _preference(f[0], dims) == _preference(fits[0][0], dims)]
    given = batch_axis is not None and time_axis is not None
    if len({(x.batch, x.time) for x, _, _ in best}) > 1 and not given:
        readings = ", ".join(f"batch {x.batch} time {x.time}" for x, _, _ in best)
        raise ExportError(f"{src}: the data input {data!r} {dims} runs as several layouts "
                          f"({readings}); say which with --batch-axis N --time-axis N")
    if len(best) > 1:
        raise ExportError(f"{src}: the states' batch axes are ambiguous (their batch was fixed "
                          "to 1 at export and several axes of size 1 run); re-export with a "
                          "dynamic batch axis on each state (torch: dynamic_axes)")
    x_lay, states, y_lay = best[0]
    y_lay = _probe_batch(probe, x_lay, y_lay, states)
    how_x = ("given" if given else "found by running the graph at batch 2 and 3, time 3 and 5"
             + (f"; {len(fits) - 1} other reading(s) ran too, chosen by preference"
                if len(fits) > 1 else ""))
    n_targets = math.prod(y_lay.sizes)
    plan = Plan(data, x_lay, pred, y_lay, states, dict(probe.fixed), math.prod(x_lay.sizes),
                n_targets, dict(probe.dtypes))
    plan.how.update(x=how_x, y="follows the batch" + (" and time" if y_lay.time is not None
                                                      else " x time, flattened"
                                                      if y_lay.flat is not None else ""))
    return plan


def _shape(lay: Layout, batch: int, time: int) -> tuple[int, ...]:
    dims = [0] * lay.rank
    for axis, size in zip(lay.others, lay.sizes, strict=True):
        dims[axis] = size
    if lay.batch is not None:
        dims[lay.batch] = batch
    if lay.time is not None:
        dims[lay.time] = time
    return tuple(dims)


def _probe_shapes(probe: _Probe, lay: Layout,
                  states: Sequence[StatePlan]) -> tuple[Layout | None, str]:
    """Run ``lay`` at PROBES sizes: the prediction's layout, or None and why not."""
    fetch = [probe.pred, *(s.output for s in states)]
    shapes = []
    for batch, time in PROBES:
        feeds = probe.feeds(lay, states, batch, time)
        try:
            got = probe.sess.run(fetch, feeds)
        except Exception as exc:  # onnxruntime's errors share no base class
            return None, f"onnxruntime: {str(exc).splitlines()[0][:160]}"
        for s, value in zip(states, got[1:], strict=True):
            if value.shape != feeds[s.input].shape:
                return None, (f"state output {s.output!r} {list(value.shape)} is not the shape "
                              f"of {s.input!r} {list(feeds[s.input].shape)}")
        shapes.append(got[0].shape)
    return _follow(shapes, lay.time is not None)


def _follow(shapes: Sequence[tuple[int, ...]], has_time: bool) -> tuple[Layout | None, str]:
    """Which axes of the prediction follow batch, time or their product between the probes."""
    (b1, t1), (b2, t2) = PROBES
    s1, s2 = shapes
    if len(s1) != len(s2):
        return None, f"the prediction's rank changes ({list(s1)}, {list(s2)})"
    role: dict[tuple[int, int], str] = {(b1, b2): "batch"}
    if has_time:
        role.update({(t1, t2): "time", (b1 * t1, b2 * t2): "flat"})
    axes: dict[str, list[int]] = {"batch": [], "time": [], "flat": []}
    sizes = []
    for i, pair in enumerate(zip(s1, s2, strict=True)):
        if pair in role:
            axes[role[pair]].append(i)
        elif pair[0] == pair[1]:
            sizes.append(pair[0])
        else:
            return None, f"prediction axis {i} is {pair[0]} then {pair[1]}"
    ok = (len(axes["batch"]) == 1 and len(axes["time"]) <= 1 and not axes["flat"]) or (
        not axes["batch"] and not axes["time"] and len(axes["flat"]) == 1)
    if not ok:
        return None, f"the prediction {list(s1)} does not have one batch axis"
    if math.prod(sizes) < 1:
        return None, f"the prediction {list(s1)} is empty"
    def one(role: str) -> int | None:
        return axes[role][0] if axes[role] else None

    return Layout(len(s1), one("batch"), one("time"), tuple(sizes), one("flat")), ""


def _probe_batch(probe: _Probe, lay: Layout, y_lay: Layout,
                 states: Sequence[StatePlan]) -> Layout:
    """Change stream 0's input and state only: every output entry that moves must be stream
    0's, on the batch axis found (for a flattened prediction this also tells its order)."""
    src, pred, rng = probe.src, probe.pred, probe.rng
    batch, time = PROBES[0]
    feeds = probe.feeds(lay, states, batch, time)
    moved = dict(feeds)
    moved[probe.data] = _perturb_first(feeds[probe.data], lay.batch, rng)
    for s in states:
        moved[s.input] = _perturb_first(feeds[s.input], s.layout.batch, rng)
    fetch = [pred, *(s.output for s in states)]
    try:
        before, after = probe.sess.run(fetch, feeds), probe.sess.run(fetch, moved)
    except ORT_ERRORS as exc:
        raise ExportError(f"{src}: onnxruntime failed on the batch probe: {exc}") from exc
    changed = [np.asarray(a != b) for a, b in zip(before, after, strict=True)]
    for s, c in zip(states, changed[1:], strict=True):
        if not _only_first(c, s.layout.batch):
            raise ExportError(f"{src}: changing stream 0 alone changed other streams of "
                              f"state output {s.output!r}: its batch axis is not "
                              f"{s.layout.batch}, or the model mixes streams")
    c = changed[0]
    if y_lay.flat is None:
        if not _only_first(c, y_lay.batch):
            raise ExportError(f"{src}: changing stream 0 alone changed other streams of the "
                              f"prediction {pred!r}; give --batch-axis / --time-axis")
        return y_lay
    rows = np.moveaxis(c, y_lay.flat, 0).reshape(batch * time, -1).any(axis=1)
    hit = set(np.flatnonzero(rows).tolist())
    batch_major, time_major = set(range(time)), set(range(0, batch * time, batch))
    if hit <= batch_major and not hit <= time_major:
        return y_lay
    if hit <= time_major and not hit <= batch_major:
        return replace(y_lay, time_major=True)
    if hit <= batch_major:  # only entry 0 moved: take the data input's own order
        return replace(y_lay, time_major=lay.time is not None and lay.time < (lay.batch or 0))
    raise ExportError(f"{src}: the prediction {pred!r} flattens batch and time in an order "
                      "that is neither batch-major nor time-major")


def _perturb_first(a: np.ndarray, axis: int | None, rng: np.random.Generator) -> np.ndarray:
    out = a.copy()
    if axis is None:
        return out
    index = tuple(0 if i == axis else slice(None) for i in range(a.ndim))
    part = out[index]
    out[index] = part + rng.uniform(0.1, 0.3, part.shape).astype(a.dtype)
    return out


def _only_first(changed: np.ndarray, axis: int | None) -> bool:
    if axis is None:
        return True
    rest = np.delete(changed, 0, axis=axis)
    return not bool(rest.any())


# -- numpy mirrors of the layout moves (the proofs' foreign side) ---------------------------
def x_to_foreign(x: np.ndarray, lay: Layout) -> np.ndarray:
    """[B, T, F] (T = 1 without a time axis) -> the foreign data input."""
    b = x.shape[0]
    lead = (b, x.shape[1]) if lay.time is not None else (b,)
    return np.ascontiguousarray(x.reshape(*lead, *lay.sizes).transpose(lay.to_foreign))


def y_from_foreign(y: np.ndarray, lay: Layout, batch: int, time: int) -> np.ndarray:
    """The foreign prediction -> [B, T, K]."""
    moved = y.transpose(lay.order)
    k = math.prod(lay.sizes)
    if lay.flat is not None and lay.time_major:
        return moved.reshape(time, batch, k).transpose(1, 0, 2)
    return moved.reshape(batch, time, k)


def state_to_foreign(s: np.ndarray, lay: Layout) -> np.ndarray:
    return np.ascontiguousarray(s.transpose(lay.to_foreign))


def state_from_foreign(s: np.ndarray, lay: Layout) -> np.ndarray:
    return np.ascontiguousarray(s.transpose(lay.order))


def foreign_runner(sess: ort.InferenceSession, plan: Plan,
                   norm: Mapping[str, np.ndarray]) -> Runner:
    """The foreign graph as an rnnstream runner: raw x [B, T, F] and states [B, *row] in,
    y [B, T, T'] and <s>_out out, through the numpy mirrors (and the scaling, in float32)."""
    fetch = [plan.output, *(s.output for s in plan.states)]

    def run(x: np.ndarray, states: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        xs = x.astype(np.float32)
        if "feature_mean" in norm:
            xs = (xs - norm["feature_mean"]) / norm["feature_std"]
        feeds = {plan.data: x_to_foreign(xs, plan.x).astype(plan.dtypes[plan.data]),
                 **plan.fixed}
        feeds.update({s.input: state_to_foreign(v, s.layout).astype(plan.dtypes[s.input])
                      for s, v in zip(plan.states, states, strict=True)})
        y, *new = (a.astype(np.float32) for a in sess.run(fetch, feeds))
        y = y_from_foreign(y, plan.y, x.shape[0], x.shape[1])
        if "target_mean" in norm:
            y = y * norm["target_std"] + norm["target_mean"]
        result = {spec.OUTPUT_NAME: y}
        result.update({spec.state_output_name(s.name): state_from_foreign(v, s.layout)
                       for s, v in zip(plan.states, new, strict=True)})
        return result

    return run


# -- the rewrite -----------------------------------------------------------------------------
def rewrite(foreign: onnx.ModelProto, plan: Plan,
            norm: Mapping[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """The foreign graph with the rnnstream interface around it (module docstring)."""
    norm = norm or {}
    opset = _opset(foreign)
    if opset < 10:  # Slice with inputs (10); every other added op is older
        raise ExportError(f"the foreign graph uses opset {opset}; wrap needs 10 or newer "
                          "(onnx.version_converter.convert_version(model, 17) converts it)")
    model = onnx.compose.add_prefix(foreign, PREFIX)
    g = model.graph
    pre: list[onnx.NodeProto] = []  # before the foreign nodes (topological order), and after
    post: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    _fold_fixed(g, plan.fixed)
    time: str | int = 1 if plan.step_only else spec.TIME
    _feed_x(plan, norm, pre, inits)
    for s in plan.states:
        _into(pre, spec.state_input_name(s.name), PREFIX + s.input, s.layout.to_foreign,
              plan.dtypes[s.input])
        _out_of(post, PREFIX + s.output, spec.state_output_name(s.name), s.layout.order,
                plan.dtypes[s.output])
    _read_y(plan, norm, post, inits)
    # inputs the foreign file backs with an initializer (a default) become plain constants
    ins, outs = spec.graph_io(spec.CUSTOM, layers=0, hidden=0, n_features=plan.n_features,
                              n_targets=plan.n_targets, time=time,
                              declared=tuple((s.name, s.row) for s in plan.states))
    del g.input[:]
    g.input.extend(_value_info(t) for t in ins)
    del g.output[:]
    g.output.extend(_value_info(t) for t in outs)
    foreign_nodes = list(g.node)
    del g.node[:]
    g.node.extend(pre + foreign_nodes + post)
    g.initializer.extend(inits)
    _prune(g)
    g.name = f"rnnstream wrap of {foreign.graph.name or 'a foreign graph'}"
    return pin_ir_version(model)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _value_info(t: spec.TensorSpec) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.shape))


def _fold_fixed(g: onnx.GraphProto, fixed: Mapping[str, np.ndarray]) -> None:
    names = {PREFIX + n for n in fixed}
    keep = [v for v in g.input if v.name not in names]
    del g.input[:]
    g.input.extend(keep)
    g.initializer.extend(numpy_helper.from_array(np.asarray(v), PREFIX + n)
                         for n, v in fixed.items())


def _const(inits: list[TensorProto], name: str, value: Any, dtype: Any) -> str:
    inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
    return name


def _edge(nodes: list[onnx.NodeProto], src: str, dst: str, perm: Sequence[int]) -> None:
    """``dst = Transpose(src, perm)``, or Identity when ``perm`` keeps the order."""
    if list(perm) == sorted(perm):
        nodes.append(helper.make_node("Identity", [src], [dst], name=f"wrap/{dst}"))
    else:
        nodes.append(helper.make_node("Transpose", [src], [dst], name=f"wrap/{dst}",
                                      perm=list(perm)))


def _into(nodes: list[onnx.NodeProto], src: str, dst: str, perm: Sequence[int],
          dtype: np.dtype) -> None:
    """float32 ``src`` -> Transpose -> (Cast to the foreign ``dtype``) -> ``dst``."""
    if dtype == np.float32:
        _edge(nodes, src, dst, perm)
        return
    _edge(nodes, src, f"wrap/{dst}_f32", perm)
    nodes.append(helper.make_node("Cast", [f"wrap/{dst}_f32"], [dst],
                                  to=helper.np_dtype_to_tensor_dtype(dtype)))


def _out_of(nodes: list[onnx.NodeProto], src: str, dst: str, perm: Sequence[int],
            dtype: np.dtype) -> None:
    """foreign ``src`` -> (Cast to float32) -> Transpose -> ``dst``."""
    if dtype != np.float32:
        nodes.append(helper.make_node("Cast", [src], [f"wrap/{src}_f32"], to=TensorProto.FLOAT))
        src = f"wrap/{src}_f32"
    _edge(nodes, src, dst, perm)


def _feed_x(plan: Plan, norm: Mapping[str, np.ndarray], nodes: list[onnx.NodeProto],
            inits: list[TensorProto]) -> None:
    """x [B, T, F] -> (scaling) -> Reshape to [B, (T), *sizes] -> Transpose -> foreign input."""
    cur = spec.INPUT_NAME
    if "feature_mean" in norm:
        mean = _const(inits, "wrap/feature_mean", norm["feature_mean"], np.float32)
        std = _const(inits, "wrap/feature_std", norm["feature_std"], np.float32)
        nodes.append(helper.make_node("Sub", [cur, mean], ["wrap/x_centred"]))
        nodes.append(helper.make_node("Div", ["wrap/x_centred", std], ["wrap/x_scaled"]))
        cur = "wrap/x_scaled"
    lay = plan.x
    lead = [0, 0] if lay.time is not None else [0]
    if not (lay.time is not None and list(lay.sizes) == [plan.n_features]):
        shape = _const(inits, "wrap/x_shape", lead + list(lay.sizes), np.int64)
        nodes.append(helper.make_node("Reshape", [cur, shape], ["wrap/x_split"]))
        cur = "wrap/x_split"
    _into(nodes, cur, PREFIX + plan.data, lay.to_foreign, plan.dtypes[plan.data])


def _read_y(plan: Plan, norm: Mapping[str, np.ndarray], nodes: list[onnx.NodeProto],
            inits: list[TensorProto]) -> None:
    """foreign prediction -> Transpose -> Reshape to [B, T, K] -> (scaling) -> y."""
    lay, k = plan.y, plan.n_targets
    _out_of(nodes, PREFIX + plan.output, "wrap/y_moved", lay.order, plan.dtypes[plan.output])
    if lay.flat is None:
        shape = _const(inits, "wrap/y_shape", [0, 0 if lay.time is not None else 1, k],
                       np.int64)
    else:  # [B*T, ...]: the batch and time sizes come from x
        nodes.append(helper.make_node("Shape", [spec.INPUT_NAME], ["wrap/x_dims"]))
        starts, ends = ([1, 0], [2, 1]) if lay.time_major else ([0], [2])
        parts = []
        for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
            sa = _const(inits, f"wrap/dims_start{i}", [a], np.int64)
            sb = _const(inits, f"wrap/dims_end{i}", [b], np.int64)
            nodes.append(helper.make_node("Slice", ["wrap/x_dims", sa, sb], [f"wrap/dims{i}"]))
            parts.append(f"wrap/dims{i}")
        parts.append(_const(inits, "wrap/y_k", [k], np.int64))
        nodes.append(helper.make_node("Concat", parts, ["wrap/y_shape"], axis=0))
        shape = "wrap/y_shape"
    last = "wrap/y_raw" if "target_mean" in norm else spec.OUTPUT_NAME
    if lay.flat is not None and lay.time_major:
        nodes.append(helper.make_node("Reshape", ["wrap/y_moved", shape], ["wrap/y_tb"]))
        nodes.append(helper.make_node("Transpose", ["wrap/y_tb"], [last], perm=[1, 0, 2]))
    else:
        nodes.append(helper.make_node("Reshape", ["wrap/y_moved", shape], [last]))
    if "target_mean" in norm:
        std = _const(inits, "wrap/target_std", norm["target_std"], np.float32)
        mean = _const(inits, "wrap/target_mean", norm["target_mean"], np.float32)
        nodes.append(helper.make_node("Mul", [last, std], ["wrap/y_scaled"]))
        nodes.append(helper.make_node("Add", ["wrap/y_scaled", mean], [spec.OUTPUT_NAME]))


def _prune(g: onnx.GraphProto) -> None:
    """Drop the nodes and initializers only the dropped outputs needed."""
    need = {o.name for o in g.output}
    kept: list[onnx.NodeProto] = []
    for node in reversed(g.node):
        if any(o in need for o in node.output):
            kept.append(node)
            need.update(node.input)
            need.update(_subgraph_names(node))
    del g.node[:]
    g.node.extend(reversed(kept))
    inits = [t for t in g.initializer if t.name in need]
    del g.initializer[:]
    g.initializer.extend(inits)


def _subgraph_names(node: onnx.NodeProto) -> set[str]:
    """Every name a node's subgraphs (Loop, Scan, If bodies) read, outer scope included."""
    names: set[str] = set()
    for attr in node.attribute:
        graphs = [attr.g] if attr.HasField("g") else list(attr.graphs)
        for sub in graphs:
            for n in sub.node:
                names.update(n.input)
                names.update(_subgraph_names(n))
    return names


# -- proofs ----------------------------------------------------------------------------------
def _draw(plan: Plan, norm: Mapping[str, np.ndarray], sample: np.ndarray | None, batch: int,
          time: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Seeded raw x [B, T, F] (sample windows, or random at the scaling's scale) and a random
    non-zero state per export.verify.STATE_DRAWS (uniform in (-0.9, 0.9) for other names)."""
    if sample is not None:
        time = min(time, sample.shape[0])
        starts = rng.integers(0, sample.shape[0] - time + 1, batch)
        x = np.stack([sample[s:s + time] for s in starts])
    else:
        z = rng.standard_normal((batch, time, plan.n_features))
        x = (norm["feature_mean"] + norm["feature_std"] * z if "feature_mean" in norm else z)
    states = []
    for s in plan.states:
        draw = STATE_DRAWS.get(s.name, lambda r, shape: r.uniform(-0.9, 0.9, shape))
        states.append(draw(rng, (batch, *s.row)).astype(np.float32))
    return x.astype(np.float32), tuple(states)


def prove(foreign: onnx.ModelProto, graph: onnx.ModelProto, plan: Plan,
          norm: Mapping[str, np.ndarray], sample: np.ndarray | None,
          seed: int) -> tuple[dict[str, ParityReport], list[ParityFailure]]:
    """Proofs (a) and (b) (module docstring): their reports and every failure, labelled."""
    _check_graph(graph)
    wrapped = ort_runner(_session(graph, "the wrapped graph"), plan.state_names)
    reference = foreign_runner(_session(foreign, "the foreign graph"), plan, norm)
    rng = np.random.default_rng(seed)
    try:
        reports = {"exact": _prove_exact(reference, wrapped, plan, norm, sample, rng, seed)}
        if not plan.step_only:
            reports["streaming"] = _prove_streaming(wrapped, plan, norm, sample, rng, seed)
    except ORT_ERRORS as exc:  # e.g. a graph that runs at the probe sizes but not at batch 1
        raise ExportError(f"onnxruntime failed while proving the wrapped graph: {exc}; give "
                          "--batch-axis / --time-axis if the axes found are wrong") from exc
    failures = [replace(f, case=f"{key} {f.case}") for key, r in reports.items()
                for f in r.failures()]
    return reports, failures


def _check_graph(graph: onnx.ModelProto) -> None:
    try:
        onnx.checker.check_model(graph)
    except onnx.checker.ValidationError as exc:
        raise GraphError(f"the wrapped graph is invalid: {exc}") from exc


def _prove_exact(reference: Runner, wrapped: Runner, plan: Plan,
                 norm: Mapping[str, np.ndarray], sample: np.ndarray | None,
                 rng: np.random.Generator, seed: int) -> ParityReport:
    rule = BoundRule(factor=0.0, floor_ulps=EXACT_ULPS)
    report = ParityReport("foreign graph", "wrapped graph", seed=seed,
                          inputs="random" if sample is None else "sample")
    for case in EXACT_CASES:
        if plan.step_only and case.time > 1:
            continue
        x, states = _draw(plan, norm, sample, case.batch, case.time, rng)
        want, got = reference(x, states), wrapped(x, states)
        report.cases[case.name] = max_abs_diffs(want, got)
        report.bounds[case.name] = {o: rule.bound(0.0, v) for o, v in want.items()}
    return report


def _prove_streaming(wrapped: Runner, plan: Plan, norm: Mapping[str, np.ndarray],
                     sample: np.ndarray | None, rng: np.random.Generator,
                     seed: int) -> ParityReport:
    rule = BoundRule()
    report = ParityReport("one call", "stepped", seed=seed,
                          baseline="the call on inputs nudged 2 ulps", rule=rule,
                          inputs="random" if sample is None else "sample")
    names = plan.state_names
    x, states = _draw(plan, norm, sample, STREAM_CASE.batch, STREAM_CASE.time, rng)
    want = wrapped(x, states)
    base = _baseline_errors(want, wrapped, x, states, names, np.random.default_rng([seed, 1]))
    got = stream_outputs(wrapped, x, states, names)
    case = f"stream{x.shape[1]}_batch{x.shape[0]}"
    report.cases[case] = max_abs_diffs(want, got)
    report.baseline_error[case] = base
    report.bounds[case] = {o: rule.bound(base[o], want[o]) for o in want}
    return report


def predictor_run(files: Mapping[Path, bytes],
                  rows: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Write ``files`` (model first) to a temp folder, step ``rows`` through rnnstream's
    Predictor on them: the predictions [N, T] and the final state."""
    from rnnstream.runtime import Predictor

    with tempfile.TemporaryDirectory(prefix="rnnstream-wrap-") as folder:
        placed = {Path(folder) / p.name: data for p, data in files.items()}
        write_atomically(placed)
        try:
            predictor = Predictor(next(iter(placed)))
            ys = np.stack([np.atleast_1d(np.asarray(predictor.step(r), np.float32))
                           for r in rows])
        except RnnStreamError as exc:
            raise ExportError(f"rnnstream's runtime cannot stream the wrapped file: {exc}; "
                              "nothing was written") from exc
        return ys, dict(predictor.get_state())


def _prove_predictor(graph: onnx.ModelProto, contract: ModelContract, plan: Plan,
                     foreign: onnx.ModelProto, norm: Mapping[str, np.ndarray],
                     sample: np.ndarray, seed: int
                     ) -> tuple[ParityReport, dict[str, Any] | None, list[ParityFailure],
                                np.ndarray]:
    """(c): the runtime's Predictor on the bytes to be written vs the foreign graph stepped
    (those bytes without (c)'s own figures: :func:`wrap_onnx` checks the final ones equal)."""
    rows = sample[:MAX_SAMPLE]
    ys, final = predictor_run(_final_files(graph, contract, Path("model.onnx")), rows)
    got = {spec.OUTPUT_NAME: ys[None]}
    got.update({spec.state_output_name(n): final[n][None] for n in plan.state_names})
    reference = foreign_runner(_session(foreign, "the foreign graph"), plan, norm)

    def stepped(x: np.ndarray, states: tuple[np.ndarray, ...]) -> dict[str, np.ndarray]:
        return stream_outputs(reference, x, states, plan.state_names)

    zeros = tuple(np.zeros((1, *s.row), np.float32) for s in plan.states)
    want = stepped(rows[None], zeros)
    base = _baseline_errors(want, stepped, rows[None], zeros, plan.state_names,
                            np.random.default_rng([seed, 2]))
    rule = BoundRule()
    case = f"sample{len(rows)}"
    report = ParityReport("foreign graph stepped", "rnnstream Predictor", seed=seed,
                          baseline="the foreign graph on the sample nudged 2 ulps", rule=rule,
                          inputs="sample")
    report.cases[case] = max_abs_diffs(want, got)
    report.baseline_error[case] = base
    report.bounds[case] = {o: rule.bound(base[o], want[o]) for o in want}
    calibration = sample_calibration(lambda _: ys, rows, contract.features, contract.targets,
                                     contract.horizon)
    failures = [replace(f, case=f"predictor {f.case}") for f in report.failures()]
    return report, calibration, failures, ys


# -- contract and files ----------------------------------------------------------------------
def _names(given: Sequence[str] | None, n: int, prefix: str, what: str) -> list[str]:
    if given is None:
        return [f"{prefix}{i}" for i in range(n)]
    names = list(given)
    if len(names) != n:
        raise ExportError(f"{len(names)} {what} named ({', '.join(names)}), but the wrapped "
                          f"model's {'x' if what == 'features' else 'y'} has {n} per point")
    if len(set(names)) != n or not all(isinstance(v, str) and v for v in names):
        raise ExportError(f"{what} {names}: expected distinct non-empty names")
    return names


def _scaling(scaling: Mapping[str, Sequence[float]] | None, n_features: int,
             n_targets: int) -> dict[str, np.ndarray]:
    """The scaling as float32 arrays, checked: both halves of a pair, right sizes, std > 0."""
    if not scaling:
        return {}
    known = {"feature_mean", "feature_std", "target_mean", "target_std"}
    if set(scaling) - known:
        raise ExportError(f"scaling keys {sorted(set(scaling) - known)}: expected "
                          f"{sorted(known)}")
    out = {}
    for kind, n in (("feature", n_features), ("target", n_targets)):
        keys = (f"{kind}_mean", f"{kind}_std")
        given = [k for k in keys if k in scaling]
        if given and len(given) != 2:
            raise ExportError(f"scaling gives {given[0]} without its pair; give both {keys}")
        for key in given:
            arr = np.asarray(scaling[key], np.float64).reshape(-1)
            if arr.size == 1:
                arr = np.repeat(arr, n)
            if arr.size != n or not np.all(np.isfinite(arr)) or (
                    key.endswith("std") and not np.all(arr > 0)):
                raise ExportError(f"scaling {key} {arr.tolist()}: expected {n} finite "
                                  "value(s)" + (", all > 0" if key.endswith("std") else ""))
            out[key] = arr.astype(np.float32)
    return out


def _sample(sample: Any, n_features: int) -> np.ndarray:
    arr = np.asarray(sample, np.float64)
    if arr.ndim == 1 and n_features == 1:
        arr = arr[:, None]
    longest = max(c.time for c in EXACT_CASES)
    if arr.ndim != 2 or arr.shape[1] != n_features or arr.shape[0] < longest:
        raise ExportError(f"sample of shape {arr.shape}: expected [time, {n_features}] raw "
                          f"values of the series with time >= {longest}")
    if not np.all(np.isfinite(arr)) or np.max(np.abs(arr)) > np.finfo(np.float32).max:
        raise ExportError("sample holds NaN, infinite or beyond-float32 values")
    return arr.astype(np.float32)


def _contract(graph: onnx.ModelProto, plan: Plan, features: list[str], targets: list[str],
              horizon: int, norm: Mapping[str, np.ndarray], reports: Mapping[str, ParityReport],
              src: str, foreign: onnx.ModelProto) -> ModelContract:
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    streaming = reports.get("streaming")
    parity = {
        **reports["exact"].to_dict(),
        "rule": f"{EXACT_ULPS} float32 ulps at each output's largest |value|",
        "exporter": "wrap",
        "source": {"file": os.path.basename(src), "sha256": digest,
                   "producer": f"{foreign.producer_name} {foreign.producer_version}".strip()},
        "pairs": {s.name: {"input": s.input, "output": s.output} for s in plan.states},
        "axes": {"x": plan.how.get("x"), "y": plan.how.get("y"),
                 "pairs": plan.how.get("pairs")},
        "streaming": streaming.to_dict() if streaming is not None else {
            "checked": False, "why": "the graph's time axis is fixed to 1"},
    }
    contract = ModelContract(
        cell=spec.CUSTOM, layers=0, hidden=0, features=features, targets=targets,
        horizon=horizon,
        normalization={k: v.astype(np.float64).tolist() for k, v in norm.items()},
        parity=json_safe(parity, "parity"), versions=_versions(_opset(graph)),
        declared_states=tuple((s.name, s.row) for s in plan.states),
        step_only=plan.step_only)
    contract.fingerprint = fingerprint(graph, contract)
    return contract


def _versions(opset: int) -> dict[str, str]:
    def package(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "unknown"

    return {"rnnstream": package("rnnstream"), "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "opset": str(opset)}


def _final_files(graph: onnx.ModelProto, contract: ModelContract,
                 path: Path) -> dict[Path, bytes]:
    model = onnx.ModelProto()
    model.CopyFrom(graph)
    text = attach_metadata(model, contract)
    if load_contract(model) != contract:
        raise ExportError("the contract read back from the graph differs from the one written")
    return {path: model.SerializeToString(), Path(sidecar_path(str(path))): text.encode()}


def load_scaling(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    """A scaling JSON file (``{"feature_mean": [...], ...}``) as a dict; ExportError."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: cannot read the scaling JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object of feature_mean, feature_std, "
                          "target_mean, target_std")
    return data
