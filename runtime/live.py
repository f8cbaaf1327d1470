"""Live accuracy and calibrated prediction intervals, per stream: the public names.

What each module does (the method, written out once, is :mod:`._live_settings`' docstring):

* :mod:`.live_config`: :class:`LiveConfig`, the settings as asked (coverage, season, lr,
  half-life, starting half-widths), checked once, and how they open the scores of a model;
* :mod:`._live_settings`: the method, the settings and state layout both score objects share;
* :mod:`._live_scores`: :class:`LiveScores`, many streams in numpy (StreamPool, Spark buckets);
* :mod:`._live_stream`: :class:`LiveStream`, one stream in plain floats (Predictor, Spark), the
  same numbers bit for bit;
* :mod:`.calibration`: the validation half-widths a contract stores, the intervals' start.
"""

from __future__ import annotations

from ._live_scores import LiveScores
from ._live_settings import (
    ACC,
    DEFAULTS,
    FLOOR,
    FORECASTERS,
    RATIO_MAX,
    SMALLEST_SCALE,
    SNAPSHOT_PREFIX,
    STATE_ARRAYS,
    exp_series,
    snapshot_entries,
)
from ._live_stream import LiveStream
from .calibration import (
    CALIBRATION_LEVELS,
    Calibration,
    conformal_half_widths,
    initial_half_widths,
    step_ratios,
)
from .live_config import LIVE_OPTIONS, LiveConfig, open_live

__all__ = [
    "ACC",
    "CALIBRATION_LEVELS",
    "DEFAULTS",
    "FLOOR",
    "FORECASTERS",
    "LIVE_OPTIONS",
    "RATIO_MAX",
    "SMALLEST_SCALE",
    "SNAPSHOT_PREFIX",
    "STATE_ARRAYS",
    "Calibration",
    "LiveConfig",
    "LiveScores",
    "LiveStream",
    "conformal_half_widths",
    "exp_series",
    "initial_half_widths",
    "open_live",
    "snapshot_entries",
    "step_ratios",
]
