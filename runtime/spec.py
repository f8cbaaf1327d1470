"""The one spec: every fact about cells, states and graph tensors, in one table and a few rules.

Everything that names or shapes a tensor reads it from here: the training model (which states it
carries and their shapes), both ONNX graph builders (op, gate order, names), the parity checks,
the runtime loader, the pool and the CLI's choices. Adding a cell is one entry in :data:`CELLS`
(with its torch module in ``rnnstream.train.cells`` and its step equations in
``rnnstream.export.cells``; a state of the cell is a name in its entry); adding a state of the
model (of an input or target mode) is one entry in :data:`INPUT_MODE_SPECS` or
:data:`TARGET_MODE_SPECS` (with its torch pieces in ``rnnstream.train.modes`` and its ONNX nodes in
``rnnstream.export.modes``).

Tensors (``B`` batch, ``T`` time, ``F`` features, ``Tg`` targets, ``L`` layers, ``H`` hidden)::

    input   x            [B, T, F]      raw units
    input   <s>_in       one per state  the state before the call
    output  y            [B, T, Tg]     raw units; y[:, t] predicts time t + horizon
    output  <s>_out      one per state  the state after the call: the next call's <s>_in
    output  <name>       [B, T, k]      optional, each with a role (OUTPUT_ROLES: a quantile
                                        head, an auxiliary target, a second horizon)

    states  h            [B, L, H]      every cell
            c            [B, L, H]      lstm
            last         [B, F + 1]     input_mode "delta" only: the last observed input and a
                                        flag (1 once a point was seen, 0 in the initial state)
            cycle        [B, S, Tg + 1] target_mode "seasonal" only: the targets of the last S
                                        points (S the season), oldest first, each with a flag
                                        (1 for a point seen, 0 for the initial state's slots)
            ets          [B, Tg * (S + 2)]  target_mode "ets" only: each target's exponential
                                        smoothing state (level, trend, S seasonal slots),
                                        relative to its fitted start, so zeros at first

Every state starts as zeros; batch is axis 0, so one stream's state is one contiguous row.
Names of a state's tensors follow one rule (:func:`state_input_name`, :func:`state_output_name`).

Input mode ``"delta"``: the network sees the change of each feature since the previous point,
``d_t = x_t - x_{t-1}``, so a series that leaves its training range (a trend, a price) still
feeds the network values it has seen. The graph keeps the previous point in the ``last`` state,
so the streaming contract stays ``x, state -> y, state``; the first point of a stream (flag 0)
has ``d = 0``.

Target mode ``"seasonal"`` (season ``S``): the network predicts the change from the value one
season before the predicted time, ``y[t] = x_target[t + horizon - S] + net``, so that a network
that has learnt nothing predicts exactly seasonal naive. The graph keeps the last ``S`` targets
in the ``cycle`` state; where the point one season back was never seen (the first ``S -
horizon`` points of a stream) the last observed value stands in for it (persistence).

Target mode ``"ets"`` (season ``S``, 0 for none): the network predicts the change from an
exponential smoothing forecast fitted in training (:mod:`rnnstream.train.ets`), a linear
recurrence over the targets that the graph carries in the ``ets`` state; a model whose
correction is off is exactly that ETS.

This module needs only the standard library.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import ConfigError

__all__ = [
    "BATCH",
    "CELLS",
    "CUSTOM",
    "CYCLE_STATE",
    "DTYPE",
    "ETS_STATE",
    "HEAD_ACTIVATIONS",
    "INPUT_MODES",
    "INPUT_MODE_SPECS",
    "INPUT_NAME",
    "LAST_STATE",
    "OUTPUT_NAME",
    "OUTPUT_ROLES",
    "PREDICTION_ROLE",
    "SEASON_KINDS",
    "SEASON_MODES",
    "STATE_DRAW_KINDS",
    "STATE_ROLE",
    "TARGET_MODES",
    "TARGET_MODE_SPECS",
    "TIME",
    "CellSpec",
    "ModeSpec",
    "TensorSpec",
    "ets_slots",
    "graph_io",
    "is_state_name",
    "mode_of_state",
    "model_modes",
    "model_state_names",
    "state_input_name",
    "state_names",
    "state_output_name",
    "state_row_shape",
]

INPUT_NAME = "x"
OUTPUT_NAME = "y"
DTYPE = "float32"
BATCH = "batch"  # symbolic dimension names in the graph and the contract
TIME = "time"
LAST_STATE = "last"
CYCLE_STATE = "cycle"
ETS_STATE = "ets"
# A model rnnstream did not build from one of CELLS (a traced torch module, a wrapped foreign
# ONNX file): its states are declared one by one in its contract instead of derived from a cell.
CUSTOM = "custom"
# Element-wise activations a forecaster's head may put between its linear layers: name -> ONNX op
HEAD_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}


@dataclass(frozen=True)
class CellSpec:
    """What rnnstream knows about one recurrent cell.

    ``gate_order[i]`` is the torch gate block that ONNX gate block ``i`` takes (torch's LSTM
    orders its gates i, f, g, o and ONNX i, o, f, c; torch's GRU r, z, n and ONNX z, r, h).
    ``step_columns`` is how many Gemm columns per hidden unit the single-step graph computes
    (GRU keeps the recurrent part of its n gate apart: 4, not 3).

    ``onnx_op`` is None for a cell ONNX has no native op for: its sequence graph is a ``Scan``
    over its step equations (the cell's entry in :mod:`rnnstream.export.cells`; its torch
    module is in :mod:`rnnstream.train.cells`).
    """

    name: str
    onnx_op: str | None  # the native ONNX recurrent op; None: a Scan of the step equations
    states: tuple[str, ...]  # recurrent states, [B, L, H] each, in graph order
    gates: int  # gate blocks of `hidden` rows in the weights
    gate_order: tuple[int, ...]
    step_columns: int
    linear_before_reset: bool = False  # GRU: torch applies the reset gate after R·h + b
    int8_op: str | None = None  # onnxruntime's dynamic int8 op for it; None: not quantisable


CELLS: dict[str, CellSpec] = {
    "rnn": CellSpec("rnn", "RNN", ("h",), gates=1, gate_order=(0,), step_columns=1),
    "lstm": CellSpec("lstm", "LSTM", ("h", "c"), gates=4, gate_order=(0, 3, 1, 2),
                     step_columns=4, int8_op="DynamicQuantizeLSTM"),
    "gru": CellSpec("gru", "GRU", ("h",), gates=3, gate_order=(1, 0, 2), step_columns=4,
                    linear_before_reset=True),
    # a minimal GRU (no reset gate; rnnstream.train.cells.MinGRU): z, n gates; no native op
    "mingru": CellSpec("mingru", None, ("h",), gates=2, gate_order=(0, 1), step_columns=2),
}


def is_state_name(name: str) -> bool:
    """A name a declared (custom) state may have: a plain identifier, not x or y."""
    return (name.isascii() and name.isidentifier() and len(name) <= 64
            and name not in (INPUT_NAME, OUTPUT_NAME))


def state_input_name(state: str) -> str:
    return f"{state}_in"


def state_output_name(state: str) -> str:
    return f"{state}_out"


# How the parity proof (rnnstream.export.verify) draws a random non-zero initial state of a mode:
# "uniform" in (-0.9, 0.9) (like a tanh output), "normal" (standard normal), "zeros", or from
# the case's inputs x: "previous_point" (the point before x, one change back, seen or not) and
# "past_targets" (earlier targets taken from x, with seen flags, the unseen slots first).
STATE_DRAW_KINDS = ("uniform", "normal", "zeros", "previous_point", "past_targets")
# the season a mode takes: "none", "optional" (0 for none) or "required" (>= horizon; >= 1 in a
# contract)
SEASON_KINDS = ("none", "optional", "required")

# (n_features, n_targets, season) -> one stream's row shape of a mode's state
RowShape = Callable[[int, int, int], tuple[int, ...]]


@dataclass(frozen=True)
class ModeSpec:
    """What rnnstream knows about one input or target mode (the model's, not its cell's).

    A mode may carry one state of the model (``state``, after the cell's in graph order: the
    input mode's, then the target mode's), whose one-stream shape is ``row(n_features,
    n_targets, season)``. The rest is plain data the stages read instead of naming the mode:
    ``draw`` and ``nudge`` tell the parity proof how to draw a realistic initial state and
    whether its values may be moved by a few float32 steps (a state that holds exact copies or
    0/1 flags may not); ``nudge_inputs`` False says the graph computes on ``x`` exactly (it
    subtracts neighbouring points), so x is not moved either; ``reference`` says a target mode
    predicts the change from a reference built from the observed targets (so it needs
    ``target_index``), and ``needs_reference`` that an input mode hides the levels from the
    network, so it needs a target mode with one; ``season`` which season it takes
    (:data:`SEASON_KINDS`); ``schema`` the lowest contract schema version that has it; ``dims``
    and ``meaning`` describe the state for people (:meth:`describe`); ``summary`` says what the
    mode does, in a few words.

    The mode's torch side is its entry in :mod:`rnnstream.train.modes`, its ONNX nodes its entry
    in :mod:`rnnstream.export.modes`.
    """

    name: str
    summary: str = ""
    state: str | None = None  # the state it carries, None: none
    row: RowShape | None = None  # its one-stream shape (None when it carries no state)
    draw: str = "zeros"  # one of STATE_DRAW_KINDS
    nudge: bool = True
    nudge_inputs: bool = True
    reference: bool = False  # target modes: predicts the change from a reference
    needs_reference: bool = False  # input modes: the network never sees levels
    season: str = "none"  # one of SEASON_KINDS
    schema: int = 1
    dims: tuple[str, ...] = ()  # the row's axes in words, e.g. ("F+1",)
    meaning: str = ""  # what the state holds, e.g. "the last point and a seen flag"

    def __post_init__(self) -> None:
        # a developer's mistake in a table entry, refused where the entry is written
        if self.draw not in STATE_DRAW_KINDS or self.season not in SEASON_KINDS:
            raise ConfigError(f"mode {self.name!r}: draw {self.draw!r} must be one of "
                             f"{STATE_DRAW_KINDS} and season {self.season!r} one of "
                             f"{SEASON_KINDS}")
        if (self.state is None) != (self.row is None) or (
                self.state is not None and not is_state_name(self.state)):
            raise ConfigError(f"mode {self.name!r}: a state needs both a name (an identifier) "
                             f"and a row shape (got state {self.state!r}, row {self.row!r})")

    def row_shape(self, n_features: int, n_targets: int, season: int) -> tuple[int, ...]:
        if self.row is None:
            raise ConfigError(f"mode {self.name!r} carries no state")
        return self.row(n_features, n_targets, season)

    def describe(self, row: tuple[int, ...]) -> str:
        """The state in words for one stream's ``row``: ``"F+1=3: the last point and a seen
        flag"`` (what ``rnnstream inspect`` and the generated loops print)."""
        axes = ", ".join(f"{d}={n}" for d, n in zip(self.dims, row, strict=True))
        return f"{axes}: {self.meaning}" if self.meaning else axes


def ets_slots(season: int) -> int:
    """Length of one target's ETS state: level, trend and one slot per step of the season."""
    return season + 2


INPUT_MODE_SPECS: dict[str, ModeSpec] = {
    "level": ModeSpec("level", "fed raw values"),
    "delta": ModeSpec(
        "delta", "fed changes", state=LAST_STATE, row=lambda f, t, s: (f + 1,),
        draw="previous_point", nudge=False, nudge_inputs=False, needs_reference=True, schema=2,
        dims=("F+1",),
        meaning="the last point and a seen flag"),
}
TARGET_MODE_SPECS: dict[str, ModeSpec] = {
    "level": ModeSpec("level", "predicts the value"),
    "delta": ModeSpec("delta", "predicts the change from the last observed value",
                      reference=True),
    "seasonal": ModeSpec(
        "seasonal", "predicts the change from the value one season before",
        state=CYCLE_STATE, row=lambda f, t, s: (s, t + 1), draw="past_targets", nudge=False,
        reference=True, season="required", schema=4, dims=("S", "Tg+1"),
        meaning="the last season's targets with their seen flags"),
    "ets": ModeSpec(
        "ets", "predicts the change from an exponential smoothing forecast", state=ETS_STATE,
        # relative to its fitted start in standardised units: O(1) where the series stays
        # within a few std of where it started
        row=lambda f, t, s: (t * ets_slots(s),), draw="normal", reference=True,
        season="optional", schema=4, dims=("Tg*(S+2)",),
        meaning="each target's smoothing state (level, trend, S seasonal slots)"),
}
# the modes of this release, as tuples (what the CLI offers, and what the JavaScript core lists)
INPUT_MODES = tuple(INPUT_MODE_SPECS)
TARGET_MODES = tuple(TARGET_MODE_SPECS)
# target modes whose contract records a season (the length of their state)
SEASON_MODES = tuple(n for n, m in TARGET_MODE_SPECS.items() if m.season != "none")


def model_modes(input_mode: str = "level", target_mode: str = "level"
                ) -> tuple[ModeSpec, ModeSpec]:
    """The (input, target) mode specs; ConfigError names the known ones."""
    for kind, table, name in (("input", INPUT_MODE_SPECS, input_mode),
                              ("target", TARGET_MODE_SPECS, target_mode)):
        if name not in table:
            raise ConfigError(f"{kind} mode {name!r} is not one of {sorted(table)}")
    return INPUT_MODE_SPECS[input_mode], TARGET_MODE_SPECS[target_mode]


def model_state_names() -> frozenset[str]:
    """The states the modes carry (``last``, ``cycle``, ``ets``): reserved, a declared (custom)
    state may not take one of these names."""
    return frozenset(m.state for table in (INPUT_MODE_SPECS, TARGET_MODE_SPECS)
                     for m in table.values() if m.state is not None)


def _check_state_names() -> None:
    """Every state name of the tables names one thing: a cell's state or one mode's (the model
    hands states around by name)."""
    owners: dict[str, str] = {}
    for cell, c in CELLS.items():
        for s in c.states:
            owners.setdefault(s, f"cell {cell}")
    for table in (INPUT_MODE_SPECS, TARGET_MODE_SPECS):
        for mode in table.values():
            if mode.state is None:
                continue
            if mode.state in owners and owners[mode.state] != f"mode {mode.name}":
                raise ConfigError(f"mode {mode.name!r}: state {mode.state!r} is already "
                                  f"{owners[mode.state]}'s; give it a name of its own")
            owners[mode.state] = f"mode {mode.name}"


_check_state_names()


def mode_of_state(state: str) -> ModeSpec | None:
    """The mode that carries ``state`` (``last``, ``cycle``, ...); None for a cell's state."""
    for table in (INPUT_MODE_SPECS, TARGET_MODE_SPECS):
        for mode in table.values():
            if mode.state == state:
                return mode
    return None


def state_names(cell: str, input_mode: str = "level", target_mode: str = "level"
                ) -> tuple[str, ...]:
    """Every state a model carries, in graph order: the cell's, then the input mode's (``last``
    for delta inputs), then the target mode's (``cycle`` for seasonal targets, ``ets`` for
    ETS targets)."""
    modes = model_modes(input_mode, target_mode)
    return (*CELLS[cell].states, *(m.state for m in modes if m.state is not None))


def state_row_shape(state: str, *, layers: int, hidden: int, n_features: int,
                    n_targets: int = 1, season: int = 0) -> tuple[int, ...]:
    """One stream's part of a state: its shape without the batch axis."""
    mode = mode_of_state(state)
    if mode is not None:
        return mode.row_shape(n_features, n_targets, season)
    return (layers, hidden)


# What an output is for (its role): the prediction the runtime returns, a state it feeds back,
# or another output a model adds (a quantile head, an auxiliary target, a second horizon), which
# the runtime hands out by name beside the prediction and never feeds back.
PREDICTION_ROLE = "prediction"
STATE_ROLE = "state"
OUTPUT_ROLES = (PREDICTION_ROLE, STATE_ROLE, "quantile", "aux", "horizon")


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: name, shape (``"batch"``/``"time"`` or sizes), float32, and
    an output's role (one of :data:`OUTPUT_ROLES`; empty for an input)."""

    name: str
    shape: tuple[str | int, ...]
    dtype: str = DTYPE
    role: str = ""


def graph_io(
    cell: str,
    *,
    layers: int,
    hidden: int,
    n_features: int,
    n_targets: int,
    input_mode: str = "level",
    target_mode: str = "level",
    season: int = 0,
    time: str | int = TIME,
    declared: tuple[tuple[str, tuple[int, ...]], ...] = (),
    extra_outputs: tuple[tuple[str, str, int], ...] = (),
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of a model's graph, in order; ``time=1`` for the single-step graph.
    Every output carries its role: the prediction ``y``, one ``state`` per state, then the
    ``extra_outputs`` (name, role, values per time step) as ``[batch, time, values]``.

    ``declared``: (name, row shape) of each state of a :data:`CUSTOM` model, in graph order.
    ``season``: the season of a ``seasonal`` or ``ets`` model (:data:`SEASON_MODES`; it sizes the
    ``cycle`` or ``ets`` state).
    """
    inputs = [TensorSpec(INPUT_NAME, (BATCH, time, n_features))]
    outputs = [TensorSpec(OUTPUT_NAME, (BATCH, time, n_targets), role=PREDICTION_ROLE)]
    rows = declared if cell == CUSTOM else tuple(
        (s, state_row_shape(s, layers=layers, hidden=hidden, n_features=n_features,
                            n_targets=n_targets, season=season))
        for s in state_names(cell, input_mode, target_mode))
    for s, row in rows:
        inputs.append(TensorSpec(state_input_name(s), (BATCH, *row)))
        outputs.append(TensorSpec(state_output_name(s), (BATCH, *row), role=STATE_ROLE))
    outputs += [TensorSpec(name, (BATCH, time, width), role=role)
                for name, role, width in extra_outputs]
    return inputs, outputs
