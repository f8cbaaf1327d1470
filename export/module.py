"""``export_module``: any torch module with ``forward(x, state) -> (y, state)`` gets the contract.

The classic "RNNs for time series" lesson has users write their own module::

    class RNN(nn.Module):                       # forward(x [B, T, F], hidden [L, B, H])
        def forward(self, x, hidden):           #   -> (output [B*T, K], hidden [L, B, H])
            r_out, hidden = self.rnn(x, hidden)
            return self.fc(r_out.view(-1, self.hidden_dim)), hidden

and :func:`export_module` turns such a module into an rnnstream model in one call. Four steps,
and nothing is written unless all of them pass:

1. **Probe the layout** (:func:`probe_layout`): the module is called with two batch sizes and two
   lengths (float64, eval mode, no autograd) to find whether ``x`` is batch-first or time-first,
   which axis of each state tensor is the batch (torch's own ``[layers, batch, hidden]``: 1), and
   how ``y`` is laid out: ``[B, T, K]`` (``"btk"``), ``[T, B, K]`` (``"tbk"``) or flattened
   ``[B*T, K]`` in batch-major (``"flat_bt"``, the lesson's ``view(-1, H)``) or time-major
   (``"flat_tb"``) order. It also proves the module streamable: each prediction depends only on
   its own stream's points up to its own time. Any of these can be given instead of probed.
2. **The neutral description**: the module in rnnstream's calling convention (:func:`canonical`:
   raw ``x [B, T, F]``, states batch-first ``[B, ...]``, raw ``y [B, T, K]``, the user's scaling
   applied around it). Both routes below and every parity proof read this one object; the
   exporter never needs to know where the module came from.
3. **Recognise or trace.** A module made of one ``nn.RNN``/``nn.LSTM``/``nn.GRU`` and a head of
   ``nn.Linear`` layers (an ``nn.Sequential`` of Linear, Tanh/ReLU/Sigmoid, Dropout) is rebuilt
   as a :class:`~rnnstream.train.Forecaster` from its weights, checked equal to the module in
   float64 (relative 1e-9), and exported by :func:`~rnnstream.export.export_model`: native ONNX
   recurrent ops, the single-step graph, everything a trained model gets. Any other module is
   traced (``torch.onnx.export``'s TorchScript path, the one that keeps dynamic batch and time
   axes and writes one file) with the states as named graph inputs and outputs, and gets the
   contract's ``custom`` cell (its states declared in the contract).
4. **The proof**, either way: onnxruntime against the module itself run in float64, with the
   bound derived from the module's own float32 error (:mod:`rnnstream.export.verify`), on batch
   1 and 7, time 1 and 50, a non-zero initial state, and a 1,000-step stream fed one point a
   call. ``sample`` (raw points of the series) makes the inputs realistic and gives the contract
   the residual quantiles that intervals start from (:mod:`rnnstream.export.calibrate`).
"""

from __future__ import annotations

import copy
import itertools
import os
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from rnnstream.runtime import spec
from rnnstream.runtime.contract import ModelContract, sidecar_path
from rnnstream.runtime.session import ORT_ERRORS

from .calibrate import sample_calibration
from .errors import ExportError, GraphError, ParityError
from .exporter import ExportReport, check_valid, eval_mode, export_model, write_atomically
from .graph import DEFAULT_OPSET, pin_ir_version
from .metadata import attach_metadata, fingerprint, json_safe, load_contract, tool_versions
from .verify import (
    InputSpec,
    check_sample,
    measure_parity,
    ort_runner,
    session,
    torch_runner,
)

__all__ = ["OUTPUT_LAYOUTS", "Layout", "canonical", "export_module", "probe_layout"]

OUTPUT_LAYOUTS = ("btk", "tbk", "flat_bt", "flat_tb")
# Probe shapes: two batch sizes and two lengths, all different from each other so that an axis
# is told apart by its size (a state's layers or hidden size could equal one of them by chance:
# an axis counts as the batch only when it follows the batch in both probes).
PROBES = ((3, 5), (4, 7))
PROBES_ONE_STREAM = ((1, 5), (1, 7))  # for modules that fail for batch > 1
PROBES_ONE_POINT = ((3, 1), (4, 1))
# A rebuilt Forecaster counts as the module when float64 runs of both agree to this relative
# figure (rounding of float64 alone is ~1e-15; a different function is off by far more).
RECOGNISED_RTOL = 1e-9
_ACTIVATION_NAMES = {"Tanh": "tanh", "ReLU": "relu", "Sigmoid": "sigmoid"}
_TRANSPARENT = ("Dropout", "Identity")  # identities in eval mode


