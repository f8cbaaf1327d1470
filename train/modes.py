"""The training side of the mode registry: what each input and target mode does in torch.

A mode is one entry in each stage's table, looked up by its name, like a cell
(:data:`rnnstream.runtime.spec.INPUT_MODE_SPECS` / :data:`~rnnstream.runtime.spec.
TARGET_MODE_SPECS` for its facts and its state's name and shape, :data:`TORCH_INPUT_MODES` /
:data:`TORCH_TARGET_MODES` here, :mod:`rnnstream.export.modes` for its ONNX nodes). The
:class:`~rnnstream.train.Forecaster` calls these functions by the config's mode names and
hands each its own state (looked up by name, never by position); a mode's buffers are
registered on the model under the names its entry gives.

* An input mode turns the raw inputs into what the network sees and moves its state:
  ``changes(model, x [B,T,F], state) -> (seen [B,T,F], new state)``; ``after(model, before
  [B,F]) -> state`` is its state once the point ``before`` was fed (training starts each
  segment of a series from it); ``seen(x [n,F]) -> [n,F]`` what the network sees of a whole
  training series in numpy, for the normalisation statistics.
* A target mode with a reference (``spec`` ``reference=True``) gives what is added to the
  network's output and moves its state: ``reference(model, x [B,T,F], state) -> (ref [B,T,Tg],
  new state)`` (``state`` None for a mode without one). ``buffers(config)`` are its fitted
  constants (ETS: the recurrence), zeros until set.

Equations (``targets = x[..., target_index]``, ``h`` the horizon, ``S`` the season)::

    input delta:     first = seen * prev + (1 - seen) * x[:, 0];  d = x - [first, x[:, :-1]]
                     last' = [x[:, -1], 1]
    target delta:    ref = targets
    target seasonal: c = [cycle, (targets, 1)] along time;  back = c[:, h : h + T]
                     ref = flag * back_value + (1 - flag) * targets;  cycle' = c[:, -S:]
    target ets:      e_t = targets_t @ G.T + e_t-1 @ A.T + b;  ref_t = e_t @ w + c;  ets' = e_T
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from rnnstream.runtime import spec

from .errors import ConfigError

if TYPE_CHECKING:
    from .model import Forecaster, ForecasterConfig

__all__ = ["TORCH_INPUT_MODES", "TORCH_TARGET_MODES", "TorchInputMode", "TorchTargetMode",
           "carry_point", "delta_changes", "ets_buffers", "ets_reference", "seasonal_reference"]

# (model, x [B,T,F], its state) -> (what the network sees [B,T,F], the new state)
Changes = Callable[["Forecaster", Tensor, Tensor], tuple[Tensor, Tensor]]
# (model, x [B,T,F], its state or None) -> (reference [B,T,Tg], the new state or None)
Reference = Callable[["Forecaster", Tensor, "Tensor | None"], tuple[Tensor, "Tensor | None"]]
# config -> {buffer name: initial value}
Buffers = Callable[["ForecasterConfig"], dict[str, Tensor]]


def _no_buffers(config: ForecasterConfig) -> dict[str, Tensor]:
    return {}


@dataclass(frozen=True)
class TorchInputMode:
    """An input mode's torch side (module doc); ``changes`` None: x is fed as it is."""

    changes: Changes | None = None
    after: Callable[[Forecaster, Tensor], Tensor] | None = None
    # what the network sees of a whole training series [n, F] (float64 numpy), for the
    # normalisation statistics; None: the series itself
    seen: Callable[[np.ndarray], np.ndarray] | None = None


@dataclass(frozen=True)
class TorchTargetMode:
    """A target mode's torch side (module doc); ``reference`` None: the network predicts the
    value itself."""

    reference: Reference | None = None
    buffers: Buffers = _no_buffers


def _targets(model: Forecaster, x: Tensor) -> Tensor:
    return x.index_select(-1, model.target_index)


def delta_changes(model: Forecaster, x: Tensor, last: Tensor) -> tuple[Tensor, Tensor]:
    """(x [B,T,F] -> d [B,T,F] changes since the previous point, the new ``last`` state).

    ``last`` is [B, F + 1]: the previous point and a flag, 1 once a point was seen. The
    previous point of x[:, 0] is ``last`` when the flag is 1, else x[:, 0] itself (change 0).
    With the flag exactly 0 or 1 the blend below is exact in float arithmetic, so the ONNX
    graph, which computes the same expression, agrees bit for bit on it.
    """
    f = x.shape[-1]
    prev, seen = last[:, :f], last[:, f:]
    first = seen * prev + (1 - seen) * x[:, 0]
    shifted = torch.cat([first[:, None], x[:, :-1]], dim=1)
    new_last = torch.cat([x[:, -1], torch.ones_like(seen)], dim=1)
    return x - shifted, new_last


