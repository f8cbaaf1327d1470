"""The export side of the mode registry: each input and target mode's ONNX nodes.

A mode is one entry in each stage's table, looked up by its name, like a cell
(:data:`rnnstream.runtime.spec.INPUT_MODE_SPECS` / :data:`~rnnstream.runtime.spec.
TARGET_MODE_SPECS` for its facts, :mod:`rnnstream.train.modes` for its torch side,
:data:`EXPORT_INPUT_MODES` / :data:`EXPORT_TARGET_MODES` here). Both graph builders
(:mod:`rnnstream.export.graph`, :mod:`rnnstream.export.step_graph`) call these by the config's
mode names, and nothing else in them names a mode; a mode's state is read as ``<s>_in`` and
written as ``<s>_out`` (``spec.state_input_name``/``state_output_name``) by its own nodes.

* An input mode: ``nodes(nodes, inits, x, n_features, time_axis) -> name`` of what the layers
  see, the same nodes in both graphs (``time_axis``: x is ``[B,T,F]``, else one step ``[B,F]``).
* A target mode with a reference (``spec`` ``reference=True``) gets the observed targets of x
  and returns its reference, which is added to the head's output: ``sequence(b, targets
  [B,T,Tg], cfg, weights) -> [B,T,Tg]`` and ``step(b, targets [B,Tg], cfg, weights) ->
  [B,Tg]`` (None: the observed targets themselves, target mode "delta");
  ``weights(state_dict, cfg)`` adds its constants, float64 in raw units, to
  :func:`rnnstream.export.graph.onnx_weights` (and so to the sequence graph's initializers);
  ``squeezes`` says its sequence nodes read the graph's shared ``axis1`` constant.

The nodes, for ``input_mode="delta"``::

    last_in [B,F+1] -Slice-> prev [B,F], seen [B,1]
    first = seen * prev + (1 - seen) * x[:, 0]        (exact for seen in {0, 1})
    d = x - Concat(first, x[:, :-1])   [B,T,F]  -> the layers
    last_out = Concat(x[:, -1], 1)     [B,F+1]

``target_mode="seasonal"`` (season ``S``, horizon ``h``); every slice index is static, so time
stays dynamic::

    seen = Concat(x_targets, 1)                          [B,T,Tg+1]
    c = Concat(cycle_in, seen, axis=1)                   [B,S+T,Tg+1]
    back = c[:, h : -(S-h)]  (c[:, h:] when S == h)      [B,T,Tg+1]
    ref = flag * back[..., :Tg] + (1 - flag) * x_targets  (exact for flag in {0, 1})
    cycle_out = c[:, -S:]

``target_mode="ets"``: a linear recurrence over the targets (:mod:`rnnstream.train.ets`) run
by the native ``RNN`` op with the identity activation (``Affine``, alpha 1, beta 0) in the
sequence graph, two Gemms in the step graph::

    Y, ets_h = RNN(x_targets [T,B,Tg], ets_W, ets_R, ets_B, initial_h = ets_in [1,B,S])
    ref = Y [T,B,S] @ ets_w + ets_c  -Transpose-> [B,T,Tg];  ets_out = ets_h [B,S]
    step: ets_out = [y, ets_in] @ [W'; R'] + b;  ref = ets_out @ ets_w + ets_c
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnstream.runtime import spec
from rnnstream.runtime.spec import (
    CYCLE_STATE,
    ETS_STATE,
    LAST_STATE,
    state_input_name,
    state_output_name,
)

from .cells import Builder

__all__ = ["EXPORT_INPUT_MODES", "EXPORT_TARGET_MODES", "ExportInputMode", "ExportTargetMode",
           "delta_input_nodes", "ets_nodes", "seasonal_nodes"]

# (nodes, inits, x, n_features, time_axis) -> the name of what the layers see
InputNodes = Callable[[list, list, str, int, bool], str]
# (builder, the observed targets, config, onnx_weights) -> the name of the reference
ReferenceNodes = Callable[[Builder, str, Any, Mapping[str, np.ndarray]], str]
# (float64 state_dict, config) -> {initializer name: float64 array}
ModeWeights = Callable[[Mapping[str, np.ndarray], Any], dict[str, np.ndarray]]


@dataclass(frozen=True)
class ExportInputMode:
    """An input mode's ONNX nodes (module doc); ``nodes`` None: the layers see x."""

    nodes: InputNodes | None = None


@dataclass(frozen=True)
class ExportTargetMode:
    """A target mode's ONNX nodes (module doc)."""

    sequence: ReferenceNodes | None = None
    step: ReferenceNodes | None = None
    weights: ModeWeights | None = None
    squeezes: bool = False


def _shortcuts(b: Builder) -> tuple[Callable[..., str], Callable[..., str]]:
    """``const(name, value)`` and ``node(op, inputs, output(s), **attrs)`` on ``b``, each
    returning the (first) name it made: what the node-building functions below write with."""
    def const(name: str, value: Any) -> str:
        return b.const(name, np.asarray(value))

    def node(op: str, inputs: list[str], outputs: list[str] | str, **attrs: Any) -> str:
        return b.op(op, inputs, outputs, **attrs)[0]

    return const, node