@dataclass(frozen=True)
class Layout:
    """How a module lays out its input, state and output (found by probing, or given)."""

    batch_first: bool
    state_is_tuple: bool  # the state is a tuple of tensors (LSTM's (h, c)), else one tensor
    state_batch_axes: tuple[int, ...]  # per state tensor, its batch axis in the module's layout
    state_rows: tuple[tuple[int, ...], ...]  # per state, its shape without the batch axis
    output: str  # one of OUTPUT_LAYOUTS
    n_features: int
    n_targets: int
    accepts_none: bool  # forward(x, None) starts from the module's own initial state
    # forward fails for more than one stream (the lesson's r_out.view(-1, H) needs a contiguous
    # r_out, which torch's batch-first RNN gives only for batch 1): run it one stream a call
    per_stream: bool = False

    def describe(self) -> str:
        states = ", ".join(f"[{_axes_note(row, axis)}]"
                           for row, axis in zip(self.state_rows, self.state_batch_axes,
                                                strict=True))
        x = "[B, T, F]" if self.batch_first else "[T, B, F]"
        y = {"btk": "[B, T, K]", "tbk": "[T, B, K]", "flat_bt": "[B*T, K] (batch-major)",
             "flat_tb": "[T*B, K] (time-major)"}[self.output]
        kind = f"tuple of {len(self.state_rows)}" if self.state_is_tuple else "tensor"
        return (f"x {x} with F={self.n_features}; state: {kind} {states}; "
                f"y {y} with K={self.n_targets}"
                + ("; one stream per call (it fails for batch > 1)" if self.per_stream else ""))


def _axes_note(row: tuple[int, ...], axis: int) -> str:
    dims = [str(d) for d in row]
    dims.insert(axis, "B")
    return ", ".join(dims)


def canonical(module, layout: Layout, scaling: Mapping[str, Sequence[float]] | None):
    """``module`` in rnnstream's calling convention, as a torch module:
    ``forward(x raw [B, T, F], states (each [B, *row])) -> (y raw [B, T, K], states)``.

    ``scaling`` (what the user applied outside the module): ``x`` is normalised with
    ``feature_mean``/``feature_std`` before the module sees it, and its output is mapped back
    with ``target_std``/``target_mean``.
    """
    import torch
    from torch import nn

    f, k = layout.n_features, layout.n_targets
    stats = _scaling_arrays(scaling, f, k)

    class _Canonical(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module
            for name, value in stats.items():
                self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32))

        def forward(self, x, state=None):
            b = x.shape[0]
            if state is None:
                state = tuple(x.new_zeros((b, *row)) for row in layout.state_rows)
            if not layout.per_stream or b == 1:
                return self._run(x, state)
            parts = [self._run(x[i:i + 1], tuple(s[i:i + 1] for s in state)) for i in range(b)]
            return (torch.cat([p[0] for p in parts]),
                    tuple(torch.cat([p[1][j] for p in parts]) for j in range(len(state))))

        def _run(self, x, state):
            b, t = x.shape[0], x.shape[1]
            z = (x - self.feature_mean) / self.feature_std
            if not layout.batch_first:
                z = z.transpose(0, 1)
            own = tuple(s.movedim(0, a).contiguous()
                        for s, a in zip(state, layout.state_batch_axes, strict=True))
            y, after = self.inner(z, own if layout.state_is_tuple else own[0])
            after = tuple(after) if layout.state_is_tuple else (after,)
            y = _to_btk(y, layout.output, b, t, k)
            y = y * self.target_std + self.target_mean
            return y, tuple(s.movedim(a, 0)
                            for s, a in zip(after, layout.state_batch_axes, strict=True))

    return _Canonical().eval()


def _to_btk(y, output: str, b: int, t: int, k: int):
    if output == "btk":
        return y
    if output == "tbk":
        return y.transpose(0, 1)
    if output == "flat_bt":
        return y.reshape(b, t, k)
    return y.reshape(t, b, k).transpose(0, 1)


def _scaling_arrays(scaling: Mapping[str, Sequence[float]] | None, f: int, k: int
                    ) -> dict[str, np.ndarray]:
    """feature_mean/std [F] and target_mean/std [K] (identity where not given), checked."""
    given = dict(scaling or {})
    unknown = set(given) - {"feature_mean", "feature_std", "target_mean", "target_std"}
    if unknown:
        raise ExportError(f"scaling has unknown keys {sorted(unknown)}; expected feature_mean, "
                          "feature_std, target_mean, target_std (lists of numbers)")
    out = {}
    for name, size, default in (("feature_mean", f, 0.0), ("feature_std", f, 1.0),
                                ("target_mean", k, 0.0), ("target_std", k, 1.0)):
        value = np.asarray(given.get(name, np.full(size, default)), np.float64).reshape(-1)
        if value.size == 1 and size > 1:
            value = np.full(size, float(value[0]))
        if value.size != size or not np.all(np.isfinite(value)):
            raise ExportError(f"scaling[{name!r}] has {value.size} value(s); expected {size} "
                              "finite numbers (one per feature or target)")
        if name.endswith("std") and not np.all(value > 0):
            raise ExportError(f"scaling[{name!r}] must be positive, got {value.tolist()}")
        out[name] = value
    return out


# -- probing --------------------------------------------------------------------------------
def _call(module, x, state):
    """``module(x, state)`` -> (y, state tuple, is_tuple); ExportError when it is not the
    lesson's contract ``forward(x, state) -> (y, state)``."""
    try:
        out = module(x, state)
    except TypeError as exc:
        raise ExportError(
            f"calling module(x, state) failed ({exc}); rnnstream exports modules whose forward "
            "takes the input and the state and returns (y, next_state), as the lesson's "
            "RNN.forward(x, hidden) does"
        ) from exc
    return _split(out)