def _delta_after(model: Forecaster, before: Tensor) -> Tensor:
    """``last`` once ``before`` [B, F] was fed: the point and flag 1."""
    flag = torch.ones((before.shape[0], 1), device=before.device, dtype=before.dtype)
    return torch.cat([before, flag], dim=1)


def _delta_reference(model: Forecaster, x: Tensor, state: Tensor | None
                     ) -> tuple[Tensor, Tensor | None]:
    return _targets(model, x), None


def seasonal_reference(model: Forecaster, x: Tensor, cycle: Tensor | None
                       ) -> tuple[Tensor, Tensor]:
    """(x [B,T,F], cycle [B,S,Tg+1]) -> (reference [B,T,Tg], the new cycle).

    ``c = cat(cycle, (targets, 1))`` along time holds the targets from S points before x;
    the value one season before the time ``t + h`` that ``y[:, t]`` predicts is ``c[:, t +
    h]``. Where its flag is 0 (never seen) the last observed target ``x[:, t]`` stands in;
    the blend is exact for flags 0 and 1, as in the graphs, which compute the same.
    """
    if cycle is None:  # pragma: no cover - the Forecaster always passes the state
        raise ConfigError("target_mode 'seasonal' needs its cycle state")
    cfg = model.config
    s, h, tg = cfg.season, cfg.horizon, cfg.n_targets
    targets = _targets(model, x)  # [B, T, Tg]
    seen = torch.cat([targets, targets[..., :1] * 0 + 1], dim=-1)  # [B, T, Tg + 1]
    c = torch.cat([cycle, seen], dim=1)  # [B, S + T, Tg + 1]
    back = c[:, h:h + x.shape[1]]
    flag = back[..., tg:]
    ref = flag * back[..., :tg] + (1 - flag) * targets
    return ref, c[:, -s:]


def ets_buffers(config: ForecasterConfig) -> dict[str, Tensor]:
    """The ETS recurrence (zeros until ``Forecaster.set_ets``): ``e_t = y_t @ ets_input.T +
    e_t-1 @ ets_recurrent.T + ets_bias``, forecast ``e_t @ ets_output + ets_output_bias``, one
    block per target."""
    (size,) = spec.TARGET_MODE_SPECS["ets"].row_shape(config.n_features, config.n_targets,
                                                        config.season)
    return {"ets_input": torch.zeros(size, config.n_targets),
            "ets_recurrent": torch.zeros(size, size),
            "ets_bias": torch.zeros(size),
            "ets_output": torch.zeros(size, config.n_targets),
            "ets_output_bias": torch.zeros(config.n_targets)}


def ets_reference(model: Forecaster, x: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor]:
    """(x [B,T,F], ets state [B,S]) -> (the ETS forecasts [B,T,Tg], the new state)."""
    if h is None:  # pragma: no cover - the Forecaster always passes the state
        raise ConfigError("target_mode 'ets' needs its ets state")
    buf = model.get_buffer
    targets = _targets(model, x)
    pushed = targets @ buf("ets_input").T + buf("ets_bias")  # [B, T, S]
    recurrent = buf("ets_recurrent").T
    states = []
    for t in range(x.shape[1]):
        h = pushed[:, t] + h @ recurrent
        states.append(h)
    seq = torch.stack(states, dim=1)
    return seq @ buf("ets_output") + buf("ets_output_bias"), h


def carry_point(model: Forecaster, state: tuple[Tensor, ...], before: Tensor
                ) -> tuple[Tensor, ...]:
    """``state`` with the input mode's own state set to what it is once the point ``before``
    [B, F] was fed (``TorchInputMode.after``); unchanged for a mode without one."""
    own = spec.INPUT_MODE_SPECS[model.config.input_mode].state
    after = TORCH_INPUT_MODES[model.config.input_mode].after
    if own is None or after is None:
        return state
    i = model.config.state_names.index(own)
    return (*state[:i], after(model, before), *state[i + 1:])


def _delta_seen(x: np.ndarray) -> np.ndarray:
    """The changes of a series [n, F], the first one 0 (a stream's first point)."""
    return np.diff(x, axis=0, prepend=x[:1])


TORCH_INPUT_MODES: dict[str, TorchInputMode] = {
    "level": TorchInputMode(),
    "delta": TorchInputMode(delta_changes, _delta_after, _delta_seen),
}
TORCH_TARGET_MODES: dict[str, TorchTargetMode] = {
    "level": TorchTargetMode(),
    "delta": TorchTargetMode(_delta_reference),
    "seasonal": TorchTargetMode(seasonal_reference),
    "ets": TorchTargetMode(ets_reference, ets_buffers),
}
for _ours, _specs in ((TORCH_INPUT_MODES, spec.INPUT_MODE_SPECS),
                      (TORCH_TARGET_MODES, spec.TARGET_MODE_SPECS)):
    if set(_ours) != set(_specs):  # pragma: no cover - a developer's mistake
        raise ImportError(f"train.modes {sorted(_ours)} != runtime.spec's modes {sorted(_specs)}")
