"""One stream: :class:`Predictor` feeds points to a model one at a time and carries its state.

The model (sessions, I/O, point validation) is an engine from :mod:`._engine`, the state is the
stream object the engine opens: for rnnstream models two ping-pong IOBindings over preallocated
buffers (no allocation and no state copy per step), for foreign models plain ``session.run``.
The Predictor itself only checks and converts what crosses its public methods.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from ._engine import Engine, open_engine
from ._generic import BatchAxis
from ._state import (
    State,
    check_fingerprint,
    check_tensors,
    read_snapshot,
    state_arrays,
    tensors_from,
    write_snapshot,
)
from .contract import ModelContract
from .errors import UnsupportedError
from .live import FORECASTERS, LiveConfig, LiveStream, snapshot_entries, step_ratios

__all__ = ["Predictor"]

class _EngineFacts:
    """What Predictor and StreamPool both say about their model (read from the engine)."""

    _engine: Engine

    @property
    def path(self) -> str:
        return self._engine.path

    @property
    def contract(self) -> ModelContract | None:
        """The model's rnnstream contract; None for a foreign model."""
        return self._engine.contract

    @property
    def features(self) -> list[str] | None:
        """The model's feature names, in input order; None for a foreign model."""
        return self._engine.features

    @property
    def targets(self) -> list[str] | None:
        """The model's target names, in output order; None for a foreign model."""
        return self._engine.targets

    @property
    def fingerprint(self) -> str:
        return self._engine.fingerprint

    @property
    def state_pairs(self) -> dict[str, str]:
        """State input name -> the output that feeds it on the next call."""
        return self._engine.state_pairs

    @property
    def uses_step_graph(self) -> bool:
        """True when streaming steps run the model's single-step graph (``model.step.onnx``)."""
        return self._engine.step_session is not None

    @property
    def pairing(self) -> str:
        """One line saying how the state pairs were found."""
        return self._engine.pairing


