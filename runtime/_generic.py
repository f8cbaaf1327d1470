"""Pair the state inputs and outputs of an ONNX model rnnstream did not export.

The caller may say which output feeds which input (``state_map={"state": "stateN"}``); otherwise
the pairs are found by the naming conventions below, tried in order for every input:

==================  ==================  =====================================
input               output              seen in
==================  ==================  =====================================
``X_in``            ``X_out``           rnnstream, many hand-written graphs
``X0``              ``Xn`` / ``XN``     ``h0 -> hn``, ``c0 -> cn`` (torch names)
``X``               ``XN`` / ``Xn``     ``state -> stateN`` (silero-vad), ``h -> hn``
``X``               ``X_out``/``X_next``
``past_X``          ``present_X``       transformer KV caches (optimum)
``past_key_values.X`` ``present.X``     optimum decoder exports
==================  ==================  =====================================

A pair is accepted only if both sides have the same rank and agree on every fixed dimension.

The axes of the data input are then asked of onnxruntime, once, at load (:class:`Probe`, on
small seeded inputs): the *batch* axis is the free axis whose streams' outputs follow it (run at
batch 2, each stream gives what it gives alone; or ``batch_axis=`` says so), the *time* axis a
free axis along which the prediction has one row per point while the states keep their shape
(torch's time-first layouts have both free). With a time axis the pairs are proven: a few
seeded points from a seeded non-zero state, run as one call, must equal the same points run one
call at a time carrying each output into its paired input (:func:`check_round_trip`); a swapped
pair fails it by far. Without one (time fixed to 1) there is nothing to compare, and the note
says so.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import onnxruntime as ort

from ._io import (
    ORT_DTYPES,
    ORT_ERRORS,
    Dim,
    ModelIO,
    StateBinding,
    declared_shape,
    free_axes,
    input_array,
    model_outputs,
    output_rows,
)
from .errors import ContractError


def candidate_outputs(name: str) -> list[str]:
    """Output names that would carry the next value of input ``name``, most likely first."""
    out: list[str] = []
    if name.endswith("_in"):
        out.append(name[:-3] + "_out")
    if name.endswith("0") and len(name) > 1:
        base = name[:-1]
        out += [base + "n", base + "N", base + "_n"]
    out += [name + "N", name + "n", name + "_n", name + "_out", name + "_next", name + "_new"]
    if name.startswith("past_key_values."):
        out.append("present." + name[len("past_key_values."):])
    if name.startswith("past_"):
        out.append("present_" + name[len("past_"):])
    if name.startswith("past."):
        out.append("present." + name[len("past."):])
    return out


def _compatible(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    if len(a) != len(b):
        return False
    return all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


def find_pairs(inputs: Sequence[Any], outputs: Sequence[Any]) -> dict[str, str]:
    """Input name -> output name for every input that a naming convention pairs."""
    out_args = {o.name: o for o in outputs}
    used: set[str] = set()
    pairs: dict[str, str] = {}
    for arg in inputs:
        for cand in candidate_outputs(arg.name):
            o = out_args.get(cand)
            if (o is not None and cand not in used and o.type == arg.type
                    and _compatible(declared_shape(arg), declared_shape(o))):
                pairs[arg.name] = cand
                used.add(cand)
                break
    return pairs


BatchAxis = int | Mapping[str, int] | None

WRAP_HINT = ("`rnnstream wrap FILE --state IN=OUT ... --features ... --targets ... --out "
             "MODEL.onnx` gives it an rnnstream contract, and with it everything built on the "
             "contract (intervals, serve, Spark)")


def wrap_hint(path: str) -> str:
    """One sentence saying how to give the foreign file ``path`` a contract."""
    return WRAP_HINT.replace("FILE", path, 1)


def generic_io(
    session: ort.InferenceSession,
    path: str,
    state_map: Mapping[str, str] | None,
    fixed_inputs: Mapping[str, Any] | None,
    batch_axis: BatchAxis = None,
) -> tuple[ModelIO, str]:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    fixed = _fixed(inputs, fixed_inputs or {}, path)
    if state_map:
        _check_state_map(state_map, inputs, outputs, fixed, path)
        pairs, how = dict(state_map), "given by state_map"
    else:
        free = [a for a in inputs.values() if a.name not in fixed]
        pairs, how = find_pairs(free, list(outputs.values())), "found by naming convention"
    if not pairs:
        raise ContractError(
            f"{path}: has no rnnstream contract, and no state input/output pairs were found "
            f"(inputs {sorted(inputs)}, outputs {sorted(outputs)}). Say which output feeds "
            "which input, e.g. Predictor(path, state_map={'state': 'stateN'}), and give any "
            "other constant input with fixed_inputs={...}"
        )
    data = [n for n in inputs if n not in pairs and n not in fixed]
    if len(data) != 1:
        raise ContractError(
            f"{path}: expected exactly one data input besides the state inputs "
            f"{sorted(pairs)} and fixed inputs {sorted(fixed)}, found {data}; pass the others "
            "as fixed_inputs={name: value}"
        )
    ys = [n for n in outputs if n not in set(pairs.values())]
    if not ys:
        raise ContractError(f"{path}: every output is a state output; nothing to predict")
    given = _given_axes(batch_axis, data[0], pairs, inputs, path)
    states = []
    for name, out in pairs.items():
        arg = inputs[name]
        shape = declared_shape(arg)
        axis = given.get(name, next(iter(free_axes(shape)), None))
        states.append(StateBinding(name, name, out, shape, _dtype(arg, path), axis))
    x = inputs[data[0]]
    io = ModelIO(data[0], declared_shape(x), _dtype(x, path), model_outputs(ys[0]),
                 tuple(states), fixed,
                 batch_axis=None, output_batch_axis=None)
    probe = Probe(session)
    io = find_batch(probe, io, given, path)
    io, checked = find_time(probe, io, path)
    note = (f"{path}: no rnnstream contract; streaming it as a foreign model. State pairs "
            f"({how}): " + ", ".join(f"{s.input}->{s.output}" for s in io.states)
            + f"; data input {io.input!r}, prediction output {io.output!r}"
            + (f" (other outputs {ys[1:]} are ignored)" if len(ys) > 1 else "")
            + f"; {_batch_text(io)}; {checked}")
    return io, note


def _batch_text(io: ModelIO) -> str:
    if io.batch_axis is None:
        return f"no batch axis ({io.batch_note})"
    return (f"batch axis {io.batch_axis} of {io.input!r}, "
            + ", ".join(f"{s.batch_axis} of {s.input!r}" for s in io.states))


def _given_axes(batch_axis: BatchAxis, data: str, pairs: Mapping[str, str],
                inputs: Mapping[str, Any], path: str) -> dict[str, int]:
    """``batch_axis=`` as input name -> axis, each checked to be a free axis of that input."""
    if batch_axis is None:
        return {}
    given = dict(batch_axis) if isinstance(batch_axis, Mapping) else {data: batch_axis}
    out = {}
    for name, axis in given.items():
        if name != data and name not in pairs:
            raise ContractError(f"{path}: batch_axis names {name!r}, which is neither the data "
                                f"input {data!r} nor a state input {sorted(pairs)}")
        shape = declared_shape(inputs[name])
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not (
                -len(shape) <= axis < len(shape)):
            raise ContractError(f"{path}: batch_axis gives {axis!r} for {name!r} "
                                f"{list(inputs[name].shape)}; expected an axis number below "
                                f"{len(shape)}")
        axis = int(axis) % len(shape)
        if shape[axis] is not None:
            raise ContractError(f"{path}: batch_axis gives axis {axis} of {name!r} "
                                f"{list(inputs[name].shape)}, which is fixed to {shape[axis]}; "
                                "a batch axis is a free (dynamic) one")
        out[name] = axis
    return out


# -- probing: what onnxruntime says about the axes and the pairs (load time only) --------------
MAX_COMBOS = 64  # batch-axis candidates tried (data input axis x each state's free axes)
ROUND_TRIP_POINTS = 4
# Tolerance of the round-trip check, per compared tensor (the prediction at each point, each
# final state): ROUND_TRIP_ULPS float rounding steps at the tensor's scale per point, plus
# NUDGE_FACTOR times how far the same sequence call moves when every input is nudged by one
# ulp (how much this model amplifies rounding). One call over k points and k calls of one
# point may run different kernels, so they may round differently, by a few ulps a point; a
# swapped pair or a wrong output moves a state by a fair fraction of its own size (~1e-1
# here), 10^4 times or more above this bound.
ROUND_TRIP_ULPS = 32
NUDGE_FACTOR = 16


class Probe:
    """Runs a model on small seeded inputs; a failing onnxruntime call is an answer (None)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.rng = np.random.default_rng(0)
        self.options = ort.RunOptions()
        self.options.log_severity_level = 4  # a refused candidate is an answer, not an error

    def run(self, io: ModelIO, x: np.ndarray, states: Sequence[np.ndarray]
            ) -> list[np.ndarray] | None:
        feeds = {io.input: x, **{s.input: a for s, a in zip(io.states, states, strict=True)},
                 **io.fixed}
        try:
            return self.session.run(io.fetch, feeds, self.options)
        except ORT_ERRORS:
            return None

    def values(self, shape: Sequence[int], dtype: np.dtype, scale: float = 1.0) -> np.ndarray:
        if dtype.kind != "f":
            return np.zeros(shape, dtype)
        return (self.rng.standard_normal(shape) * scale).astype(dtype)