def _split(out) -> tuple[Any, tuple, bool]:
    """What forward returned -> (y, state tuple, is_tuple), or ExportError."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        got = type(out).__name__ + (f" of {len(out)}" if isinstance(out, (tuple, list)) else "")
        raise ExportError(f"module(x, state) returned a {got}; expected a pair (y, next_state)")
    y, s = out
    return y, *_state_tuple(s)


def _state_tuple(s) -> tuple[tuple, bool]:
    import torch

    if isinstance(s, torch.Tensor):
        return (s,), False
    if isinstance(s, (tuple, list)) and s and all(isinstance(t, torch.Tensor) for t in s):
        return tuple(s), True
    raise ExportError(
        f"the state the module returns is a {type(s).__name__}"
        + (f" of {[type(t).__name__ for t in s]}" if isinstance(s, (tuple, list)) else "")
        + "; rnnstream carries a tensor or a tuple of tensors (h, or (h, c)). Return those "
        "from forward, e.g. `return y, (h, c)`"
    )


def _recurrent(module):
    from torch import nn

    found = [m for m in module.modules() if isinstance(m, nn.RNNBase)]
    return found[0] if len(found) == 1 else None


def _initial_states(axes: Sequence[int], b: int, state_example):
    """A zero state for batch ``b`` shaped like ``state_example`` (batch axes ``axes``)."""
    import torch

    example, is_tuple = _state_tuple(state_example)
    states = []
    for t, axis in zip(example, axes, strict=True):
        shape = list(t.shape)
        shape[axis] = b
        states.append(torch.zeros(shape, dtype=torch.float64))
    return tuple(states) if is_tuple else states[0]


def probe_layout(
    module,
    n_features: int,
    *,
    batch_first: bool | None = None,
    state_batch_axis: int | Sequence[int] | None = None,
    output_layout: str | None = None,
    state_example=None,
) -> tuple[Layout, list[str]]:
    """Find ``module``'s layout by calling it (float64 copy, eval mode); (layout, notes).

    Raises ExportError naming the argument to pass when the module cannot be understood.
    """
    import torch

    m = copy.deepcopy(module).double().eval()
    notes: list[str] = []
    rnn = _recurrent(m)
    if batch_first is None and rnn is not None:
        batch_first = bool(rnn.batch_first)
        notes.append(f"batch_first={batch_first} (from its {type(rnn).__name__})")
    candidates = [batch_first] if batch_first is not None else [True, False]
    gen = torch.Generator().manual_seed(0)
    results = {}
    errors = {}
    per_stream = False
    for probes in (PROBES, PROBES_ONE_STREAM):
        for bf in candidates:
            try:
                results[bf] = _probe_one(m, n_features, bf, state_batch_axis, state_example,
                                         gen, probes)
            except ExportError as exc:
                errors[bf] = exc
            except (RuntimeError, ValueError, IndexError) as exc:
                errors[bf] = ExportError(f"{type(exc).__name__}: {exc}")
        if results:
            break
        first = next(iter(errors.values()))
        per_stream = True
    if per_stream and results:
        why = str(first).split(";")[0].split(" (")[0]  # the error's first clause is enough
        notes.append(f"it fails for batch > 1 ({why}): it is run one stream a call as the "
                     "reference, and exported for any batch")
    if not results:
        if len(errors) == 1:
            raise next(iter(errors.values()))
        raise ExportError(
            "the module could not be run batch-first nor time-first "
            f"({errors[True]}; {errors[False]}); pass batch_first=, state_batch_axis= and "
            "check that forward(x, state) -> (y, state)"
        )
    if len(results) > 1:
        raise ExportError("the module runs both batch-first and time-first with consistent "
                          "shapes; say which with batch_first=True or False")
    bf, (axes, rows, is_tuple, k, accepts_none) = next(iter(results.items()))
    if batch_first is None:
        notes.append(f"batch_first={bf} (probed)")
    out = output_layout or _probe_output(m, n_features, bf, axes, is_tuple, rows,
                                         accepts_none, gen, 1 if per_stream else PROBES[0][0])
    if out not in OUTPUT_LAYOUTS:
        raise ExportError(f"output_layout={out!r}: expected one of {list(OUTPUT_LAYOUTS)}")
    layout = Layout(bf, is_tuple, axes, rows, out, n_features, k, accepts_none, per_stream)
    _check_streamable(m, layout, gen)
    notes.append(f"layout: {layout.describe()}")
    return layout, notes


def _zero_state(rows, axes, b: int, is_tuple: bool):
    import torch

    states = []
    for row, axis in zip(rows, axes, strict=True):
        shape = list(row)
        shape.insert(axis, b)
        states.append(torch.zeros(shape, dtype=torch.float64))
    return tuple(states) if is_tuple else states[0]


def _x(bf: bool, b: int, t: int, f: int, gen):
    import torch

    x = torch.randn((b, t, f), generator=gen, dtype=torch.float64)
    return x if bf else x.transpose(0, 1).contiguous()


def _probe_one(m, f: int, bf: bool, given_axes, state_example, gen, probes):
    """One layout hypothesis: (state batch axes, rows, is_tuple, K, accepts_none)."""
    import torch

    shapes = []
    accepts_none = state_example is None
    with torch.no_grad():
        for b, t in probes:
            x = _x(bf, b, t, f, gen)
            state = None
            if state_example is not None:
                ex, _ = _state_tuple(state_example)
                axes = _given_axes(given_axes, ex)
                state = _initial_states(axes, b, state_example)
            try:
                if state is not None:
                    y, states, is_tuple = _call(m, x, state)
                else:  # may refuse None as a state: then torch's zeros, below
                    y, states, is_tuple = _split(m(x, None))
            except (RuntimeError, TypeError, AttributeError) as exc:
                if state is not None:
                    raise
                zeros = _rnn_zero_state(m, b)
                if zeros is None:
                    raise ExportError(
                        f"module(x, None) failed ({type(exc).__name__}: {exc}); pass "
                        "state_example=<a state for one stream> so that rnnstream can build "
                        "the zero state"
                    ) from exc
                accepts_none = False
                y, states, is_tuple = _call(m, x, zeros)
            shapes.append((b, t, tuple(y.shape), tuple(tuple(s.shape) for s in states)))
    (b0, t0, y0, s0), (b1, t1, y1, s1) = shapes
    if len(s0) != len(s1):
        raise ExportError("the module returns a different number of state tensors for "
                          "different batch sizes")
    if b0 == b1 == 1 and given_axes is None:  # one stream at a time: one-point calls tell
        given_axes = _one_point_axes(m, f, bf, state_example, gen) or _given_axes(None, s0)
    axes = []
    rows = []
    for i, (a, c) in enumerate(zip(s0, s1, strict=True)):
        axis = _given_axes(given_axes, s0)[i] if given_axes is not None else _follows(a, c,
                                                                                      b0, b1)
        if axis is None:
            raise ExportError(
                f"state {i} has shape {list(a)} for batch {b0} and {list(c)} for batch {b1}: "
                "no axis follows the batch; pass state_batch_axis= (torch's [layers, batch, "
                "hidden] is 1)"
            )
        axes.append(axis)
        rows.append(tuple(d for j, d in enumerate(a) if j != axis))
    if len(y0) == 3 and y0[2] == y1[2]:
        k = int(y0[2])
    elif len(y0) == 2 and y0[1] == y1[1] and {y0[0], y1[0]} == {b0 * t0, b1 * t1}:
        k = int(y0[1])
    else:
        raise ExportError(
            f"for x of {b0} streams x {t0} points the module returns y of shape {list(y0)}: "
            "not one prediction per point. rnnstream streams modules whose output has one row "
            "per input point ([B, T, K], [T, B, K] or the lesson's [B*T, K]); if forward "
            "predicts from the last step only (fc(r_out[:, -1])), return fc(r_out) instead"
        )
    return tuple(axes), tuple(rows), is_tuple, k, accepts_none


def _one_point_axes(m, f, bf, state_example, gen) -> list[int] | None:
    """State batch axes from one-point calls of 3 and 4 streams (which a module that fails for
    batch > 1 over several points may still run), or None."""
    try:
        axes = _probe_one(m, f, bf, None, state_example, gen, PROBES_ONE_POINT)[0]
    except (ExportError, RuntimeError, ValueError, IndexError):
        return None
    return list(axes)


def _given_axes(given, states) -> list[int]:
    if given is None:
        return [1 if len(s.shape) == 3 else 0 for s in states]
    if isinstance(given, int):
        return [given] * len(states)
    axes = list(given)
    if len(axes) != len(states):
        raise ExportError(f"state_batch_axis={axes!r}: one axis per state tensor "
                          f"({len(states)}) expected")
    return axes


def _follows(a: tuple[int, ...], c: tuple[int, ...], b0: int, b1: int) -> int | None:
    if len(a) != len(c):
        return None
    hits = [j for j in range(len(a)) if a[j] == b0 and c[j] == b1
            and all(a[i] == c[i] for i in range(len(a)) if i != j)]
    return hits[0] if len(hits) == 1 else None


def _rnn_zero_state(m, b: int):
    """Torch's zero state [layers, b, hidden] of the module's only recurrent layer, if any."""
    import torch
    from torch import nn

    rnn = _recurrent(m)
    if rnn is None:
        return None
    h = torch.zeros((rnn.num_layers * (2 if rnn.bidirectional else 1), b,
                     rnn.proj_size or rnn.hidden_size), dtype=torch.float64)
    if isinstance(rnn, nn.LSTM):
        return h, torch.zeros((rnn.num_layers * (2 if rnn.bidirectional else 1), b,
                               rnn.hidden_size), dtype=torch.float64)
    return h


def _probe_output(m, f, bf, axes, is_tuple, rows, accepts_none, gen, b: int) -> str:
    """Which of OUTPUT_LAYOUTS: change one point of stream 0 at the last time and see where y
    changes (one row, or one [b, t] cell)."""
    import torch

    t = PROBES[0][1]
    x = _x(bf, b, t, f, gen)
    state = None if accepts_none else _zero_state(rows, axes, b, is_tuple)
    with torch.no_grad():
        y, _, _ = _call(m, x, state)
        x2 = x.clone()
        if bf:
            x2[0, t - 1] += 1.0
        else:
            x2[t - 1, 0] += 1.0
        y2, _, _ = _call(m, x2, state)
    changed = (y2 - y).abs().reshape(y.shape[0], -1).amax(dim=1) > 0
    rows_changed = torch.nonzero(changed).flatten().tolist()
    if y.dim() == 2:
        if rows_changed == [t - 1]:
            return "flat_bt"
        if rows_changed == [(t - 1) * b]:
            return "flat_tb"
    elif y.dim() == 3:
        if y.shape[0] == b and rows_changed == [0]:
            return "btk"
        if y.shape[0] == t and rows_changed == [t - 1]:
            return "tbk"
    raise ExportError(
        f"changing one point of one stream changed output rows {rows_changed} of y "
        f"{list(y.shape)}; expected exactly one row. Pass output_layout= (one of "
        f"{list(OUTPUT_LAYOUTS)}) if the module's output is laid out per point"
    )


def _check_streamable(m, layout: Layout, gen) -> None:
    """Each prediction may depend only on its own stream's points up to its own time: change
    the points after time ``t0`` and no prediction up to ``t0`` may move."""
    import torch

    b, t = PROBES[1]
    wrapped = canonical(m, layout, None).double()
    x = torch.randn((b, t, layout.n_features), generator=gen, dtype=torch.float64)
    t0 = t // 2
    with torch.no_grad():
        y, _ = wrapped(x)
        x2 = x.clone()
        x2[:, t0 + 1:] += torch.randn(x2[:, t0 + 1:].shape, generator=gen,
                                      dtype=torch.float64)
        x2[1:] += 1.0  # other streams too: stream 0 must not see them
        y2, _ = wrapped(x2)
    if not torch.equal(y[0, :t0 + 1], y2[0, :t0 + 1]):
        moved = float((y[0, :t0 + 1] - y2[0, :t0 + 1]).abs().max())
        raise ExportError(
            f"the module's prediction at time {t0} changes (by {moved:.3g}) when later points "
            "or other streams change: its output mixes time steps or streams, so it cannot be "
            "streamed one point at a time. rnnstream exports modules whose y[t] depends on "
            "x[:t+1] of the same stream only (a recurrent layer, then a per-step head)"
        )


# -- recognising the lesson's shape ---------------------------------------------------------
def _recognise(module, layout: Layout) -> tuple[Any | None, str]:
    """(ForecasterConfig and the weights to load, or None, reason)."""
    from torch import nn

    from rnnstream.train.model import ForecasterConfig

    rnn = _recurrent(module)
    if rnn is None:
        return None, "no single nn.RNN/nn.LSTM/nn.GRU in it"
    cell = {"RNN_TANH": "rnn", "LSTM": "lstm", "GRU": "gru"}.get(rnn.mode)
    if cell is None or rnn.bidirectional or getattr(rnn, "proj_size", 0):
        return None, (f"its {type(rnn).__name__} is {rnn.mode}"
                      f"{', bidirectional' if rnn.bidirectional else ''}"
                      f"{', with proj_size' if getattr(rnn, 'proj_size', 0) else ''}")
    linears = [mod for mod in module.modules() if isinstance(mod, nn.Linear)]
    own = {id(p) for mod in (rnn, *linears) for p in mod.parameters()}
    stray = [n for n, p in module.named_parameters() if id(p) not in own]
    if stray or not linears:
        return None, (f"parameters outside the recurrent layer and linear layers: {stray}"
                      if stray else "no linear head")
    activation, problem = _head_activation(module, linears)
    if problem:
        return None, problem
    sizes = [lin.out_features for lin in linears]
    if linears[0].in_features != rnn.hidden_size or layout.n_targets != sizes[-1] or any(
            linears[i + 1].in_features != sizes[i] for i in range(len(linears) - 1)):
        return None, "its linear layers do not chain from the hidden size to the outputs"
    if rnn.input_size != layout.n_features or len(layout.state_rows) != len(
            spec.CELLS[cell].states) or rnn.num_layers > 8:
        return None, "its states or sizes differ from what the recurrent layer implies"
    config = ForecasterConfig(cell=cell, n_features=layout.n_features,
                              n_targets=layout.n_targets, hidden=rnn.hidden_size,
                              layers=rnn.num_layers, head_hidden=sizes[:-1],
                              head_activation=activation or "tanh")
    return (config, rnn, linears), ""


def _head_activation(module, linears) -> tuple[str | None, str]:
    """The one activation between the head's linear layers (None for a one-layer head)."""
    from torch import nn

    if len(linears) == 1:
        return None, ""
    parents = [mod for mod in module.modules() if isinstance(mod, nn.Sequential)
               and all(any(lin is c for c in mod.children()) for lin in linears)]
    if not parents:
        return None, "its linear layers are not one nn.Sequential head"
    kinds = [type(c).__name__ for c in parents[0].children()]
    lin_at = [i for i, c in enumerate(parents[0].children()) if isinstance(c, nn.Linear)]
    if lin_at[0] != 0 or lin_at[-1] != len(kinds) - 1:
        return None, "its head does not start and end with a linear layer"
    acts = set()
    for a, b in itertools.pairwise(lin_at):
        between = [k for k in kinds[a + 1:b] if k not in _TRANSPARENT]
        if len(between) != 1 or between[0] not in _ACTIVATION_NAMES:
            return None, f"its head has {between} between linear layers"
        acts.add(_ACTIVATION_NAMES[between[0]])
    if len(acts) != 1:
        return None, f"its head mixes activations {sorted(acts)}"
    return acts.pop(), ""