def delta_input_nodes(nodes: list, inits: list, x: str, n_features: int, time_axis: bool
                      ) -> str:
    """Append the nodes that turn ``x`` into changes and write ``last_out``; returns the name of
    the changes (same shape as ``x``). ``time_axis``: x is [B,T,F] (else [B,F], one step)."""
    f = n_features
    last_in, last_out = state_input_name(LAST_STATE), state_output_name(LAST_STATE)

    const, node = _shortcuts(Builder(nodes, inits))

    ax1 = const("delta_axis1", np.array([1], np.int64))
    prev = node("Slice", [last_in, const("delta_0", np.array([0], np.int64)),
                          const("delta_f", np.array([f], np.int64)), ax1], "delta_prev")
    seen = node("Slice", [last_in, "delta_f", const("delta_f1", np.array([f + 1], np.int64)),
                          ax1], "delta_seen")
    one = const("delta_one", np.array([[1.0]], np.float32))
    if time_axis:
        x0 = node("Squeeze", [node("Slice", [x, "delta_0", const("delta_1", np.array(
            [1], np.int64)), ax1], "delta_x0_3d"), ax1], "delta_x0")
    else:
        x0 = x
    first = node("Add", [node("Mul", [seen, prev], "delta_kept"),
                         node("Mul", [node("Sub", [one, seen], "delta_unseen"), x0],
                              "delta_fresh")], "delta_first")
    if time_axis:
        end = const("delta_end", np.array([np.iinfo(np.int64).max], np.int64))
        minus1 = const("delta_m1", np.array([-1], np.int64))
        shifted = node("Concat", [node("Unsqueeze", [first, ax1], "delta_first_3d"),
                                  node("Slice", [x, "delta_0", minus1, ax1], "delta_head")],
                       "delta_shifted", axis=1)
        newest = node("Squeeze", [node("Slice", [x, minus1, end, ax1], "delta_xl_3d"), ax1],
                      "delta_xl")
    else:
        shifted, newest = first, x
    # a column of ones [B, 1] from plain element-wise ops (seen * 0 + 1 is exactly 1 for a
    # finite flag): Shape/Expand would do it too, but onnxruntime-web's WebGL backend lacks
    # Expand, and the step graph is meant to run there
    zero = const("delta_zero", np.array([[0.0]], np.float32))
    ones = node("Add", [node("Mul", [seen, zero], "delta_seen0"), one], "delta_ones")
    node("Concat", [newest, ones], last_out, axis=1)
    return node("Sub", [x, shifted], "delta_x")


def seasonal_nodes(nodes: list, inits: list, targets: str, cfg) -> str:
    """Append the nodes that read ``cycle_in`` and write ``cycle_out`` for ``targets`` [B,T,Tg]
    (the observed targets of x); returns the name of the seasonal reference [B,T,Tg] (see the
    module doc). Plain ops only (no Split, no Expand), so the step graph can use it too."""
    s, h, tg = cfg.season, cfg.horizon, cfg.n_targets
    big = np.iinfo(np.int64).max

    const, node = _shortcuts(Builder(nodes, inits))

    def ints(name: str, value: int) -> str:
        return const(name, np.array([value], np.int64))

    ax1, ax2 = ints("season_axis1", 1), ints("season_axis2", 2)
    zero = ints("season_0", 0)
    one = const("season_one", np.array(1.0, np.float32))
    first = node("Slice", [targets, zero, ints("season_1", 1), ax2], "season_first")
    ones = node("Add", [node("Mul", [first, const("season_zero", np.array(0.0, np.float32))],
                             "season_first0"), one], "season_ones")
    seen = node("Concat", [targets, ones], "season_seen", axis=2)
    c = node("Concat", [state_input_name(CYCLE_STATE), seen], "season_all", axis=1)
    back = node("Slice", [c, ints("season_h", h), ints("season_end", h - s if s > h else big),
                          ax1], "season_back")
    value = node("Slice", [back, zero, ints("season_tg", tg), ax2], "season_value")
    flag = node("Slice", [back, "season_tg", ints("season_tg1", tg + 1), ax2], "season_flag")
    node("Slice", [c, ints("season_ms", -s), ints("season_big", big), ax1],
         state_output_name(CYCLE_STATE))
    kept = node("Mul", [flag, value], "season_kept")
    stand_in = node("Mul", [node("Sub", [one, flag], "season_unseen"), targets],
                    "season_stand_in")
    return node("Add", [kept, stand_in], "season_ref")