def _sized(shape: Sequence[Dim], sizes: Mapping[int, int]) -> tuple[int, ...]:
    """A declared shape with its free axes set: ``sizes[axis]``, else 1."""
    return tuple(sizes.get(i, 1) if d is None else d for i, d in enumerate(shape))


def _grown_axis(small: Sequence[int], big: Sequence[int], n: int) -> int | None:
    """The one axis that is 1 in ``small`` and ``n`` in ``big`` (None: not exactly one)."""
    if len(small) != len(big):
        return None
    grown = [i for i, (a, b) in enumerate(zip(small, big, strict=True)) if a != b]
    if len(grown) != 1 or (small[grown[0]], big[grown[0]]) != (1, n):
        return None
    return grown[0]


def find_batch(probe: Probe, io: ModelIO, given: Mapping[str, int], path: str) -> ModelIO:
    """``io`` with the batch axes found: of the data input, of each state and of the prediction.

    Each candidate (a free axis of the data input, one of each state) is run at batch 2 with
    onnxruntime; it is the batch when every state output keeps that batch and each stream's
    outputs are what it gives alone at batch 1 (the axis the outputs follow).
    """
    x_free = free_axes(io.input_shape)
    if not x_free:
        return replace(io, batch_note=f"the data input {io.input!r} has no free axis")
    per_state = []
    for s in io.states:
        axes = [given[s.input]] if s.input in given else free_axes(s.shape)
        if not axes:
            return replace(io, batch_note=f"state {s.input!r} {_dims(s.shape)} has no free axis")
        per_state.append(axes)
    xs = [given[io.input]] if io.input in given else x_free
    combos = list(itertools.islice(((a, c) for a in xs for c in itertools.product(*per_state)),
                                   MAX_COMBOS))
    found = []
    for a, c in combos:
        y_axis = _batch_follows(probe, io, a, c)
        if y_axis is not None:
            found.append((a, c, y_axis))
    if len(found) == 1:
        a, c, y_axis = found[0]
        states = tuple(replace(s, batch_axis=ax) for s, ax in zip(io.states, c, strict=True))
        return replace(io, states=states, batch_axis=a, output_batch_axis=y_axis)
    if given:
        raise ContractError(
            f"{path}: batch_axis={dict(given)}: onnxruntime does not run this model as a batch "
            f"of streams along {'those axes' if not found else 'them alone'} (tried "
            f"{len(combos)} combination(s) of free axes of {io.input!r} and the states); give "
            "the batch axis of every state too, e.g. batch_axis={'x': 1, 'h0': 1}")
    if not found:
        return replace(io, batch_note=(
            f"no free axis of {io.input!r} {_dims(io.input_shape)} carries a batch of streams "
            "when onnxruntime runs it at batch 2"))
    return replace(io, batch_note=(
        f"free axes {sorted({a for a, _, _ in found})} of {io.input!r} "
        f"{_dims(io.input_shape)} each behave as a batch of streams; say which with "
        "batch_axis=N (or a mapping per input name)"))