class Predictor(_EngineFacts):
    """Streams one series through a stateful ONNX model, one point at a time.

    ``model`` is a path to an ``.onnx`` file. rnnstream models carry their contract; for any
    other stateful model pass ``state_map={input: output}`` (or rely on the naming conventions
    listed in :mod:`rnnstream.runtime._generic`) and constant inputs as ``fixed_inputs``.
    Their axes are probed with onnxruntime at load: the batch axis (or give it: ``batch_axis``,
    the data input's axis, or ``{input name: axis}``), and a free time axis, along which
    :meth:`prime` runs a whole history in one call. With a time axis, the state pairs are
    checked at load: a few seeded points in one call must equal the same points one call at a
    time (a swapped pair raises ContractError).
    ``session_options`` and ``providers`` replace the latency-minded defaults (one thread).

    A Predictor is one stream and is not meant to be shared between threads; use
    :class:`~rnnstream.runtime.StreamPool` for many streams or concurrent callers.

    ``live=LiveConfig(coverage=0.9, ...)`` (rnnstream models only; default: off, and ``step``
    costs what it did) turns on live scores (:class:`~rnnstream.runtime.live.LiveStream`):
    every point fed is also scored against the prediction made ``horizon`` points before it,
    and each prediction gets an interval at that coverage, calibrated online (:meth:`interval`,
    :meth:`accuracy`, :meth:`realised_coverage`, :meth:`forecast_interval`); the LiveConfig
    holds the other settings (season, lr, half-life, starting half-widths) and what a NaN or
    infinite prediction does (the live scores start afresh). ``coverage=``, ``season=`` and
    ``live_options=`` (``lr``, ``half_life``, ``initial_quantiles``, ``initial_scales``) still
    build one.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        session_options: ort.SessionOptions | None = None,
        providers: Sequence[Any] | None = None,
        state_map: Mapping[str, str] | None = None,
        fixed_inputs: Mapping[str, Any] | None = None,
        batch_axis: BatchAxis = None,
        coverage: float | None = None,
        season: int | None = None,
        live_options: Mapping[str, Any] | None = None,
        live: LiveConfig | None = None,
    ) -> None:
        config = LiveConfig.resolve(live, coverage, season, live_options, "Predictor")
        self._engine = open_engine(model, session_options=session_options, providers=providers,
                                   state_map=state_map, fixed_inputs=fixed_inputs,
                                   batch_axis=batch_axis)
        self._stream = self._engine.open_stream()
        self._live: LiveStream | None = None
        self._ratios: np.ndarray | None = None
        self._one_target = False
        self._source = -1  # with one target: which feature is its value (-1: none)
        if config.enabled:
            self._live = self._open_live(config)
            self._one_target = len(self._live.targets) == 1
            self._source = int(self._live.source[0])

    def _open_live(self, config: LiveConfig) -> LiveStream:
        c = self._engine.contract
        if c is None:
            raise UnsupportedError("coverage needs an rnnstream contract (feature and target "
                                   "names, horizon); this is a foreign model")
        live: LiveStream = config.open(c, self.path)
        return live

    def __repr__(self) -> str:
        return f"Predictor({self.path!r}, state_pairs={self.state_pairs})"

    # -- streaming ------------------------------------------------------------------------------
    def step(self, point: Any) -> float | np.ndarray:
        """Feed one point; return the prediction (a float when the model has one target).

        ``point`` is a number (one feature), a sequence of the features' values, or a mapping
        of feature name to value. A refused point raises InputError and changes nothing.
        """
        if self._live is None:
            return self._stream.step(point)
        return self._step_live(point)

    def _step_live(self, point: Any) -> float | np.ndarray:
        y = self._stream.step(point)
        self._live_update(self._stream.last_point(), y)
        return y

    def _live_update(self, x: np.ndarray, y: Any) -> None:
        live = self._live
        if live is None:
            return
        # observe: a NaN or infinite prediction starts the live scores afresh (LiveConfig)
        if type(y) is float:  # one target: the scalar path
            src = self._source
            live.observe_one(x.item(src) if src >= 0 else math.nan, y)
            return
        live.observe(x.tolist(), np.asarray(y, np.float64).ravel().tolist())

    def prime(self, history: Any) -> np.ndarray:
        """Run ``history`` ([time, F], or [time] with one feature) through the model in one
        call, carrying the state; return the prediction after each point ([time] or
        [time, T]), exactly what ``step`` would have returned one by one."""
        if self._live is None:
            return self._stream.prime(history)
        rows = self._engine.reader.rows(history, "history")
        ys = self._stream.prime(rows)
        for x, y in zip(rows, ys, strict=True):
            self._live_update(x, y.item() if np.ndim(y) == 0 else y)
        return ys

    def forecast(self, n: int) -> np.ndarray:
        """Predict ``n`` steps ahead by feeding each prediction back as the next point.

        Starts from the live state and the latest prediction; the live state is untouched.
        Needs a model whose targets are its features (UnsupportedError otherwise).
        """
        return self._stream.forecast(n)

    def reset(self) -> None:
        """Back to the initial (all-zero) state; forget the latest prediction and the live
        scores."""
        self._stream.reset()
        if self._live is not None:
            self._live.reset()

    # -- live scores (coverage=...) -------------------------------------------------------------
    def interval(self) -> tuple[float | np.ndarray, float | np.ndarray]:
        """``(lower, upper)`` around the latest prediction at the Predictor's ``coverage``
        (floats with one target, else ``[T]`` arrays): NaN before the first prediction; +-inf
        for a target that is not a feature, and until the stream has scored a few points when
        the model stores no validation quantiles. Needs ``coverage`` (UnsupportedError)."""
        live = self._live_scores("interval")
        if self._one_target:
            return live.interval_of_one()
        lower, upper = live.interval()
        return np.array(lower), np.array(upper)

    def forecast_interval(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(forecast, lower, upper)``, each ``[n]`` (or ``[n, T]``): :meth:`forecast` with an
        interval per step. ``forecast(n)[i]`` is ``i + 2`` steps past the latest point (the
        latest prediction, one step ahead, has :meth:`interval`); its half-width is the live
        one-step half-width times the ratio of the validation half-widths ``i + 2`` steps and
        1 step ahead stored in the contract (infinite for a model without them). Only the
        one-step interval is calibrated online."""
        live = self._live_scores("forecast_interval")
        y = self._stream.forecast(n)
        f = y.reshape(n, -1)
        c = self._engine.contract
        if self._ratios is None or len(self._ratios) < n + 1:
            facts = c.live_facts(self.path) if c else None
            self._ratios = step_ratios(facts.calibration if facts else None, live.targets,
                                       live.coverage, max(n + 1, 16), self.path)
        with np.errstate(invalid="ignore"):  # 0 * inf: a zero width scaled by no figure
            w = np.asarray(live.half_width(), np.float64)[None] * self._ratios[1:n + 1]
        w = np.where(np.isnan(w), np.inf, w)
        lower, upper = f - w, f + w
        if y.ndim == 1:
            return y, lower[:, 0], upper[:, 0]
        return y, lower, upper

    def accuracy(self) -> dict[str, dict[str, float | np.ndarray]]:
        """Live accuracy: forecaster (``model``, ``persistence``, ``seasonal``) -> ``mae``,
        ``mse``, ``recent_mae``, ``recent_mse``, ``count`` (floats with one target, else
        ``[T]`` arrays); NaN where nothing was scored (a target that is not a feature, no
        ``season``). Needs ``coverage`` (UnsupportedError)."""
        scores = self._live_scores("accuracy").scores()
        one = scores["mae"].shape[2] == 1
        return {f: {name: (v[0, i, 0].item() if one else v[0, i].copy())
                    for name, v in scores.items()}
                for i, f in enumerate(FORECASTERS)}

    def realised_coverage(self) -> tuple[float | np.ndarray, int | np.ndarray]:
        """``(share, scored)``: the share of this stream's scored intervals that held the
        value, and how many were scored (floats/ints with one target, else ``[T]`` arrays)."""
        share, scored = self._live_scores("realised_coverage").coverage_so_far()
        if share.shape[1] == 1:
            return float(share[0, 0]), int(scored[0, 0])
        return share[0], scored[0]

    @property
    def live(self) -> LiveStream | None:
        """The live scores (settings: ``coverage``, ``season``, ...); None without coverage."""
        return self._live

    def _live_scores(self, what: str) -> LiveStream:
        if self._live is None:
            raise UnsupportedError(f"{what}() needs live scores: open the Predictor with "
                                   "coverage=0.9 (or another coverage)")
        return self._live

    def run_sequence(self, x: Any, state: State | Mapping[str, np.ndarray] | None = None
                     ) -> tuple[np.ndarray, State]:
        """Run ``x`` ([time, F], or [time] with one feature) from ``state`` (a State from
        get_state/run_sequence, a mapping of name -> row array, or None for the initial state);
        return ``(y, next_state)``: the predictions ``[time, T]`` and the state after the last
        point. A pure function of its arguments: this Predictor's own stream is untouched.

        The same numbers as :meth:`prime` from that state (one call of the sequence graph for
        rnnstream models). A misfit state raises StateError, a bad ``x`` InputError.
        """
        engine = self._engine
        if state is None:
            tensors = engine.zero_state()
        else:
            if isinstance(state, State) and state.fingerprint:
                check_fingerprint(state.fingerprint, self.fingerprint, "run_sequence")
            tensors = check_tensors(state, engine.io.states, "run_sequence")
        rows = engine.reader.rows(x, "run_sequence x")
        y, new = engine.run_sequence(rows, tensors)
        y = y.reshape(len(rows), -1)
        return y, State(new, self.fingerprint, y[-1].copy())

    @property
    def last_outputs(self) -> dict[str, np.ndarray]:
        """The latest step's outputs other than the states, by name (copies; after prime: its
        last point's): the prediction, and each other output the model's contract declares
        (role ``quantile``, ``aux``, ...), ``[values]`` each; empty before the first step. After
        set_state/load_state the other outputs are NaN until the next step (a state carries
        only the prediction)."""
        return self._stream.last_outputs()

    # -- state ----------------------------------------------------------------------------------
    def get_state(self) -> State:
        """A copy of the live state (and the latest prediction), safe to keep and restore."""
        return State(self._stream.rows(), self.fingerprint, self._stream.last_output())

    def set_state(self, state: State | Mapping[str, np.ndarray]) -> None:
        """Continue from ``state`` (from get_state, or a mapping of name -> row array).
        With ``coverage``, the live scores start afresh (a State holds no live scores; use
        save_state/load_state to carry them).

        Wrong names, shapes, dtype, non-finite values or another model's fingerprint raise
        StateError and change nothing.
        """
        if isinstance(state, State) and state.fingerprint:
            check_fingerprint(state.fingerprint, self.fingerprint, "set_state")
        tensors = check_tensors(state, self._engine.io.states, "set_state")
        last = state.last_output if isinstance(state, State) else None
        self._stream.install(tensors, self._stream.check_last(last, "set_state"))
        if self._live is not None:  # its pending forecasts belong to the trajectory left
            self._live.reset()

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Write the state to ``path`` (.npz) atomically, with the model's fingerprint."""
        arrays = state_arrays(self._stream.rows())
        last = self._stream.last_output()
        if last is not None and self._stream.keeps_last:
            arrays["last_output"] = last
        meta: dict[str, Any] = {"kind": "stream", "fingerprint": self.fingerprint,
                                "states": [s.name for s in self._engine.io.states]}
        if self._live is not None:
            arrays.update(snapshot_entries(self._live.state_arrays()))
            meta["live"] = self._live.settings()
        write_snapshot(path, meta, arrays)

    def load_state(self, path: str | os.PathLike[str]) -> None:
        """Continue from a snapshot written by :meth:`save_state` for this same model.

        With ``coverage``, the snapshot's live scores continue too; a snapshot without them
        (an older one, or saved without coverage) or saved with other live settings (coverage,
        season, ...; warned) starts the live scores afresh. Live scores in the snapshot of a
        Predictor without ``coverage`` are ignored.
        """
        source = os.fspath(path)
        meta, arrays = read_snapshot(source, "stream")
        check_fingerprint(str(meta.get("fingerprint", "")), self.fingerprint, source)
        tensors = check_tensors(tensors_from(arrays), self._engine.io.states, source)
        last = self._stream.check_last(arrays.get("last_output"), source)
        if self._live is not None:  # checked before anything is written: all or nothing
            self._live.load_arrays(self._live.from_snapshot(arrays, meta, source), source)
        self._stream.install(tensors, last)