def ets_nodes(nodes: list, inits: list, targets: str, size: int) -> str:
    """Append the ETS recurrence over ``targets`` [B,T,Tg] (initializers ``ets_W``, ``ets_R``,
    ``ets_B``, ``ets_w``, ``ets_c`` from :func:`onnx_weights`; ``size`` the state's length),
    reading ``ets_in`` and writing ``ets_out``; returns the name of the ETS forecasts
    [B,T,Tg]."""
    const, node = _shortcuts(Builder(nodes, inits))
    const("ets_axis0", np.array([0], dtype=np.int64))

    tbg = node("Transpose", [targets], ["ets_x"], perm=[1, 0, 2])
    h0 = node("Unsqueeze", [state_input_name(ETS_STATE), "ets_axis0"], ["ets_h0"])
    node("RNN", [tbg, "ets_W", "ets_R", "ets_B", "", h0], ["ets_Y", "ets_h"], name="ets",
         hidden_size=size, activations=["Affine"], activation_alpha=[1.0], activation_beta=[0.0])
    node("Squeeze", ["ets_h", "ets_axis0"], [state_output_name(ETS_STATE)])
    seq = node("Squeeze", ["ets_Y", "axis1"], ["ets_seq"])
    fc = node("Add", [node("MatMul", [seq, "ets_w"], ["ets_mm"]), "ets_c"], ["ets_tbt"])
    return node("Transpose", [fc], ["ets_ref"], perm=[1, 0, 2])


def _ets_sequence(b: Builder, targets: str, cfg, w: Mapping[str, np.ndarray]) -> str:
    (size,) = spec.state_row_shape(ETS_STATE, layers=cfg.layers, hidden=cfg.hidden,
                                   n_features=cfg.n_features, n_targets=cfg.n_targets,
                                   season=cfg.season)
    return ets_nodes(b.nodes, b.inits, targets, size)


def _ets_step(b: Builder, targets: str, cfg, w: Mapping[str, np.ndarray]) -> str:
    """h' = [y, h] @ [W'; R'] + b, forecast h' @ w + c (module doc)."""
    weight = np.concatenate([w["ets_W"][0].T, w["ets_R"][0].T], axis=0)
    b.op("Concat", [targets, state_input_name(ETS_STATE)], "ets_xh", axis=1)
    b.op("Gemm", ["ets_xh", b.const("ets_WR", weight.astype(np.float32)),
                  b.const("ets_b", w["ets_B"][0, :weight.shape[1]].astype(np.float32))],
         state_output_name(ETS_STATE))
    return b.op("Gemm", [state_output_name(ETS_STATE),
                         b.const("ets_w", w["ets_w"].astype(np.float32)),
                         b.const("ets_c", w["ets_c"].astype(np.float32))], "ets_ref")[0]


def _ets_weights(sd: Mapping[str, np.ndarray], cfg) -> dict[str, np.ndarray]:
    """The ETS recurrence, in ONNX's RNN layout."""
    return {
        "ets_W": sd["ets_input"][None],  # [1, S, Tg]
        "ets_R": sd["ets_recurrent"][None],  # [1, S, S]
        "ets_B": np.concatenate([sd["ets_bias"], np.zeros_like(sd["ets_bias"])])[None],
        "ets_w": sd["ets_output"],  # [S, Tg]
        "ets_c": sd["ets_output_bias"],  # [Tg]
    }


def _seasonal_sequence(b: Builder, targets: str, cfg, w: Mapping[str, np.ndarray]) -> str:
    return seasonal_nodes(b.nodes, b.inits, targets, cfg)


def _seasonal_step(b: Builder, targets: str, cfg, w: Mapping[str, np.ndarray]) -> str:
    """The sequence nodes on [B,1,Tg]."""
    t = cfg.n_targets
    shape_b1t = b.const("shape_b1t_ref", np.array([-1, 1, t], np.int64))
    last3 = b.op("Reshape", [targets, shape_b1t], "x_targets_b1t")[0]
    ref = seasonal_nodes(b.nodes, b.inits, last3, cfg)
    return b.op("Reshape", [ref, b.const("shape_bt", np.array([-1, t], np.int64))],
                "season_ref_bt")[0]


EXPORT_INPUT_MODES: dict[str, ExportInputMode] = {
    "level": ExportInputMode(),
    "delta": ExportInputMode(delta_input_nodes),
}
EXPORT_TARGET_MODES: dict[str, ExportTargetMode] = {
    "level": ExportTargetMode(),
    "delta": ExportTargetMode(),  # the reference is the observed targets themselves
    "seasonal": ExportTargetMode(_seasonal_sequence, _seasonal_step),
    "ets": ExportTargetMode(_ets_sequence, _ets_step, _ets_weights, squeezes=True),
}
for _ours, _specs in ((EXPORT_INPUT_MODES, spec.INPUT_MODE_SPECS),
                      (EXPORT_TARGET_MODES, spec.TARGET_MODE_SPECS)):
    if set(_ours) != set(_specs):  # pragma: no cover - a developer's mistake
        raise ImportError(f"export.modes {sorted(_ours)} != runtime.spec's modes "
                          f"{sorted(_specs)}")