def _batch_follows(probe: Probe, io: ModelIO, a: int, axes: Sequence[int]) -> int | None:
    """The prediction's batch axis when (``a``, ``axes``) is the batch, else None."""
    x = probe.values(_sized(io.input_shape, {a: 2}), io.input_dtype)
    states = [probe.values(_sized(s.shape, {ax: 2}), s.dtype, 0.1)
              for s, ax in zip(io.states, axes, strict=True)]
    both = probe.run(io, x, states)
    if both is None or any(o.shape != i.shape for i, o in zip(states, both[1:], strict=True)):
        return None
    y_axis = None
    for j in (0, 1):
        alone = probe.run(io, np.take(x, [j], axis=a),
                          [np.take(v, [j], axis=ax) for v, ax in zip(states, axes, strict=True)])
        if alone is None:
            return None
        y_axis = _grown_axis(alone[0].shape, both[0].shape, 2)
        if y_axis is None:
            return None
        for got, ax, want in zip(both, (y_axis, *axes), alone, strict=True):
            if not _near(np.take(got, [j], axis=ax), want):
                return None
    return y_axis


def _near(a: np.ndarray, b: np.ndarray) -> bool:
    """Loosely equal: batch 1 and batch 2 may run other kernels; a wrong axis is far off."""
    if a.dtype.kind != "f":
        return bool(np.array_equal(a, b))
    scale = float(np.max(np.abs(b), initial=0.0))
    return bool(np.allclose(a, b, rtol=1e-3, atol=1e-4 * (1.0 + scale)))


