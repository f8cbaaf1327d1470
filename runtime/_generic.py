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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from ._io import ORT_DTYPES, Dim, ModelIO, StateBinding, declared_shape
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


def generic_io(
    session: ort.InferenceSession,
    path: str,
    state_map: Mapping[str, str] | None,
    fixed_inputs: Mapping[str, Any] | None,
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
    states = []
    for name, out in pairs.items():
        arg = inputs[name]
        dtype = _dtype(arg, path)
        shape = declared_shape(arg)
        states.append(StateBinding(name, name, out, shape, dtype,
                                next((i for i, d in enumerate(shape) if d is None), None)))
    x = inputs[data[0]]
    io = ModelIO(data[0], declared_shape(x), _dtype(x, path), ys[0], tuple(states), fixed)
    note = (f"{path}: no rnnstream contract; streaming it as a foreign model. State pairs "
            f"({how}): " + ", ".join(f"{s.input}->{s.output}" for s in states)
            + f"; data input {io.input!r}, prediction output {io.output!r}"
            + (f" (other outputs {ys[1:]} are ignored)" if len(ys) > 1 else ""))
    return io, note


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
