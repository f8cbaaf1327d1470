"""The recurrent forecaster: one small module, configured by one dataclass.

State layout (defined once, in :mod:`rnnstream.runtime.spec`, and used everywhere in rnnstream,
torch and ONNX alike): a state is a tuple of tensors in ``spec.state_names(cell, input_mode,
target_mode)`` order -- the cell's (``(h,)`` for rnn/gru/mingru, ``(h, c)`` for lstm), each
``[batch, layers, hidden]``, then the input mode's (``last`` ``[batch, F + 1]`` when
``input_mode="delta"``), then the target mode's (``cycle`` for ``target_mode="seasonal"``,
``ets`` for ``"ets"``; shapes in ``spec.TARGET_MODE_SPECS``) -- batch first, so one stream's
state is one contiguous row. The module never keeps state inside itself:
``forward(x, state) -> (y, next_state)``; it looks each state up by name, and what a mode does
with its own is its entry in :mod:`rnnstream.train.modes`.

Inputs and outputs are in raw units. The normalisation fitted on the training split is stored
in buffers, applied on the way in and inverted on the way out. ``input_mode="delta"`` feeds the
network the change of each feature since the previous point (the previous point travels in the
``last`` state; the first point of a stream has change 0). ``target_mode="delta"`` makes the
network predict the change from the last observed value of each target, which is added back;
``target_mode="seasonal"`` the change from the value one season before the predicted time
(``cycle`` carries the last ``season`` targets; where that value was never seen, the last
observed one stands in), so that a head whose weights are zero predicts exactly seasonal naive;
``target_mode="ets"`` the change from an exponential smoothing forecast fitted in training
(:mod:`rnnstream.train.ets`; the linear recurrence's matrices are buffers, its state ``ets``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from rnnstream.runtime import spec

from .cells import TORCH_CELLS
from .errors import ConfigError
from .modes import TORCH_INPUT_MODES, TORCH_TARGET_MODES

__all__ = ["ACTIVATIONS", "CELLS", "Forecaster", "ForecasterConfig", "StateTensors"]

StateTensors = tuple[Tensor, ...]  # one tensor per name in ForecasterConfig.state_names

# The torch module of each cell in the one spec (the registry's training side, see
# rnnstream.train.cells: every cell has one there, and an export parity test: tests enforce both).
CELLS = TORCH_CELLS
# The torch module of each head activation in the spec (same keys, checked at import).
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU,
                                           "sigmoid": nn.Sigmoid}
if set(ACTIVATIONS) != set(spec.HEAD_ACTIVATIONS):  # pragma: no cover - a developer's mistake
    raise ImportError(f"train.model.ACTIVATIONS {sorted(ACTIVATIONS)} != runtime.spec."
                      f"HEAD_ACTIVATIONS {sorted(spec.HEAD_ACTIVATIONS)}")


@dataclass
class ForecasterConfig:
    """Describes a forecaster completely (together with its weights and normalisation)."""

    cell: str = "lstm"  # "rnn" (tanh) | "lstm" | "gru" | "mingru" (see rnnstream.train.cells)
    n_features: int = 1  # F, inputs per time step
    n_targets: int = 1  # T, predictions per time step
    hidden: int = 32
    layers: int = 1  # 1..8 (the training CLI offers 1..3; users' own modules may have more)
    dropout: float = 0.0  # between recurrent layers (training only)
    # "level" | "delta" (predict the change from the last observed value) | "seasonal" (the
    # change from the value one season before the predicted time) | "ets" (the change from an
    # exponential smoothing forecast, see rnnstream.train.ets)
    target_mode: str = "level"
    input_mode: str = "level"  # "level" | "delta" (feed changes since the previous point)
    # For target_mode="delta"/"seasonal": index into the features of each target's own series.
    target_index: list[int] = field(default_factory=list)
    feature_names: list[str] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)
    horizon: int = 1  # the prediction at time t is for time t + horizon
    # target_mode "seasonal": the season S >= horizon; "ets": the seasonal slots of its state
    # (0: no season); 0 for the other modes
    season: int = 0
    # Sizes of the head's hidden linear layers, each followed by head_activation; empty (the
    # default): the head is one linear layer. Models brought by users have such heads
    # (rnnstream.export.export_module), e.g. Linear(H, 32) - Tanh - Linear(32, T).
    head_hidden: list[int] = field(default_factory=list)
    head_activation: str = "tanh"  # one of spec.HEAD_ACTIVATIONS

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ConfigError(f"cell {self.cell!r} is not one of {sorted(CELLS)}")
        for name, lo, hi in (("n_features", 1, 1 << 16), ("n_targets", 1, 1 << 16),
                             ("hidden", 1, 1 << 16), ("layers", 1, 8), ("horizon", 1, 1 << 20)):
            value = getattr(self, name)
            if not isinstance(value, int) or not lo <= value <= hi:
                raise ConfigError(f"{name}={value!r}: expected an integer in {lo}..{hi}")
        if (not isinstance(self.head_hidden, list)
                or not all(isinstance(n, int) and 1 <= n <= 1 << 16 for n in self.head_hidden)):
            raise ConfigError(f"head_hidden={self.head_hidden!r}: expected a list of layer sizes")
        if self.head_activation not in ACTIVATIONS:
            raise ConfigError(f"head_activation={self.head_activation!r}: expected one of "
                             f"{sorted(ACTIVATIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout={self.dropout!r}: expected 0 <= dropout < 1")
        self._check_modes()
        if spec.TARGET_MODE_SPECS[self.target_mode].reference and (
            len(self.target_index) != self.n_targets
            or not all(0 <= i < self.n_features for i in self.target_index)
        ):
            raise ConfigError(
                f"target_mode={self.target_mode!r} needs target_index: for each target, the index "
                "of the same "
                f"series among the {self.n_features} features (got {self.target_index!r})"
            )
        if not self.feature_names:
            self.feature_names = [f"f{i}" for i in range(self.n_features)]
        if not self.target_names:
            self.target_names = [f"t{i}" for i in range(self.n_targets)]
        if len(self.feature_names) != self.n_features or len(self.target_names) != self.n_targets:
            raise ConfigError("feature_names/target_names must have n_features/n_targets entries")

    def _check_modes(self) -> None:
        targets = spec.TARGET_MODE_SPECS
        if self.target_mode not in targets:
            raise ConfigError(f"target_mode={self.target_mode!r}: expected one of "
                             f"{tuple(targets)}")
        season = targets[self.target_mode].season
        if season == "required" and not (
                isinstance(self.season, int) and self.horizon <= self.season <= 1 << 20):
            raise ConfigError(f"target_mode={self.target_mode!r} needs season >= horizon "
                             f"{self.horizon} (got season={self.season!r})")
        if season == "optional" and not (isinstance(self.season, int)
                                         and 0 <= self.season <= 1 << 20):
            raise ConfigError(f"target_mode={self.target_mode!r} needs season >= 0 "
                             f"(got {self.season!r})")
        if season == "none" and self.season:
            takes = " or ".join(repr(n) for n, m in targets.items() if m.season != "none")
            raise ConfigError(f"season={self.season!r} is for target_mode {takes} only")
        inputs = spec.INPUT_MODE_SPECS
        if self.input_mode not in inputs:
            raise ConfigError(f"input_mode={self.input_mode!r}: expected "
                             f"{' or '.join(repr(n) for n in inputs)}")
        if inputs[self.input_mode].needs_reference and not targets[self.target_mode].reference:
            refs = ", ".join(repr(n) for n, m in targets.items() if m.reference)
            raise ConfigError(f"input_mode={self.input_mode!r} needs a target_mode with a "
                              f"reference ({refs}): a network that sees only changes cannot "
                              "know the level it should predict")

    @property
    def state_names(self) -> tuple[str, ...]:
        return spec.state_names(self.cell, self.input_mode, self.target_mode)

    def state_row_shape(self, name: str) -> tuple[int, ...]:
        return spec.state_row_shape(name, layers=self.layers, hidden=self.hidden,
                                    n_features=self.n_features, n_targets=self.n_targets,
                                    season=self.season)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ForecasterConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


class Forecaster(nn.Module):
    """Recurrent layers + a linear head, with normalisation inside; state passed explicitly."""

    # buffers (registered in __init__), declared for type checkers
    x_mean: Tensor
    x_std: Tensor
    y_mean: Tensor
    y_std: Tensor
    target_index: Tensor
    x_level_mean: Tensor
    x_level_std: Tensor

    def __init__(self, config: ForecasterConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.rnn: nn.Module = CELLS[c.cell](
            input_size=c.n_features,
            hidden_size=c.hidden,
            num_layers=c.layers,
            dropout=c.dropout if c.layers > 1 else 0.0,
            batch_first=True,
        )
        self.head: nn.Module = _head(c)
        self.register_buffer("x_mean", torch.zeros(c.n_features))
        self.register_buffer("x_std", torch.ones(c.n_features))
        self.register_buffer("y_mean", torch.zeros(c.n_targets))
        self.register_buffer("y_std", torch.ones(c.n_targets))
        self.register_buffer("target_index", torch.tensor(c.target_index, dtype=torch.long))
        if self._fed_changes:
            # x_mean/x_std describe the changes the network sees; the raw level's own statistics
            # are kept for whoever must draw realistic raw inputs (the export's parity proof)
            self.register_buffer("x_level_mean", torch.zeros(c.n_features))
            self.register_buffer("x_level_std", torch.ones(c.n_features))
        # the target mode's fitted constants (ETS: its recurrence, see set_ets)
        for name, value in TORCH_TARGET_MODES[c.target_mode].buffers(c).items():
            self.register_buffer(name, value)

    @property
    def _fed_changes(self) -> bool:
        """True when the input mode hides the levels (delta): their statistics are kept."""
        return spec.INPUT_MODE_SPECS[self.config.input_mode].needs_reference

    @property
    def out_layer(self) -> nn.Linear:
        """The head's last linear layer (the one that gives the targets)."""
        head = self.head
        last = head[-1] if isinstance(head, nn.Sequential) else head
        if not isinstance(last, nn.Linear):  # pragma: no cover - _head builds it so
            raise TypeError("the head must end with a linear layer")
        return last

    # -- state ----------------------------------------------------------------------------
    def initial_state(self, batch: int, device: torch.device | str | None = None
                      ) -> StateTensors:
        """All-zero state: one [batch, *row] tensor per state name (see the module doc)."""
        device = device if device is not None else self.out_layer.weight.device
        dtype = self.out_layer.weight.dtype
        return tuple(torch.zeros((batch, *self.config.state_row_shape(name)), device=device,
                                 dtype=dtype)
                     for name in self.config.state_names)

    def _to_torch_state(self, state: StateTensors) -> Tensor | tuple[Tensor, ...]:
        s = tuple(t.transpose(0, 1).contiguous() for t in state)  # [B,L,H] -> [L,B,H]
        return s if len(s) > 1 else s[0]  # nn.RNN's convention: one state is a bare tensor

    def _from_torch_state(self, s: Tensor | tuple[Tensor, ...]) -> StateTensors:
        s = s if isinstance(s, tuple) else (s,)
        return tuple(t.transpose(0, 1) for t in s)  # [L,B,H] -> [B,L,H]

    @torch.no_grad()
    def set_ets(self, blocks) -> None:
        """Store each target's ETS recurrence: ``blocks[j] = (g, A, bias, w, c)`` in raw units
        (:func:`rnnstream.train.ets.ets_matrices`), block-diagonally, target j's state at
        ``[j * slots, (j + 1) * slots)`` (``slots = spec.ets_slots(season)``)."""
        size = spec.ets_slots(self.config.season)
        for name in ("ets_input", "ets_recurrent", "ets_bias", "ets_output", "ets_output_bias"):
            self.get_buffer(name).zero_()
        for j, (g, a, bias, w, c) in enumerate(blocks):
            rows = slice(j * size, (j + 1) * size)

            def put(name: str, index, value) -> None:
                buf = self.get_buffer(name)
                buf[index] = torch.as_tensor(value, dtype=buf.dtype)

            put("ets_input", (rows, j), g)
            put("ets_recurrent", (rows, rows), a)
            put("ets_bias", rows, bias)
            put("ets_output", (rows, j), w)
            put("ets_output_bias", j, c)

    # -- normalisation ----------------------------------------------------------------------
    def set_normalization(self, x_mean, x_std, y_mean, y_std, level_mean=None,
                          level_std=None) -> None:
        """Store the statistics; ``level_*`` (the raw features') for delta-input models."""
        values = [("x_mean", x_mean), ("x_std", x_std), ("y_mean", y_mean), ("y_std", y_std)]
        if self._fed_changes and level_mean is not None:
            values += [("x_level_mean", level_mean), ("x_level_std", level_std)]
        for name, value in values:
            buf = getattr(self, name)
            buf.copy_(torch.as_tensor(value, dtype=buf.dtype).reshape(buf.shape))

    def normalization(self) -> dict[str, list[float]]:
        """What the contract records: the statistics of what the network sees (features, or
        their changes for delta inputs) and predicts, and for delta inputs the raw level's."""
        out = {
            "feature_mean": self.x_mean.tolist(),
            "feature_std": self.x_std.tolist(),
            "target_mean": self.y_mean.tolist(),
            "target_std": self.y_std.tolist(),
        }
        if self._fed_changes:
            out["feature_level_mean"] = self.x_level_mean.tolist()
            out["feature_level_std"] = self.x_level_std.tolist()
        return out

    # -- forward --------------------------------------------------------------------------
    def forward_normalized(self, x: Tensor, state: StateTensors | None = None
                           ) -> tuple[Tensor, StateTensors]:
        """x raw [B, T, F] -> (u [B, T, targets] in normalised target units, next_state)."""
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        states = dict(zip(self.config.state_names, state, strict=True))
        own = spec.INPUT_MODE_SPECS[self.config.input_mode].state
        changes = TORCH_INPUT_MODES[self.config.input_mode].changes
        if changes is not None and own is not None:  # the input mode's state moves here; the
            x, states[own] = changes(self, x, states[own])  # target mode's in forward()
        cell = spec.CELLS[self.config.cell].states
        z = (x - self.x_mean) / self.x_std
        out, s = self.rnn(z, self._to_torch_state(tuple(states[n] for n in cell)))  # [B,T,H]
        states.update(zip(cell, self._from_torch_state(s), strict=True))
        return self.head(out), tuple(states.values())

    def forward(self, x: Tensor, state: StateTensors | None = None
                ) -> tuple[Tensor, StateTensors]:
        """x raw [B, T, F] -> (y raw [B, T, targets], next_state)."""
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        u, next_state = self.forward_normalized(x, state)
        y = u * self.y_std + self.y_mean
        ref, moved = self._reference(x, state)
        if ref is None:
            return y, next_state
        own = spec.TARGET_MODE_SPECS[self.config.target_mode].state
        if own is not None and moved is not None:
            i = self.config.state_names.index(own)
            next_state = (*next_state[:i], moved, *next_state[i + 1:])
        return y + ref, next_state

    def _reference(self, x: Tensor, state: StateTensors) -> tuple[Tensor | None, Tensor | None]:
        """(what the target mode adds to the network's output, its state after x); (None,
        None) for a mode without a reference (rnnstream.train.modes)."""
        reference = TORCH_TARGET_MODES[self.config.target_mode].reference
        if reference is None:
            return None, None
        own = spec.TARGET_MODE_SPECS[self.config.target_mode].state
        mine = None if own is None else state[self.config.state_names.index(own)]
        return reference(self, x, mine)

    def reference(self, x: Tensor) -> Tensor | None:
        """What the target mode adds to the network's output, [B, T, targets], for inputs x
        from the initial state: the last observed targets ("delta"), the targets one season
        before the predicted time ("seasonal", the last observed ones where that was never
        seen), the ETS forecasts ("ets"); None for "level"."""
        return self._reference(x, self.initial_state(x.shape[0], x.device))[0]

    def target_to_normalized(self, x: Tensor, y: Tensor) -> Tensor:
        """Raw targets y [B, T, targets] (for inputs x) -> what forward_normalized should give."""
        ref = self.reference(x)
        if ref is not None:
            y = y - ref
        return (y - self.y_mean) / self.y_std


def _head(c: ForecasterConfig) -> nn.Module:
    """One Linear (state_dict keys ``head.weight``/``head.bias``, as every release wrote), or
    Linear - activation - ... - Linear for ``head_hidden`` (keys ``head.0.weight``, ...)."""
    if not c.head_hidden:
        return nn.Linear(c.hidden, c.n_targets)
    layers: list[nn.Module] = []
    width = c.hidden
    for size in c.head_hidden:
        layers += [nn.Linear(width, size), ACTIVATIONS[c.head_activation]()]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, c.n_targets))