def _dims(shape: Sequence[Dim]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def find_time(probe: Probe, io: ModelIO, path: str) -> tuple[ModelIO, str]:
    """``io`` with its time axis (a free axis of the data input, not the batch, along which
    the prediction has one row per point while the states keep their shape), and a note on
    the round-trip check of the pairs, which runs whenever a time axis is found."""
    found = []
    for a in free_axes(io.input_shape):
        if a == io.batch_axis:
            continue
        x = probe.values(_sized(io.input_shape, {a: 3}), io.input_dtype)
        states = [probe.values(s.full_shape(1), s.dtype, 0.1) for s in io.states]
        three = probe.run(io, x, states)
        one = probe.run(io, np.take(x, [0], axis=a), states)
        if three is None or one is None or any(
                o.shape != i.shape for i, o in zip(states, three[1:], strict=True)):
            continue
        y_axis = _grown_axis(one[0].shape, three[0].shape, 3)
        if y_axis is not None:
            found.append((a, y_axis))
    if len(found) != 1:
        why = ("several free axes could be time" if found
               else "no free time axis, or time fixed to 1")
        return io, (f"{why}: prime runs one call per point, and the state pairs are not "
                    "checked by a round trip")
    timed = replace(io, time_axis=found[0][0], output_time_axis=found[0][1])
    return timed, check_round_trip(probe, timed, path)


def check_round_trip(probe: Probe, io: ModelIO, path: str) -> str:
    """Run a few seeded points from a seeded non-zero state as one call, and one call at a time
    carrying each state output into its paired input; ContractError unless they agree."""
    bad, worst = _round_trip(probe, io)
    if not bad:
        return (f"time axis {io.time_axis} of {io.input!r}; the state pairs round-trip "
                f"({ROUND_TRIP_POINTS} points in one call = one call per point; largest "
                f"difference {worst:.2g}x the tolerance)")
    raise ContractError(
        f"{path}: the state pairs do not round-trip: {ROUND_TRIP_POINTS} seeded points run "
        "as one call differ from the same points run one call at a time with each state "
        "output fed back into its paired input (" + "; ".join(bad) + "). A pair is swapped "
        "(e.g. h0->cn, c0->hn) or names the wrong output: fix state_map={input: output}"
        + _suggestion(probe, io) + " (if every pair is right, the model looks ahead in time, "
        "e.g. a bidirectional layer, and cannot be streamed); or " + wrap_hint(path))


def _round_trip(probe: Probe, io: ModelIO) -> tuple[list[str], float]:
    """(each tensor that differs, with its figures; the largest difference / tolerance)."""
    k, t = ROUND_TRIP_POINTS, io.time_axis
    size = math.prod(d for d in io.input_shape if d is not None)
    rows = probe.values((k, size), io.input_dtype)
    start = [probe.values(s.full_shape(1), s.dtype, 0.1) for s in io.states]
    x = input_array(io, rows, t)
    whole = probe.run(io, x, start)
    nudged = probe.run(io, _nudge(x), [_nudge(a) for a in start])
    state, ys = start, []
    for i in range(k):
        out = probe.run(io, input_array(io, rows[i:i + 1], t), state)
        if out is None:
            break
        ys.append(out[0].reshape(-1))
        state = out[1:]
    if whole is None or nudged is None or len(ys) != k:
        return ["onnxruntime could not run the points both ways"], math.inf
    names = [repr(io.output), *(f"{s.input}->{s.output}" for s in io.states)]
    got = [np.stack(ys), *state]
    want = [output_rows(whole[0], io.output_time_axis, k), *whole[1:]]
    moved = [output_rows(nudged[0], io.output_time_axis, k), *nudged[1:]]
    bad, worst = [], 0.0
    for name, g, w, m in zip(names, got, want, moved, strict=True):
        diff, tol = _difference(g, w, m, k)
        worst = max(worst, diff / tol if tol else (0.0 if diff == 0 else math.inf))
        if diff > tol:
            bad.append(f"{name}: max |diff| {diff:.3g}, tolerance {tol:.3g}")
    return bad, worst


def _difference(got: np.ndarray, want: np.ndarray, moved: np.ndarray, k: int
                ) -> tuple[float, float]:
    """(max |got - want|, the tolerance: see ROUND_TRIP_ULPS)."""
    if got.shape != want.shape:
        return math.inf, 0.0
    g, w, m = (a.astype(np.float64) for a in (got, want, moved.reshape(want.shape)))
    eps = float(np.finfo(want.dtype).eps) if want.dtype.kind == "f" else 0.0
    scale = float(np.max(np.abs(w), initial=0.0))
    nudge = float(np.max(np.abs(m - w), initial=0.0))
    diff = float(np.max(np.abs(g - w), initial=0.0))
    return diff, NUDGE_FACTOR * nudge + ROUND_TRIP_ULPS * k * eps * scale


def _nudge(a: np.ndarray) -> np.ndarray:
    """``a`` moved by one ulp (float inputs only)."""
    return np.nextafter(a, np.inf, dtype=a.dtype) if a.dtype.kind == "f" else a


def _suggestion(probe: Probe, io: ModelIO) -> str:
    """', e.g. state_map={...}' when exactly one other pairing of the same outputs (states of
    matching shapes, at most 4 of them) round-trips."""
    if len(io.states) > 4:
        return ""
    outs = [s.output for s in io.states]
    fits = []
    for perm in itertools.permutations(outs):
        if list(perm) == outs or not all(
                _compatible(s.shape, o.shape) for s, o in zip(
                    io.states, (next(t for t in io.states if t.output == p) for p in perm),
                    strict=True)):
            continue
        other = replace(io, states=tuple(replace(s, output=o)
                                         for s, o in zip(io.states, perm, strict=True)))
        if not _round_trip(probe, other)[0]:
            fits.append(dict(zip((s.input for s in io.states), perm, strict=True)))
    return f", e.g. state_map={fits[0]}" if len(fits) == 1 else ""


def _dtype(arg: Any, path: str) -> np.dtype:
    if arg.type not in ORT_DTYPES:
        raise ContractError(f"{path}: input {arg.name!r} has type {arg.type}, which the runtime "
                            f"cannot feed (supported: {sorted(ORT_DTYPES)})")
    return ORT_DTYPES[arg.type]


def _fixed(inputs: Mapping[str, Any], given: Mapping[str, Any], path: str) -> dict[str, np.ndarray]:
    fixed = {}
    for name, value in given.items():
        if name not in inputs:
            raise ContractError(f"{path}: fixed_inputs names {name!r}, but the model's inputs "
                                f"are {sorted(inputs)}")
        fixed[name] = np.ascontiguousarray(value, dtype=_dtype(inputs[name], path))
    return fixed


def _check_state_map(state_map: Mapping[str, str], inputs: Mapping[str, Any],
                     outputs: Mapping[str, Any], fixed: Mapping[str, Any], path: str) -> None:
    for i, o in state_map.items():
        if i not in inputs or o not in outputs or i in fixed:
            raise ContractError(
                f"{path}: state_map pairs input {i!r} with output {o!r}, but the model's inputs "
                f"are {sorted(inputs)} and its outputs {sorted(outputs)}"
            )
        if not _compatible(declared_shape(inputs[i]), declared_shape(outputs[o])):
            raise ContractError(
                f"{path}: state_map pairs {i!r} {list(inputs[i].shape)} with {o!r} "
                f"{list(outputs[o].shape)}, whose shapes differ"
            )
    if len(set(state_map.values())) != len(state_map):
        raise ContractError(f"{path}: state_map feeds one output to several inputs: "
                            f"{dict(state_map)}")