def _rebuild(found, layout: Layout, stats: Mapping[str, np.ndarray], names):
    """The Forecaster with the module's weights and the user's scaling."""
    import torch

    from rnnstream.train.model import Forecaster

    config, rnn, linears = found
    config.feature_names, config.target_names = list(names[0]), list(names[1])
    model = Forecaster(config).eval()
    with torch.no_grad():
        for name, p in model.rnn.named_parameters():
            src = getattr(rnn, name, None)
            p.copy_(src.detach() if src is not None else torch.zeros_like(p))  # bias=False
        targets = list(model.head) if isinstance(model.head, torch.nn.Sequential) \
            else [model.head]
        mine = [mod for mod in targets if isinstance(mod, torch.nn.Linear)]
        for dst, src in zip(mine, linears, strict=True):
            dst.weight.copy_(src.weight.detach())
            dst.bias.copy_(src.bias.detach() if src.bias is not None
                           else torch.zeros_like(dst.bias))
    model.set_normalization(stats["feature_mean"], stats["feature_std"], stats["target_mean"],
                            stats["target_std"])
    return model


def _max_rel_diff(a_model, b_model, layout: Layout, seed: int) -> float:
    """max |a - b| / max |b| over y and every state, float64, batch 3, time 20, random
    non-zero initial state."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    a64 = copy.deepcopy(a_model).double().eval()
    b64 = copy.deepcopy(b_model).double().eval()
    x = torch.randn((3, 20, layout.n_features), generator=gen, dtype=torch.float64)
    state = tuple(torch.rand((3, *row), generator=gen, dtype=torch.float64) * 1.6 - 0.8
                  for row in layout.state_rows)
    with torch.no_grad():
        ya, sa = a64(x, state)
        yb, sb = b64(x, state)
    worst = 0.0
    for p, q in zip((ya, *sa), (yb, *sb), strict=True):
        if p.shape != q.shape:
            return float("inf")
        scale = max(float(q.abs().max()), 1e-30)
        worst = max(worst, float((p - q).abs().max()) / scale)
    return worst


# -- the entry point ------------------------------------------------------------------------
def _n_features(module, features, sample) -> int:
    rnn = _recurrent(module)
    if features is not None:
        if rnn is not None and len(features) != rnn.input_size:
            raise ExportError(f"features={list(features)!r} names {len(features)} input(s), but "
                              f"the module's {type(rnn).__name__} takes {rnn.input_size}; give "
                              "one name per input")
        return len(features)
    if sample is not None:
        arr = np.asarray(sample)
        return 1 if arr.ndim == 1 else int(arr.shape[-1])
    if rnn is not None:
        return int(rnn.input_size)
    raise ExportError("cannot tell how many features the module takes: pass features=[...] "
                      "(names of its inputs) or sample=<raw points [time, F]>")


def _names(given: Sequence[str] | None, n: int, prefix: str, what: str) -> list[str]:
    if given is None:
        return [f"{prefix}{i}" for i in range(n)]
    names = [str(v) for v in given]
    if len(names) != n or len(set(names)) != n or not all(names):
        raise ExportError(f"{what}={list(given)!r}: expected {n} distinct non-empty names "
                          f"(the module has {n})")
    return names


def _state_names(given: Sequence[str] | None, n: int) -> tuple[str, ...]:
    if given is not None:
        names = tuple(given)
        reserved = spec.model_state_names()
        if len(names) != n or len(set(names)) != n or not all(
                spec.is_state_name(s) and s not in reserved for s in names):
            raise ExportError(f"state_names={list(given)!r}: expected {n} distinct identifiers "
                              f"(letters, digits, _), not x, y or {', '.join(sorted(reserved))} "
                              "(the states rnnstream's own modes carry)")
        return names
    return ("h",) if n == 1 else ("h", "c") if n == 2 else tuple(f"s{i}" for i in range(n))


@dataclass
class _Job:
    """Everything both routes share."""

    path: Path
    layout: Layout
    wrapped: Any  # the Canonical module
    features: list[str]
    targets: list[str]
    horizon: int
    stats: dict[str, np.ndarray]
    scaling_given: bool
    sample: np.ndarray | None
    metrics: dict[str, Any]
    atol: float | None
    seed: int
    notes: list[str] = field(default_factory=list)


def export_module(
    module,
    path: str | os.PathLike[str],
    *,
    sample=None,
    features: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    horizon: int = 1,
    batch_first: bool | None = None,
    state_batch_axis: int | Sequence[int] | None = None,
    output_layout: str | None = None,
    state_example=None,
    scaling: Mapping[str, Sequence[float]] | None = None,
    state_names: Sequence[str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    route: str = "auto",
    atol: float | None = None,
    seed: int = 0,
    step_graph: bool = True,
) -> ExportReport:
    """Export a torch module with ``forward(x, state) -> (y, state)`` as an rnnstream model.

    ``sample``: raw points of the series ``[time, F]`` (at least 50), for realistic parity
    inputs and the interval quantiles (targets that are features only). ``features``/``targets``:
    names (default ``f0..``; targets default to the features when there are as many, else
    ``t0..``). ``horizon``: y[t] predicts time t + horizon.
    ``batch_first``, ``state_batch_axis``, ``output_layout`` (one of :data:`OUTPUT_LAYOUTS`),
    ``state_example`` (one stream's state, for modules that refuse a None state): given, or
    probed (module docstring). ``scaling``: what you applied outside the module
    (``feature_mean``/``feature_std`` to its inputs, ``target_mean``/``target_std`` undone on its
    outputs); folded in so the file takes and returns raw values. ``route``: ``"auto"``
    (recognise, else trace), ``"native"`` (recognise or fail) or ``"trace"``.
    ``state_names``: names of the states in the contract (default ``h``, ``h, c``, ``s0..``).

    The module is exported in eval mode (dropout off) and left in the mode it was in. Raises
    :class:`~rnnstream.export.ExportError` (:class:`~rnnstream.export.ParityError` when the file
    would differ from the module); nothing is written then.
    """
    start = time.perf_counter()
    import torch

    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"module is a {type(module).__name__}; expected a torch.nn.Module "
                          "whose forward(x, state) returns (y, next_state)")
    if route not in ("auto", "native", "trace"):
        raise ExportError(f"route={route!r}: expected 'auto', 'native' or 'trace'")
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ExportError(f"horizon={horizon!r}: expected a positive integer")
    path = Path(path)
    if not path.parent.is_dir():
        raise ExportError(f"{path.parent} does not exist; create the folder first")
    with eval_mode(module):
        f = _n_features(module, features, sample)
        layout, notes = probe_layout(module, f, batch_first=batch_first,
                                     state_batch_axis=state_batch_axis,
                                     output_layout=output_layout, state_example=state_example)
        feature_names = _names(features, f, "f", "features")
        # a module with as many outputs as inputs predicts its own inputs (the lesson's next
        # point of the series) unless told otherwise: then intervals and forecast work
        names = (feature_names, list(feature_names) if targets is None and
                 layout.n_targets == f else _names(targets, layout.n_targets, "t", "targets"))
        arr = None if sample is None else check_sample(sample, f)
        stats = _scaling_arrays(scaling, f, layout.n_targets)
        wrapped = canonical(module, layout, scaling)
        job = _Job(path, layout, wrapped, names[0], names[1], horizon, stats,
                   scaling is not None, arr, dict(metrics or {}), atol, seed, notes)
        job.metrics.setdefault("source", {})
        found, why = (None, "route='trace' asked for") if route == "trace" else \
            _recognise(module, layout)
        model = None
        if found is not None:
            model = _rebuild(found, layout, stats, names)
            model.config.horizon = horizon
            diff = _max_rel_diff(model, wrapped, layout, seed)
            if diff > RECOGNISED_RTOL:
                why = (f"rebuilt from its parts it differs from the module by {diff:.3g} "
                       "(relative, float64): its forward does more than recurrent layer -> "
                       "head")
                model = None
        if model is None and route == "native":
            raise ExportError(f"route='native': the module is not recognised ({why}); use "
                              "route='auto' to trace it instead")
        if model is not None:
            report = _export_native(job, model, step_graph)
        else:
            notes.append(f"traced: not rebuilt natively because {why}")
            report = _export_traced(job, _state_names(state_names, len(layout.state_rows)))
    report.seconds = time.perf_counter() - start
    report.notes = notes
    return report


def _calibration(job: _Job, run) -> dict[str, Any] | None:
    """The interval quantiles from the sample, predicted by ``run`` (the float32 module)."""
    import torch

    if job.sample is None:
        return None

    def predict(points: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y, _ = run(torch.from_numpy(points)[None])
        return y[0].numpy()

    return sample_calibration(predict, job.sample, job.features, job.targets, job.horizon)


def _source(job: _Job, route: str) -> dict[str, Any]:
    return {"route": route, "from": "export_module", "layout": job.layout.describe(),
            "scaling": "given" if job.scaling_given else "none"}


def _export_native(job: _Job, model, step_graph: bool) -> ExportReport:
    job.notes.append(f"rebuilt natively as a {model.config.cell} forecaster "
                     f"({model.config.layers} x {model.config.hidden}"
                     + (f", head {model.config.head_hidden} {model.config.head_activation}"
                        if model.config.head_hidden else "") + ")")
    metrics = dict(job.metrics)
    metrics["source"] = {**_source(job, "native"), **dict(metrics["source"])}
    cal = _calibration(job, job.wrapped)
    if cal is not None:
        metrics["calibration"] = cal
    return export_model(model, job.path, metrics=metrics, atol=job.atol, seed=job.seed,
                        sample=job.sample, step_graph=step_graph, reference=job.wrapped)


def _traced_graph(job: _Job, names: tuple[str, ...], opset: int, time_steps: int
                  ) -> onnx.ModelProto:
    import torch

    wrapped = job.wrapped

    class _Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = wrapped

        def forward(self, x, *states):
            y, after = self.inner(x, tuple(states))
            return (y, *after)

    x = torch.zeros((2, time_steps, job.layout.n_features))
    states = tuple(torch.zeros((2, *row)) for row in job.layout.state_rows)
    ins = [spec.INPUT_NAME, *(spec.state_input_name(s) for s in names)]
    outs = [spec.OUTPUT_NAME, *(spec.state_output_name(s) for s in names)]
    time = {1: spec.TIME} if time_steps > 1 else {}
    axes: dict[str, dict[int, str]] = {spec.INPUT_NAME: {0: spec.BATCH, **time},
                                       spec.OUTPUT_NAME: {0: spec.BATCH, **time}}
    axes.update({n: {0: spec.BATCH} for n in (*ins[1:], *outs[1:])})
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of dynamo, which fixes the time axis
        # to the example's length and writes a side file (graph.py's docstring); scoped here
        warnings.simplefilter("ignore")
        try:
            traced = os.path.join(tmp, "traced.onnx")
            torch.onnx.export(_Flat().eval(), (x, *states), traced, input_names=ins,
                              output_names=outs, dynamic_axes=axes, opset_version=opset,
                              dynamo=False, do_constant_folding=True)
            graph = onnx.load(traced)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ExportError(f"tracing the module to ONNX failed: {exc}") from exc
    return pin_ir_version(graph)


def _export_traced(job: _Job, names: tuple[str, ...]) -> ExportReport:

    if job.layout.per_stream:
        raise ExportError(
            "the module fails for more than one stream at a time and is not made of parts "
            "rnnstream rebuilds natively, so it can only be traced, and a trace of one stream "
            "would not run a batch; make its forward batch-safe (e.g. .reshape instead of "
            ".view, no fixed batch sizes) and export again"
        )

    rnn = _recurrent(job.wrapped.inner)
    inputs = _traced_inputs(job, names)
    try:
        graph, report = _trace_and_prove(job, names, inputs, time_steps=3)
        step_only = False
    except _TRACE_FAILURES as exc:
        # A Python loop over time in forward is unrolled by the trace to the example's length:
        # such a graph is right for that length only. Traced for one step it is right for
        # every stream, and the runtime primes it one point a call (contract step_only).
        try:
            graph, report = _trace_and_prove(job, names, inputs, time_steps=1)
        except _TRACE_FAILURES:
            if isinstance(exc, ParityError):
                raise
            raise ExportError(f"the traced graph fails to run: {exc}") from exc
        step_only = True
        job.notes.append("traced for one step per call: its trace is right for the example's "
                         "length only (a Python loop over time?); the runtime primes it one "
                         "point a call")
    metrics = dict(job.metrics)
    metrics["source"] = {**_source(job, "traced"), **dict(metrics["source"])}
    cal = _calibration(job, job.wrapped)
    if cal is not None:
        metrics["calibration"] = cal
    norm = {k: v.tolist() for k, v in job.stats.items()} if job.scaling_given else {}
    contract = ModelContract(
        cell=spec.CUSTOM,
        layers=int(rnn.num_layers) if rnn is not None else 0,
        hidden=int(rnn.hidden_size) if rnn is not None else 0,
        features=job.features, targets=job.targets, horizon=job.horizon,
        normalization=json_safe(norm, "normalization"),
        metrics=json_safe(metrics, "metrics"),
        parity=json_safe({**report.to_dict(), "exporter": "torchscript-trace"}, "parity"),
        versions=tool_versions(DEFAULT_OPSET),
        declared_states=tuple(zip(names, job.layout.state_rows, strict=True)),
        step_only=step_only,
    )
    contract.fingerprint = fingerprint(graph, contract)
    text = attach_metadata(graph, contract)
    if load_contract(graph) != contract:
        raise ExportError("the contract read back from the graph differs from the one written")
    side = Path(sidecar_path(str(job.path)))
    write_atomically({job.path: graph.SerializeToString(), side: text.encode()})
    nodes: dict[str, int] = {}
    for node in graph.graph.node:
        nodes[node.op_type] = nodes.get(node.op_type, 0) + 1
    return ExportReport(job.path, side, contract, report, nodes=nodes)


# a traced graph that is wrong (ParityError) or does not run (onnxruntime's errors)
_TRACE_FAILURES: tuple[type[BaseException], ...] = (ParityError, *ORT_ERRORS)


def _traced_inputs(job: _Job, names: tuple[str, ...]) -> InputSpec:
    """Parity inputs at the model's scale: the user's scaling, the sample's, or unit."""
    f = job.layout.n_features
    if job.scaling_given:
        mean, std = job.stats["feature_mean"], job.stats["feature_std"]
    elif job.sample is not None:
        mean, std = job.sample.mean(axis=0).astype(np.float64), job.sample.std(axis=0) + 1e-12
    else:
        mean, std = np.zeros(f), np.ones(f)
    scale = max(float(np.max(np.abs(mean) + 4 * std)),
                float(np.max(np.abs(job.stats["target_mean"]) + 4 * job.stats["target_std"])))
    return InputSpec(names, job.layout.state_rows, mean, std, scale, job.sample)


def _trace_and_prove(job: _Job, names: tuple[str, ...], inputs: InputSpec, time_steps: int
                     ) -> tuple[onnx.ModelProto, Any]:
    """Trace with an example of ``time_steps`` points (1: the graph's time axis is fixed to 1)
    and prove it against the module in float64; (graph, report) or ParityError."""
    from .verify import DEFAULT_CASES, STEP_CASES, float64_model

    graph = _traced_graph(job, names, DEFAULT_OPSET, time_steps)
    check_valid(graph, "traced graph")
    _check_traced_io(graph, names)
    report = measure_parity(
        inputs, torch_runner(float64_model(job.wrapped), names),
        ort_runner(session(graph), names), baseline=torch_runner(job.wrapped, names),
        seed=job.seed, names=("torch float64", "onnxruntime", "torch float32"),
        cases=STEP_CASES if time_steps == 1 else DEFAULT_CASES)
    report.inputs = "random" if job.sample is None else f"sample of {len(job.sample)} points"
    failures = report.failures()
    if failures:
        raise ParityError(failures)
    return graph, report


def _check_traced_io(graph: onnx.ModelProto, names: tuple[str, ...]) -> None:
    want_in = [spec.INPUT_NAME, *(spec.state_input_name(s) for s in names)]
    want_out = [spec.OUTPUT_NAME, *(spec.state_output_name(s) for s in names)]
    got_in = [v.name for v in graph.graph.input]
    got_out = [v.name for v in graph.graph.output]
    if got_in != want_in or got_out != want_out:
        raise GraphError(
            f"the traced graph has inputs {got_in} and outputs {got_out}, expected {want_in} "
            f"and {want_out}: the module may ignore a state input (torch drops unused inputs); "
            "every state it returns must depend on the state it is given"
        )
