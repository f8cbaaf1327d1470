"""One live configuration: :class:`LiveConfig`, taken by Predictor, StreamPool, Spark and the CLI.

The live scores (:mod:`.live`) are set up by five settings: ``coverage`` (None: off), ``season``,
``lr``, ``half_life`` and ``initial_quantiles``. :class:`LiveConfig` checks them once, where
they are given, and refuses the one contradiction, a setting of the live scores without
``coverage`` (they are off then), with one error. A refused setting is a
:class:`~rnnstream.runtime.errors.LiveConfigError` (a ConfigError, and an InputError as before).
The checks of single values (:func:`check_fraction`, :func:`check_positive`,
:func:`check_count`) are written here once; the score objects' own argument checks call them.
The older keyword arguments (``coverage=``, ``season=``, ``live_options=``) build one with
:meth:`LiveConfig.from_options`.

It also says what a live stream does with a prediction that is NaN or infinite (the model's own
output; its state has already moved on, so the point cannot be refused): the stream's live
scores start afresh, because such a prediction can be neither scored nor bounded. The score
objects apply that policy in one method each (:meth:`LiveStream.observe` and
:meth:`LiveScores.observe`, plain floats and numpy); every caller feeds them through those.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._live_scores import LiveScores
from ._live_settings import DEFAULTS
from ._live_stream import LiveStream
from .contract import ModelContract
from .errors import LiveConfigError

__all__ = ["LIVE_OPTIONS", "LiveConfig", "check_count", "check_fraction", "check_positive",
           "open_live"]

# what live_options= may hold
LIVE_OPTIONS = ("lr", "half_life", "initial_quantiles", "initial_scales")


@dataclass(frozen=True)
class LiveConfig:
    """Live scores and prediction intervals, as asked (checked at construction).

    ``coverage``: the intervals' coverage in (0, 1); None turns the live scores off, and then
    every other setting must be left at its default. A bad setting is a LiveConfigError (a
    ConfigError and an InputError). ``season``: the
    seasonal-naive baseline's period in points (None: the season the model was trained with,
    if its contract stores one; 0: none). ``lr`` and ``half_life``: the interval's step and the
    recent accuracy's half-life (:mod:`.live`). ``initial_quantiles``: one starting half-width
    per target (None: the validation half-widths the contract stores; inf: none).
    ``initial_scales``: one starting scale of the errors per target, the prior of the scale the
    interval follows (None: the median validation ``|residual|`` the contract stores, when the
    starting half-widths come from it too; inf: none, and the width follows the recent MAE once
    ``warmup`` points were scored).
    """

    coverage: float | None = None
    season: int | None = None
    lr: float = DEFAULTS["lr"]
    half_life: float = DEFAULTS["half_life"]
    initial_quantiles: tuple[float, ...] | None = None
    initial_scales: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        off = self.coverage is None
        if off:
            given = self._given()
            if given:
                raise LiveConfigError(
                    f"{' and '.join(given)} set up the live scores, which are off without "
                    "coverage; give coverage too (e.g. coverage=0.9), or leave "
                    f"{'it' if len(given) == 1 else 'them'} out")
        else:
            check_fraction(self.coverage, "coverage")
        if self.season is not None:
            object.__setattr__(self, "season", check_count(
                self.season, "season", 0, "a whole number of points (0: none), or None for the "
                "season the model was trained with"))
        check_positive(self.lr, "lr")
        check_positive(self.half_life, "half_life")
        if self.initial_quantiles is not None:
            object.__setattr__(self, "initial_quantiles", _half_widths(self.initial_quantiles))
        if self.initial_scales is not None:
            object.__setattr__(self, "initial_scales", _half_widths(
                self.initial_scales, "initial_scales",
                "non-negative scales of the errors (e.g. the median |residual| on validation)"))

    def _given(self) -> list[str]:
        """The settings that differ from their defaults (for the coverage=None message)."""
        given = [] if self.season is None else [f"season={self.season!r}"]
        given += [f"{name}={getattr(self, name)!r}" for name in LIVE_OPTIONS
                  if getattr(self, name) != {**DEFAULTS, "initial_quantiles": None,
                                                   "initial_scales": None}[name]]
        return given

    @classmethod
    def from_options(cls, coverage: float | None = None, season: int | None = None,
                     live_options: Mapping[str, Any] | None = None) -> LiveConfig:
        """The config of the older keyword arguments ``coverage``, ``season`` and
        ``live_options`` (``lr``, ``half_life``, ``initial_quantiles``)."""
        opts = dict(live_options or {})
        unknown = set(opts) - set(LIVE_OPTIONS)
        if unknown:
            raise LiveConfigError(f"live_options {sorted(unknown)} unknown; expected some "
                                  f"of {sorted(LIVE_OPTIONS)}")
        return cls(coverage, season, **opts)

    @classmethod
    def resolve(cls, live: LiveConfig | None, coverage: float | None, season: int | None,
                live_options: Mapping[str, Any] | None, who: str) -> LiveConfig:
        """``live``, or the config of the older keyword arguments; not both (LiveConfigError)."""
        if live is None:
            return cls.from_options(coverage, season, live_options)
        if not isinstance(live, LiveConfig):
            raise LiveConfigError(f"{who}: live is {type(live).__name__}; expected a "
                                  "LiveConfig (e.g. LiveConfig(coverage=0.9))")
        if coverage is not None or season is not None or live_options:
            raise LiveConfigError(f"{who}: give live=LiveConfig(...) or coverage=/season=/"
                                  "live_options=, not both")
        return live

    @property
    def enabled(self) -> bool:
        """True when the live scores are on (a coverage was given)."""
        return self.coverage is not None

    def options(self) -> dict[str, Any]:
        """``lr``, ``half_life`` and ``initial_quantiles`` (when given), as live_options."""
        out: dict[str, Any] = {"lr": self.lr, "half_life": self.half_life}
        if self.initial_quantiles is not None:
            out["initial_quantiles"] = list(self.initial_quantiles)
        if self.initial_scales is not None:
            out["initial_scales"] = list(self.initial_scales)
        return out

    def open(self, contract: ModelContract, source: str = "model", n: int | None = None
             ) -> Any:
        """:class:`LiveStream` (``n`` None) or :class:`LiveScores` of ``n`` streams for the
        model of ``contract``: the season and the starting half-widths not given come from
        the contract (:meth:`ModelContract.live_facts`). Needs a coverage (LiveConfigError)."""
        if self.coverage is None:
            raise LiveConfigError("the live scores are off (coverage=None); give a coverage, "
                                  "e.g. LiveConfig(coverage=0.9)")
        facts = contract.live_facts(source) if self.season is None \
            or self.initial_quantiles is None else None
        season = self.season if self.season is not None else facts.season if facts else None
        initial: Sequence[float] | None = self.initial_quantiles
        if initial is None and facts is not None and facts.calibration is not None:
            initial = facts.calibration.half_widths_at(contract.targets, self.coverage)
        # the scale's prior: the median validation |residual| (the calibration's 0.5 level),
        # with the starting widths it belongs to
        scales: Sequence[float] | None = self.initial_scales
        if scales is None and self.initial_quantiles is None and facts is not None \
                and facts.calibration is not None:
            scales = facts.calibration.half_widths_at(contract.targets, 0.5)
        settings = {"horizon": contract.horizon, "season": season or None,
                    "coverage": self.coverage, "initial_quantiles": initial, "lr": self.lr,
                    "half_life": self.half_life, "initial_scales": scales}
        if n is None:
            return LiveStream(contract.features, contract.targets, **settings)
        return LiveScores(n, contract.features, contract.targets, **settings)


def open_live(contract: ModelContract, coverage: float, season: int | None,
              options: Mapping[str, Any], source: str = "model", n: int | None = None) -> Any:
    """``LiveConfig.from_options(coverage, season, options).open(contract, source, n)``: a
    :class:`LiveStream` (``n`` None) or :class:`LiveScores` of ``n`` streams."""
    return LiveConfig.from_options(coverage, season, options).open(contract, source, n)


def check_fraction(value: Any, what: str) -> float:
    """``value`` as a float strictly between 0 and 1 (a coverage), or LiveConfigError; a bool
    (numpy's too) is not a number here."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float)) \
            or not 0.0 < value < 1.0:
        raise LiveConfigError(f"{what} is {value!r}; expected a number strictly between 0 "
                              "and 1")
    return float(value)


def check_positive(value: Any, what: str) -> float:
    """``value`` as a finite float > 0 (a step, a half-life), or LiveConfigError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise LiveConfigError(f"{what} is {value!r}; expected a positive number")
    return float(value)


def check_count(value: Any, what: str, low: int, expected: str = "") -> int:
    """``value`` as an int >= ``low`` (Python's or numpy's integers, not a bool), or
    LiveConfigError saying ``expected`` (default: "an integer >= low")."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < low:
        raise LiveConfigError(f"{what} is {value!r}; expected "
                              f"{expected or f'an integer >= {low}'}")
    return int(value)


def _half_widths(value: Any, what: str = "initial_quantiles",
                 expected: str = "non-negative half-widths") -> tuple[float, ...]:
    """``initial_quantiles`` (or ``initial_scales``, naming ``what`` and what is ``expected``)
    as a tuple of floats (its length is checked against the model's targets when the scores
    open), or LiveConfigError."""
    try:
        items = [float(v) for v in value]
        flat = all(not hasattr(v, "__len__") for v in value)
    except (TypeError, ValueError):
        items, flat = [], False
    if not flat or isinstance(value, (str, bytes)) or any(math.isnan(v) or v < 0 for v in items):
        raise LiveConfigError(f"{what} is {value!r}; expected {expected}, one per target "
                              "(inf: none)")
    return tuple(items)
