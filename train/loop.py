"""Training: truncated BPTT with the detached state carried across windows, early stopping.

How one run goes (``train`` makes one per candidate mode, see "modes" below):

1. Pairs input t -> target t + horizon; the last ``val_fraction`` of the pairs validate.
2. Mean/std of what the network sees (the features, or their changes for ``input_mode="delta"``)
   and of what it predicts (the targets, or their changes) are fitted on the training pairs only
   and stored in the model's buffers.
3. The training pairs are cut into ``segments`` contiguous pieces, stacked as the batch
   [segments, L, F]. Each epoch walks along them in windows of ``bptt`` steps; the state leaving
   one window enters the next *detached*, so the network sees the whole history but gradients
   stop at the window edge. Each epoch drops a random number (< bptt) of the oldest steps, so
   the windows do not always cut the series at the same points.
4. Validation after every epoch runs the model over the whole series from a zero state, i.e.
   the validation part continues from the state reached at the end of the training data, as a
   stream would. The loss (MSE in the model's normalised target units) drives early stopping
   and a halving learning rate; the best epoch's weights are kept.
5. The chosen model's validation residuals give its prediction intervals
   (``metrics["calibration"]``, :func:`rnnstream.train.quality.calibration`): split-conformal
   half-widths per target at each coverage the runtime may be asked for, per step ahead for
   forecasts fed back, and the coverage the runtime's online intervals reached on the
   validation range when started from the training range's residuals.

Defaults that fit the series (:func:`fit_defaults`): ``bptt``, ``segments``, ``epochs`` and
``patience`` left at None are derived from the number of training pairs, so that a 150-point
monthly series gets short windows and many epochs (hundreds of updates, not a handful) and a
4,000-point one longer windows and more parallel segments. ``metrics["defaults"]`` records them.

Modes: ``target_mode`` "level" predicts the target, "delta" its change from the last observed
value, "seasonal" its change from the value one season before the predicted time (the last two
only when every target is also a feature; "seasonal" only with a season, given or detected).
``input_mode`` "level" feeds the features, "delta" their changes since the previous point (the
graph carries the previous point in its state, see :mod:`rnnstream.runtime.spec`). "auto"
(default for both) trains every sensible pair -- level/level, level/delta, delta/delta, and with
a season level/seasonal and delta/seasonal (inputs/targets) -- and keeps the one with the lowest
validation MSE measured in the same units for all (each target's raw error divided by its
training std), recording every candidate's figure and the reason in the metrics.

Do no harm: a delta or seasonal model's predicted change is scaled by a factor fitted on the
validation pairs (:func:`_shrink_toward_reference`), 0 where the network's correction is no
significant gain; a factor 0 makes the model exactly persistence (delta) or exactly seasonal
naive (seasonal). So with a season, some candidate is never worse than either baseline on
validation, and the choice by validation MSE ships the model only where it beats them.
``metrics["baseline"]`` says which of model, persistence and seasonal naive validated best, and
the reason names a baseline that won.

Seasons (:func:`_seasons`): the season given, or the one detected on the training part (it must
repeat 4 times) and a longer one containing it where the data shows one (a week of hours beside
the day). Simpler first: seasonal naive takes the longer season, and each target's ETS a season
or a longer one, only where validation agrees (:func:`_simplest_significant`); among networks
that beat the baselines, a free one ships over the network on the ETS only where it beats it
significantly (:func:`_prefer_anchored`). ``metrics["seasons_found"]`` lists the seasons,
``metrics["season"]`` the one seasonal naive uses.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from rnnstream.runtime import spec

from .data import Series, Split, fit_mean_std, make_split
from .errors import ConfigError, DataError
from .ets import EtsFit, ets_forecasts, ets_matrices, fit_ets
from .model import Forecaster, ForecasterConfig, StateTensors
from .modes import TORCH_INPUT_MODES, carry_point
from .quality import (
    calibration,
    detect_season,
    long_season,
    multi_step_errors,
    multi_step_forecasts,
    score_targets,
    seasonal_naive,
)

__all__ = ["EpochReport", "TrainConfig", "TrainResult", "Validation", "fit_defaults", "train",
           "train_epoch"]

# a seasonal candidate needs this many seasons in the training part (its first season falls
# back to persistence, and the network needs some to learn from)
MIN_SEASONS = 2
# fit_defaults: aim for about this many optimiser updates, within these epoch bounds
TARGET_UPDATES = 1500
MIN_EPOCHS, MAX_EPOCHS = 20, 400
SAMPLE_ROWS = 1000  # TrainResult.sample
SIGNIFICANT_T = 1.645  # one-sided 5 % (normal approximation), see _shrink_toward_reference
# one-sided 1 %: how clearly a network must beat the best simple forecaster to ship (_choose);
# stricter than the shrinkage's test because the choice is made among several candidates
CHOICE_T = 2.326


@dataclass
class TrainConfig:
    """Everything about how to train (the model's shape lives in ``ForecasterConfig``).

    ``epochs``, ``segments``, ``bptt``, ``patience`` and ``lr_patience`` left at None fit the
    length of the series (:func:`fit_defaults`).
    """

    epochs: int | None = None  # upper bound; early stopping usually ends sooner
    lr: float = 1e-2  # Adam
    segments: int | None = None  # parallel contiguous pieces of the training series (the batch)
    bptt: int | None = None  # time steps per truncated-BPTT window
    clip: float = 1.0  # max gradient norm
    patience: int | None = None  # epochs without a better validation loss before stopping
    lr_patience: int | None = None  # epochs without improvement before the learning rate halves
    seed: int = 0
    device: str = "cpu"  # "cpu" | "cuda" | "cuda:N"
    val_fraction: float = 0.2  # the last part of the series, by time
    target_mode: str = "auto"  # "auto" | "level" | "delta" | "seasonal" | "ets"
    input_mode: str = "auto"  # "auto" | "level" | "delta"
    # Steps ahead to predict; None keeps ForecasterConfig.horizon (default 1).
    horizon: int | None = None
    season: int | None = None  # None: detect it; 0: no season; N: the season is N steps
    forecast_steps: int | None = None  # horizons of the multi-step report (None: fit the data)
    progress: bool = True  # tqdm bar per run (shown only on a terminal)
    # A network ships only when the validation has at least this many pairs (and it beats the
    # best of persistence, seasonal naive and ETS significantly there); with fewer, the best of
    # those ships. Measured on bench/quality.py: networks that beat ETS significantly on 18-50
    # validation pairs lost to it on the held-out part of 4 of 7 short series. 0: no minimum.
    network_min_val: int = 100
    # torch CPU threads while training (restored after); None keeps torch's setting. Small
    # recurrent models run fastest on one: the step-by-step recurrence leaves little to split,
    # and extra threads spin-wait on each other, which gets many times slower on a busy machine.
    threads: int | None = 1

    def __post_init__(self) -> None:
        for name, lo in (("epochs", 1), ("segments", 1), ("bptt", 1), ("patience", 1),
                         ("lr_patience", 1), ("forecast_steps", 0), ("season", 0),
                         ("network_min_val", 0)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < lo):
                raise ConfigError(f"TrainConfig.{name}={value!r}: expected None or an integer "
                                  f">= {lo}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"TrainConfig.threads={self.threads!r}: expected None or an "
                              "integer >= 1")
        if self.horizon is not None and (not isinstance(self.horizon, int) or self.horizon < 1):
            raise ConfigError(f"TrainConfig.horizon={self.horizon!r}: expected an integer >= 1")
        if not (self.lr > 0 and self.clip > 0):
            raise ConfigError(f"TrainConfig lr={self.lr!r}, clip={self.clip!r}: both must be > 0")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"TrainConfig.val_fraction={self.val_fraction!r}: expected 0 < "
                              "val_fraction < 1 (e.g. 0.2 validates on the last 20%)")
        for name, table in (("target_mode", spec.TARGET_MODE_SPECS),
                            ("input_mode", spec.INPUT_MODE_SPECS)):
            allowed = ("auto", *table)  # the spec's modes (rnnstream.runtime.spec)
            if getattr(self, name) not in allowed:
                raise ConfigError(f"TrainConfig.{name}={getattr(self, name)!r}: expected one "
                                  f"of {allowed}")
        if self.input_mode != "auto" and self.target_mode != "auto" \
                and not _pair_ok(self.input_mode, self.target_mode):
            raise ConfigError(f"TrainConfig input_mode={self.input_mode!r} with target_mode="
                              f"{self.target_mode!r}: a network fed only changes cannot know the "
                              "level it must predict; use a target mode that predicts a change "
                              "('delta', 'seasonal', 'ets') or 'auto'")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def fit_defaults(config: TrainConfig, n_train: int, season: int | None = None) -> TrainConfig:
    """``config`` with every None among bptt/segments/epochs/patience/lr_patience derived from
    the number of training pairs and the season (a window spans two seasons where the data
    allows, so that gradients reach a whole cycle); given values are kept."""
    bptt = config.bptt or int(np.clip(max(n_train // 12, 2 * (season or 0)), 8, 64))
    bptt = min(bptt, n_train)
    segments = config.segments or int(np.clip(n_train // (3 * bptt), 1, 32))
    segments = max(1, min(segments, n_train // bptt))
    windows = max(1, math.ceil(n_train // segments / bptt))  # updates per epoch
    epochs = config.epochs or int(np.clip(math.ceil(TARGET_UPDATES / windows), MIN_EPOCHS,
                                          MAX_EPOCHS))
    patience = config.patience or int(np.clip(epochs // 5, 10, 60))
    lr_patience = config.lr_patience or max(3, patience // 3)
    return replace(config, bptt=bptt, segments=segments, epochs=epochs, patience=patience,
                   lr_patience=lr_patience)


@dataclass(frozen=True)
class EpochReport:
    """What a callback sees after each epoch."""

    mode: str  # target mode of this run
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    val_loss: float
    best_val_loss: float
    lr: float


Callback = Callable[[EpochReport], None]


@dataclass(frozen=True)
class Validation:
    """Raw-unit validation traces [n_val, targets]; row i is time ``start + i``.

    ``half_width``: the half-width of the interval the runtime would have issued with each
    prediction at coverage 0.9 (``metrics["calibration"]["validation"]`` has the figures; inf
    where it had none yet), or None.
    """

    start: int
    actual: np.ndarray
    predicted: np.ndarray
    persistence: np.ndarray
    half_width: np.ndarray | None = None


@dataclass
class TrainResult:
    model: Forecaster
    metrics: dict
    history: dict[str, list]
    train_config: TrainConfig
    validation: Validation
    candidates: dict[str, dict] = field(default_factory=dict)
    # the latest raw training inputs [time, F] (at most SAMPLE_ROWS): what the exporter proves
    # parity on, so that `rnnstream export` exercises the model as it will be used
    sample: np.ndarray | None = None


@dataclass
class _Run:
    model: Forecaster
    history: dict[str, list]
    best_epoch: int
    best_val_loss: float
    shrink: list[float] | None = None


# -- public entry point ---------------------------------------------------------------------
def train(
    series: Series,
    model_config: ForecasterConfig | None = None,
    config: TrainConfig | None = None,
    *,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train a forecaster on ``series``; returns the best model, its metrics and history.

    ``model_config`` gives the architecture (cell, hidden, layers, dropout); its data fields
    (n_features, n_targets, names, target_index) come from ``series`` and its
    ``target_mode``/``input_mode``/``horizon`` from ``config``. A data field the caller set
    that disagrees with the series raises ``ConfigError`` (the config given is never changed).
    Data problems raise ``DataError`` before any training starts.

    While it runs, torch's thread count (``config.threads``) and deterministic-algorithms flags
    are set process-wide, and restored when it returns; the caller's random generators are never
    touched (training seeds a forked generator). Do not run torch work in other threads of the
    same process meanwhile if it depends on those settings.
    """
    config = config or TrainConfig()
    template = _resolve_model_config(series, model_config or ForecasterConfig(), config)
    min_train = config.bptt or 8
    split = make_split(series, template.horizon, config.val_fraction, min_train=min_train)
    found = _seasons(config, split)
    season = found[_simplest_significant(split, [seasonal_naive(split, s) for s in found])] \
        if found else None
    config = fit_defaults(config, split.n_train, season)
    device = _device(config.device)
    candidates = _candidate_modes(config, series, season, split)
    # too short a validation to let a network ship (see _choose): build the simple forecasters
    # only (each mode's reference with the correction off), and train no network
    simple = list({t: (i, t) for i, t in reversed(candidates) if t != "level"}.values())[::-1]
    simple_only = (split.n_val < config.network_min_val and config.target_mode == "auto"
                   and bool(simple))
    if simple_only:  # one candidate per simple forecaster (the first input mode asked)
        candidates = simple
    started = time.perf_counter()
    ets = _fit_ets(split, found) if any(t == "ets" for _, t in candidates) else []
    seasons = {"seasonal": season or 0, "ets": max((f.season for f in ets), default=0)}
    runs = {}
    for input_mode, target_mode in candidates:
        key = _mode_key(input_mode, target_mode)
        with _threads(config.threads), _seeded(config.seed, device):
            mcfg = replace(template, target_mode=target_mode, input_mode=input_mode,
                           season=seasons.get(target_mode, 0))
            if simple_only:
                runs[key] = _Run(_normalized_model(split, mcfg, ets).to(device),
                                 {"epoch": [], "train_loss": [], "val_loss": [], "lr": []},
                                 0, math.nan)
                _as_baseline(runs[key])
                continue
            runs[key] = _fit(split, mcfg, config, device, callbacks, ets)
            runs[key].shrink = _shrink_toward_reference(runs[key].model, split, device)
    seconds = time.perf_counter() - started
    # evaluation runs one step per call (multi-step forecasts): on torch's default thread count
    # each tiny step spin-waits on the other threads, many times slower on a busy machine
    with _threads(config.threads):
        scored = {key: _evaluate(run.model, split, device, season) for key, run in runs.items()}
    references = _references(runs, split)  # the simple forecasters' predictions, once
    chosen, guarded, to_baseline = _choose(scored, split, season, references,
                                           config.network_min_val)
    run = runs[chosen]
    summaries = {k: _candidate_summary(scored[k][0], runs[k]) for k in runs}  # as trained
    if to_baseline:
        _as_baseline(run)
        with _threads(config.threads):
            scored[chosen] = _evaluate(run.model, split, device, season)
    metrics, validation, pred = scored[chosen]
    steps = config.forecast_steps
    if steps is None:
        steps = int(np.clip(2 * (season or 6), 2, 48))
    steps = min(steps, max(1, split.n_val - 1))
    with _threads(config.threads):
        forecasts = multi_step_forecasts(run.model, split, steps) if steps else None
    # Intervals start from the validation residuals alone. Tried: a simple forecaster's
    # residuals over training and validation when no network was trained -- on
    # bench/quality.py 16 of 25 series within two binomial SEs of the asked coverage, against
    # 17 from the validation alone (unemp and woolyrnq gained; lynx, stocks_ibm and
    # sunspots_yearly lost), so it was not kept.
    calibrated, band = calibration(pred, split, run.model.config.target_names,
                                    run.model.config.feature_names, forecasts)
    validation = replace(validation, half_width=band)
    ets_mse = None
    if references:
        _, level_std = fit_mean_std(split.y[:split.n_train])
        ets_mse = _mse((references["ETS"][0] - split.y[split.n_train:]) / level_std)
    baseline = _baseline_verdict(metrics, run, ets_mse)
    metrics.update(
        target_mode=run.model.config.target_mode,
        input_mode=run.model.config.input_mode,
        target_mode_reason=_mode_reason(config, chosen, summaries, series)
        + (f"; {guarded}" if guarded else "")
        + ("" if to_baseline else f"; {baseline['reason']}"),
        baseline=baseline,
        ets={name: fit.to_dict() for name, fit in zip(series.target_names, ets, strict=True)}
        if ets else None,
        best_epoch=run.best_epoch,
        epochs_run=len(run.history["epoch"]),
        train_seconds=round(seconds, 3),
        n_train=split.n_train,
        n_val=split.n_val,
        horizon=split.horizon,
        season=season,
        seasons_found=found,
        device=str(device),
        candidates=summaries,
        defaults={k: getattr(config, k) for k in ("bptt", "segments", "epochs", "patience")},
        multi_step=multi_step_errors(run.model, split, steps, season, forecasts=forecasts)
        if forecasts else None,
        calibration=calibrated,
    )
    if to_baseline and run.model.config.target_mode == "ets":
        metrics["ets_refit"] = _refit_ets(run.model, split, ets, series.target_names)
    run.model.cpu().eval()
    sample = split.x[max(0, split.n_train - SAMPLE_ROWS):split.n_train].astype(np.float32)
    return TrainResult(run.model, metrics, run.history, config, validation, summaries, sample)


def _mode_key(input_mode: str, target_mode: str) -> str:
    """The name of a candidate in the metrics: ``inputs/targets``, e.g. ``delta/delta``."""
    return f"{input_mode}/{target_mode}"


def _resolve_model_config(series: Series, base: ForecasterConfig,
                          config: TrainConfig) -> ForecasterConfig:
    horizon = base.horizon if config.horizon is None else config.horizon
    if config.horizon is not None and base.horizon not in (1, config.horizon):
        raise ConfigError(f"horizon given twice and different: ForecasterConfig.horizon="
                          f"{base.horizon}, TrainConfig.horizon={config.horizon}; set one")
    data = {
        "n_features": series.features.shape[1],
        "n_targets": series.targets.shape[1],
        "feature_names": list(series.feature_names),
        "target_names": list(series.target_names),
        "target_index": list(series.target_index or []),
    }
    default = ForecasterConfig(n_features=base.n_features, n_targets=base.n_targets)
    for name, value in data.items():
        given = getattr(base, name)
        untouched = given == getattr(default, name) and name not in ("n_features", "n_targets")
        if given != value and not untouched and not (name in ("n_features", "n_targets")
                                                     and given == 1):
            raise ConfigError(
                f"ForecasterConfig.{name}={given!r} but the series has {value!r}; these fields "
                "are taken from the data: leave them unset, or pass matching values")
    for name in ("target_mode", "input_mode"):
        given, wanted = getattr(base, name), getattr(config, name)
        if given != "level" and wanted not in ("auto", given):
            raise ConfigError(f"ForecasterConfig.{name}={given!r} but TrainConfig.{name}="
                              f"{wanted!r}; set the mode in TrainConfig only")
    return replace(base, **data, target_mode="level", input_mode="level", horizon=horizon)


def _pair_ok(input_mode: str, target_mode: str) -> bool:
    """Whether a network in ``input_mode`` can learn ``target_mode``: one fed only changes
    (``needs_reference``) cannot know a level, so its target mode must predict a change."""
    return not spec.INPUT_MODE_SPECS[input_mode].needs_reference \
        or spec.TARGET_MODE_SPECS[target_mode].reference


def _candidate_modes(config: TrainConfig, series: Series, season: int | None,
                     split: Split) -> list[tuple[str, str]]:
    """(input_mode, target_mode) pairs to train; DataError when a requested one is impossible.

    "auto" targets include "seasonal" when the season is at least the horizon and the training
    part holds :data:`MIN_SEASONS` seasons (shorter, the model would mostly fall back to
    persistence)."""
    can_delta = series.target_index is not None
    # a target mode with a reference, or an input mode that needs one, reads the observed
    # targets: each target must be a feature (the mode registry's facts, rnnstream.runtime.spec)
    wants_delta = (config.target_mode != "auto"
                   and spec.TARGET_MODE_SPECS[config.target_mode].reference) or (
        config.input_mode != "auto" and spec.INPUT_MODE_SPECS[config.input_mode].needs_reference)
    if wants_delta and not can_delta:
        raise DataError(f"{series.source}: input mode {config.input_mode!r} with target mode "
                        f"{config.target_mode!r} needs every target to be a feature too (delta "
                        "modes, 'seasonal' and 'ets' read the observed targets; targets "
                        f"{series.target_names}, features {series.feature_names}); add them to "
                        "the features or use 'level'")
    seasonal_ok = bool(season and season >= split.horizon
                       and split.n_train >= MIN_SEASONS * season)
    auto_targets = ["level", "delta", *(["seasonal"] if seasonal_ok else []), "ets"]
    if config.target_mode == "seasonal" and not seasonal_ok:
        raise DataError(f"{series.source}: target_mode 'seasonal' needs a season (given with "
                        f"season=N, or detected; got {season}) of at least the horizon "
                        f"{split.horizon} and {MIN_SEASONS} seasons in the {split.n_train} "
                        "training pairs")
    targets = auto_targets if config.target_mode == "auto" else [config.target_mode]
    inputs = ["level", "delta"] if config.input_mode == "auto" else [config.input_mode]
    if not can_delta:
        targets, inputs = ["level"], ["level"]
    pairs = [(i, t) for t in targets for i in inputs if _pair_ok(i, t)]
    if config.input_mode == "auto" and ("delta", "ets") in pairs:
        pairs.remove(("delta", "ets"))  # one network corrects the ETS (fed levels), saving time
    return pairs


def _seasons(config: TrainConfig, split: Split) -> list[int]:
    """The season given (0: none), or the one detected on the first target's training part and
    a longer one containing it where there is one (:func:`~rnnstream.train.quality.long_season`:
    a week of hours beside the day); shortest first."""
    if config.season is not None:
        return [config.season] if config.season else []
    values = split.y[: split.n_train, 0]
    season = detect_season(values)
    longer = long_season(values, season)
    return [s for s in (season, longer) if s]


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device={name!r} is not a torch device ({exc}); use 'cpu' or "
                          "'cuda'") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but torch sees no CUDA GPU (torch "
                          f"{torch.__version__}); use device='cpu' or install a CUDA build")
    return device


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch inside a forked RNG and ask for deterministic kernels; restore it all after.

    The caller's global generators are untouched: ``torch.random.fork_rng`` restores torch's
    (and CUDA's) generator state on exit, and numpy's global generator is never used (the
    training loop draws from its own ``np.random.default_rng(seed)``).
    """
    devices = [device] if device.type == "cuda" else []
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_cudnn = torch.backends.cudnn.deterministic
    # On CUDA, deterministic cuBLAS needs CUBLAS_WORKSPACE_CONFIG set before the first matmul,
    # otherwise torch raises; without it we settle for deterministic cuDNN.
    # https://docs.nvidia.com/cuda/cublas/index.html#results-reproducibility
    strict = device.type == "cpu" or "CUBLAS_WORKSPACE_CONFIG" in os.environ
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(strict)
        torch.backends.cudnn.deterministic = True
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous, warn_only=previous_warn)
            torch.backends.cudnn.deterministic = previous_cudnn


# -- one run --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Schedule:
    """The fitted (never None) window, batch and stopping settings of one run."""

    epochs: int
    segments: int
    bptt: int
    patience: int
    lr_patience: int

    @classmethod
    def of(cls, config: TrainConfig) -> _Schedule:
        values = {f: getattr(config, f) for f in cls.__dataclass_fields__}
        missing = [f for f, v in values.items() if v is None]
        if missing:  # a developer's mistake: train() always fits the defaults first
            raise ConfigError(f"TrainConfig {missing} unset; call fit_defaults() first")
        return cls(**values)


def _fit(split: Split, mcfg: ForecasterConfig, config: TrainConfig, device: torch.device,
         callbacks: Sequence[Callback], ets: Sequence[EtsFit] = ()) -> _Run:
    plan = _Schedule.of(config)
    model = _normalized_model(split, mcfg, ets).to(device)
    x_all = torch.as_tensor(split.x, dtype=torch.float32, device=device)[None]  # [1, n, F]
    y_all = torch.as_tensor(split.y, dtype=torch.float32, device=device)[None]  # [1, n, T]
    u_all = model.target_to_normalized(x_all, y_all)  # what forward_normalized should give
    rng = np.random.default_rng(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=plan.lr_patience)
    history: dict[str, list] = {"epoch": [], "train_loss": [], "val_loss": [], "lr": []}
    best = (0, float("inf"), _copy_state(model))
    mode = _mode_key(mcfg.input_mode, mcfg.target_mode)
    with _progress(mode, config) as bar:
        for epoch in range(1, plan.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            drop = int(rng.integers(0, plan.bptt)) if epoch > 1 else 0
            xs, us, first = _segments(x_all[0, : split.n_train], u_all[0, : split.n_train],
                                      plan.segments, plan.bptt, drop)
            train_loss = train_epoch(model, optimizer, xs, us, plan.bptt, config.clip, first)
            val_loss = _val_loss(model, x_all, u_all, split.n_train)
            scheduler.step(val_loss)
            if val_loss < best[1]:
                best = (epoch, val_loss, _copy_state(model))
            for key, value in zip(history, (epoch, train_loss, val_loss, lr), strict=True):
                history[key].append(value)
            report = EpochReport(mode, epoch, plan.epochs, train_loss, val_loss, best[1], lr)
            for callback in (bar, *callbacks):
                callback(report)
            if epoch - best[0] >= plan.patience:
                break
    model.load_state_dict(best[2])
    return _Run(model, history, best[0], best[1])


@torch.no_grad()
def _shrink_toward_reference(model: Forecaster, split: Split,
                             device: torch.device) -> list[float] | None:
    """Scale each predicted change by the factor in [0, 1] that fits the validation data best.

    A delta-target model predicts ``y = last + change``, a seasonal one ``y = one season back +
    change`` (:meth:`Forecaster.reference`). On a series close to a random walk (or a stable
    season) the network's changes are mostly noise, and ``reference + a * change`` with ``a`` <
    1 (the least squares factor on the validation pairs, clipped to [0, 1]) is closer to the
    truth; on a series with real structure ``a`` comes out near 1 and changes nothing. The
    factor is folded into the model (head weights, bias and target mean), so the exported graph
    is unchanged in form; 0 makes it exactly persistence, or exactly seasonal naive. Returns the
    factors, or None for level-target models.
    """
    cfg = model.config
    if not spec.TARGET_MODE_SPECS[cfg.target_mode].reference:
        return None
    model.eval()
    n = split.n_train
    x_all = torch.as_tensor(split.x, dtype=torch.float32, device=device)[None]
    y_pred, _ = model(x_all)
    reference = model.reference(x_all)
    if reference is None:  # pragma: no cover - every mode with a reference gives one
        return None
    ref = reference[0, n:].double().cpu().numpy()
    change = y_pred[0, n:].double().cpu().numpy() - ref
    truth = split.y[n:] - ref
    denom = np.sum(change * change, axis=0)
    factor = np.where(denom > 0, np.sum(change * truth, axis=0) / np.where(denom > 0, denom, 1),
                      1.0)
    factor = np.clip(factor, 0.0, 1.0)
    # No evidence that the network beats persistence on the validation pairs (one-sided test
    # of the mean squared-error difference, 5 %): predict no change rather than noise.
    for j in range(factor.size):
        gain = truth[:, j] ** 2 - (truth[:, j] - factor[j] * change[:, j]) ** 2
        se = gain.std(ddof=1) / np.sqrt(gain.size) if gain.size > 1 else 0.0
        if not (se > 0 and gain.mean() / se > SIGNIFICANT_T):
            factor[j] = 0.0
    head: torch.nn.Linear = model.out_layer
    a = torch.as_tensor(factor, dtype=head.weight.dtype, device=head.weight.device)
    head.weight.mul_(a[:, None])
    head.bias.mul_(a)
    model.get_buffer("y_mean").mul_(a)
    return [float(f) for f in factor]


@torch.no_grad()
def _as_baseline(run: _Run) -> None:
    """Turn a delta or seasonal model's correction off: it then predicts exactly its reference
    (persistence, or seasonal naive), the same fold as a shrinkage factor of 0."""
    head = run.model.out_layer
    head.weight.zero_()
    head.bias.zero_()
    run.model.get_buffer("y_mean").zero_()
    run.shrink = [0.0] * run.model.config.n_targets


def _normalized_model(split: Split, mcfg: ForecasterConfig,
                      ets: Sequence[EtsFit] = ()) -> Forecaster:
    """A fresh model whose buffers hold mean/std fitted on the training pairs only (and for
    target_mode "ets" the recurrence of each target's ETS in ``ets``)."""
    n = split.n_train
    level_mean, level_std = fit_mean_std(split.x[:n])
    seen = split.x[:n]
    to_seen = TORCH_INPUT_MODES[mcfg.input_mode].seen
    if to_seen is not None:  # what the network sees (delta: changes, the first one 0)
        seen = to_seen(seen)
    x_mean, x_std = fit_mean_std(seen)
    model = Forecaster(mcfg)
    if mcfg.target_mode == "ets":
        model.set_ets([ets_matrices(fit, mcfg.season, mcfg.horizon) for fit in ets])
    y = split.y[:n]
    with torch.no_grad():
        reference = model.reference(torch.as_tensor(split.x[:n], dtype=torch.float32)[None])
    if reference is not None:  # the change from the last value, or from one season back
        y = y - reference[0].double().numpy()
    y_mean, y_std = fit_mean_std(y)
    model.set_normalization(x_mean, x_std, y_mean, y_std, level_mean, level_std)
    return model


def _segments(x: Tensor, u: Tensor, segments: int, bptt: int,
              drop: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """[n, C] -> [S, L, C]: S contiguous pieces of the latest S*L steps (after dropping
    ``drop`` of the oldest), L >= one window; plus the point before each piece [S, F] (the
    piece's own first point when it starts the series), which delta inputs difference from.
    """
    n = x.shape[0] - drop
    segments = max(1, min(segments, n // bptt))
    length = n // segments
    start = x.shape[0] - segments * length  # drop the oldest steps, keep the newest
    starts = start + length * torch.arange(segments, device=x.device)
    before = x[(starts - 1).clamp(min=0)]
    return (x[start:].reshape(segments, length, -1), u[start:].reshape(segments, length, -1),
            before)


def train_epoch(model: Forecaster, optimizer: torch.optim.Optimizer, xs: Tensor, us: Tensor,
                bptt: int, clip: float, before: Tensor | None = None) -> float:
    """One truncated-BPTT pass over [S, L, F] inputs and [S, L, T] normalised targets.

    ``before`` [S, F] is the point preceding each segment, the previous point of its first
    change when the model is fed changes. Returns the mean training loss over the windows
    (weighted by window length).
    """
    model.train()
    state: StateTensors = model.initial_state(xs.shape[0], xs.device)
    if before is not None:
        state = carry_point(model, state, before)
    total, steps = 0.0, 0
    for start in range(0, xs.shape[1], bptt):
        # Detach: the values carry on into the next window, the gradient path stops here.
        state = tuple(s.detach() for s in state)
        pred, state = model.forward_normalized(xs[:, start:start + bptt], state)
        loss = F.mse_loss(pred, us[:, start:start + bptt])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        total += loss.item() * pred.shape[1]
        steps += pred.shape[1]
    return total / steps


@torch.no_grad()
def _val_loss(model: Forecaster, x_all: Tensor, u_all: Tensor, n_train: int) -> float:
    model.eval()
    u_pred, _ = model.forward_normalized(x_all)
    return F.mse_loss(u_pred[:, n_train:], u_all[:, n_train:]).item()


def _copy_state(model: Forecaster) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@contextmanager
def _progress(mode: str, config: TrainConfig) -> Iterator[Callback]:
    from tqdm.auto import tqdm

    # disable=None: tqdm shows the bar only when stderr is a terminal.
    bar = tqdm(total=config.epochs, desc=f"train ({mode})", unit="epoch", leave=False,
               disable=None if config.progress else True)

    def update(report: EpochReport) -> None:
        bar.set_postfix(train=f"{report.train_loss:.2e}", val=f"{report.val_loss:.2e}",
                        best=f"{report.best_val_loss:.2e}", refresh=False)
        bar.update(1)

    try:
        yield update
    finally:
        bar.close()


# -- metrics --------------------------------------------------------------------------------
@torch.no_grad()
def _evaluate(model: Forecaster, split: Split, device: torch.device,
              season: int | None) -> tuple[dict, Validation, np.ndarray]:
    """Validation metrics per target and pooled unit-free, for the model and the baselines;
    the validation traces; the raw predictions of every pair [n_pairs, T]."""
    model.eval()
    x_all = torch.as_tensor(split.x, dtype=torch.float32, device=device)[None]
    y_all = torch.as_tensor(split.y, dtype=torch.float32, device=device)[None]
    y_pred, _ = model(x_all)
    u_pred, _ = model.forward_normalized(x_all)
    n = split.n_train
    val_loss = F.mse_loss(u_pred[:, n:], model.target_to_normalized(x_all, y_all)[:, n:]).item()
    pred_all = y_pred[0].double().cpu().numpy()
    pred = pred_all[n:]
    actual, last = split.y[n:], split.last[n:]
    _, level_std = fit_mean_std(split.y[:n])  # one scale for every mode and baseline
    scores = score_targets(pred, split, model.config.target_names, season)
    metrics: dict[str, Any] = {
        # pooled raw figures: meaningful for one target (or targets of one unit) only; the
        # per-target table and the *_norm figures are what reports use
        "val_mse": _mse(pred - actual),
        "val_mae": float(np.mean(np.abs(pred - actual))),
        "persistence_val_mse": _mse(last - actual),
        "persistence_val_mae": float(np.mean(np.abs(last - actual))),
        "val_mse_norm": _mse((pred - actual) / level_std),
        "persistence_val_mse_norm": _mse((last - actual) / level_std),
        "val_loss": val_loss,
        "per_target": {s.name: s.to_dict() for s in scores},
    }
    seasonal = [s.seasonal_mse / s.std ** 2 for s in scores if s.seasonal_mse is not None]
    metrics["seasonal_naive_val_mse_norm"] = (float(np.mean(seasonal))
                                              if len(seasonal) == len(scores) else None)
    metrics["beats_persistence"] = metrics["val_mse_norm"] < metrics["persistence_val_mse_norm"]
    return metrics, Validation(split.horizon + n, actual, pred, last), pred_all


def _mse(error: np.ndarray) -> float:
    return float(np.mean(np.square(error)))


def _candidate_summary(metrics: dict, run: _Run) -> dict:
    return {"val_mse_norm": metrics["val_mse_norm"], "val_mse": metrics["val_mse"],
            "best_epoch": run.best_epoch, "epochs_run": len(run.history["epoch"]),
            "shrink": run.shrink}


def _fit_ets(split: Split, seasons: Sequence[int]) -> list[EtsFit]:
    """Each target's ETS (:func:`rnnstream.train.ets.fit_ets`), fitted on its values at the
    times the training pairs span (0 .. n_train - 1 + horizon): the form by AIC without a
    season and with each of ``seasons`` (shortest first); a more complex one replaces a simpler
    one where the training part's AIC and the validation pairs agree, or where validation says
    so significantly (:func:`_simplest_significant`). Validation alone (the strict test) kept
    the plain ETS on austres and wineind (14 and 28 validation pairs), which then lost 1.09x
    and 1.43x to statsmodels' seasonal ETS on the held-out part."""
    n, h = split.n_train, split.horizon
    values = np.concatenate([split.last[:n], split.y[n - h:n]])
    series = np.concatenate([split.last, split.y[len(split.y) - h:]])
    fits = []
    for j in range(values.shape[1]):
        options = [fit_ets(values[:, j], None)]
        options += [fit_ets(values[:, j], s) for s in seasons]
        preds = [ets_forecasts(f, series[:, j], h)[:split.x.shape[0], None] for f in options]
        aic = [f.aic for f in options]
        fits.append(options[_simplest_significant(split, preds, [j], aic)])
    return fits


def _simplest_significant(split: Split, preds: Sequence[np.ndarray | None],
                          targets: Sequence[int] | None = None,
                          aic: Sequence[float] | None = None) -> int:
    """Of forecasts ``preds`` of the ``targets`` (default all) for every pair (each
    ``[n_pairs, len(targets)]``, or None), ordered simplest first, the index of the simplest
    that no more complex one beats significantly on the validation pairs (one-sided 1 %,
    Diebold-Mariano on the unit-free squared errors, :func:`_gain_t`): on a short validation a
    more complex forecaster must earn its place. With ``aic`` (each forecaster's on the
    training part), a more complex one with the lower AIC needs only not to lose
    significantly on validation: two independent pieces of evidence that agree."""
    n = split.n_train
    cols = list(range(split.y.shape[1])) if targets is None else list(targets)
    _, std = fit_mean_std(split.y[:n])
    truth = split.y[n:][:, cols]

    def errors(pred: np.ndarray) -> np.ndarray:
        return np.mean(np.square((pred[n:] - truth) / std[cols]), axis=1)

    chosen: tuple[int, np.ndarray] | None = None
    for i, pred in enumerate(preds):
        if pred is None or not np.isfinite(pred[n:]).all():
            continue
        err = errors(pred)
        if chosen is None or _gain_t(chosen[1] - err) > CHOICE_T or (
                aic is not None and aic[i] < aic[chosen[0]]
                and _gain_t(err - chosen[1]) <= CHOICE_T):
            chosen = (i, err)
    return 0 if chosen is None else chosen[0]


def _refit_ets(model: Forecaster, split: Split, fits: Sequence[EtsFit],
               names: Sequence[str]) -> dict:
    """Refit the ETS of a model that ships as its ETS on the whole series (training and
    validation pairs) with the season each target's fit chose, as a statistician fits on
    everything before forecasting; its validation figures stay those of the fit on the
    training part. Returns the new fits for the metrics."""
    h, cfg = split.horizon, model.config
    values = np.concatenate([split.last, split.y[len(split.y) - h:]])
    fits = [fit_ets(values[:, j], fit.season or None) for j, fit in enumerate(fits)]
    model.set_ets([ets_matrices(fit, cfg.season, h) for fit in fits])
    return {name: fit.to_dict() for name, fit in zip(names, fits, strict=True)}


@torch.no_grad()
def _references(runs: dict[str, _Run], split: Split) -> dict[str, tuple[np.ndarray, str]]:
    """Simple forecasters a candidate carries besides persistence and seasonal naive: the ETS
    of an "ets" candidate, its validation predictions and its target mode."""
    for run in runs.values():
        if run.model.config.target_mode == "ets":
            device = run.model.out_layer.weight.device
            x = torch.as_tensor(split.x, dtype=torch.float32, device=device)[None]
            ref = run.model.reference(x)
            if ref is not None:
                return {"ETS": (ref[0, split.n_train:].double().cpu().numpy(), "ets")}
    return {}


def _gain_t(gain: np.ndarray) -> float:
    """The Diebold-Mariano statistic of a loss difference series (positive: the candidate's
    squared errors are lower): its mean over a Newey-West standard error (Bartlett weights, lag
    n^(1/3)), since the errors of two forecasts of one series move together in runs and a plain
    t-test would call a lucky run significant."""
    n = gain.size
    if n < 2:
        return 0.0
    d = gain - gain.mean()
    var = float(d @ d) / n
    for lag in range(1, int(n ** (1 / 3)) + 1):
        var += 2 * (1 - lag / (int(n ** (1 / 3)) + 1)) * float(d[lag:] @ d[:-lag]) / n
    return float(gain.mean() / np.sqrt(var / n)) if var > 0 else 0.0


def _choose(scored: dict[str, tuple[dict, Validation, np.ndarray]], split: Split,
            season: int | None, references: dict[str, tuple[np.ndarray, str]] | None = None,
            min_val: int = 0) -> tuple[str, str | None, bool]:
    """The candidate to ship, why when the baseline guard decided it (else None), and whether
    it must ship as its baseline.

    Do no harm: a candidate ships only when it beats the best baseline on the validation pairs
    (persistence, seasonal naive where there is a season, and the ETS fitted on the training
    part (``references``), whichever validated lower) by a significant margin (one-sided 1 %,
    Diebold-Mariano with a Newey-West variance, :func:`_gain_t`), and the validation has at
    least ``min_val`` pairs (``TrainConfig.network_min_val``); among those, the lowest
    validation MSE. When none does, the candidate that contains that baseline ships with its
    correction off (:func:`_as_baseline`). Models whose targets are not features have no
    baseline candidate: the lowest validation MSE ships, and the verdict says whether a
    baseline beat it.
    """
    best = min(scored, key=lambda k: scored[k][0]["val_mse_norm"])
    n = split.n_train
    _, std = fit_mean_std(split.y[:n])
    truth = split.y[n:]
    baselines = {"persistence": (split.last[n:], "delta")}
    snaive = seasonal_naive(split, season)
    if snaive is not None and np.isfinite(snaive[n:]).all():
        baselines["seasonal naive"] = (snaive[n:], "seasonal")
    baselines.update(references or {})
    home = {name: [k for k in scored if k.endswith("/" + mode)]
            for name, (_, mode) in baselines.items()}
    baselines = {name: b for name, b in baselines.items() if home[name]}
    if not baselines:
        return best, None, False

    def errors(pred: np.ndarray) -> np.ndarray:  # per validation pair, unit-free
        return np.mean(np.square((pred - truth) / std), axis=1)

    name = min(baselines, key=lambda b: float(np.mean(errors(baselines[b][0]))))
    base = errors(baselines[name][0])
    eligible = {}
    for key, (_, _, pred) in scored.items():
        if truth.shape[0] >= min_val and _gain_t(base - errors(pred[n:])) > CHOICE_T:
            eligible[key] = scored[key][0]["val_mse_norm"]
    if not eligible and truth.shape[0] < min_val:
        chosen = min(home[name], key=lambda k: scored[k][0]["val_mse_norm"])
        return chosen, (f"{truth.shape[0]} validation pairs (fewer than {min_val}) cannot "
                        "tell a network's gain from luck, so no network ships (with "
                        "target_mode='auto' none is trained) and "
                        f"{chosen!r} ships with its correction off: exactly {name}, the best "
                        "simple forecaster on validation"), True
    if eligible:
        chosen = _prefer_anchored(eligible, scored, errors, n)
        if chosen == best:
            return best, None, False
        if best in eligible:  # the anchored candidate decided it
            return chosen, (f"{best!r} validated lower but not significantly better than "
                            f"{chosen!r} (the network on the ETS), which ships"), False
        return chosen, (f"{best!r} validated lower but not significantly better than {name}; "
                        f"{chosen!r} is"), False
    chosen = min(home[name], key=lambda k: scored[k][0]["val_mse_norm"])
    return chosen, (f"no candidate beat {name} significantly on the {truth.shape[0]} "
                    f"validation pairs (one-sided 1 %), so {chosen!r} ships with its "
                    f"correction off: exactly {name}"), True


def _prefer_anchored(eligible: dict[str, float],
                     scored: dict[str, tuple[dict, Validation, np.ndarray]],
                     errors: Callable[[np.ndarray], np.ndarray], n: int) -> str:
    """Of the ``eligible`` candidates (validation MSE each), the lowest, unless a candidate
    built on the ETS (target mode "ets": the classical model plus the network's correction)
    is eligible too and the lowest does not beat it significantly (one-sided 1 %): a free
    network must earn its place against the one anchored on the classical model. Measured on
    bench/quality.py's hourly demand: delta/delta validated 0.83x level/ets (322 pairs) and
    then lost 2.5x to the weekly ETS on the held-out weeks."""
    lowest = min(eligible, key=lambda k: eligible[k])
    anchored = [k for k in eligible if k.endswith("/ets")]
    if not anchored or lowest in anchored:
        return lowest
    anchor = min(anchored, key=lambda k: eligible[k])
    gain = errors(scored[anchor][2][n:]) - errors(scored[lowest][2][n:])
    return lowest if _gain_t(gain) > CHOICE_T else anchor


def _baseline_verdict(metrics: dict, run: _Run, ets_mse: float | None = None) -> dict:
    """Which of the model, persistence, seasonal naive and the ETS validated best (unit-free
    MSE), and a sentence saying so, naming a baseline that beats the model or that the model
    now is."""
    figures = {"model": metrics["val_mse_norm"],
               "persistence": metrics["persistence_val_mse_norm"]}
    if metrics.get("seasonal_naive_val_mse_norm") is not None:
        figures["seasonal naive"] = metrics["seasonal_naive_val_mse_norm"]
    if ets_mse is not None:
        figures["ETS"] = ets_mse
    best = min(figures, key=lambda k: figures[k])
    mode = run.model.config.target_mode
    is_baseline = run.shrink is not None and not any(run.shrink)
    if is_baseline:
        same = best = {"delta": "persistence", "seasonal": "seasonal naive"}.get(mode, "ETS")
        reason = (f"the model is exactly {same}: no network beat it significantly on "
                  "validation")
    elif best == "model":
        ratios = ", ".join(f"{figures['model'] / v:.3f}x {k}" for k, v in figures.items()
                           if k != "model" and v > 0)
        reason = f"the model beats every baseline on validation ({ratios})"
    else:
        reason = (f"{best} beats the model on validation (model {figures['model']:.4g}, "
                  f"{best} {figures[best]:.4g}, unit-free MSE): no candidate contained it")
    return {"validation_mse_norm": figures, "best": best, "model_is_baseline": is_baseline,
            "reason": reason}


def _mode_reason(config: TrainConfig, chosen: str, candidates: dict[str, dict],
                 series: Series) -> str:
    if len(candidates) == 1:
        if "auto" not in (config.target_mode, config.input_mode):
            return f"inputs/targets {chosen!r} were requested"
        if series.target_index is not None:  # delta was possible: the request ruled it out
            why = ("auto inputs train one network on the ETS, fed levels"
                   if config.target_mode == "ets" else "delta inputs need delta targets")
            return (f"inputs {config.input_mode!r}, targets {config.target_mode!r} requested: "
                    f"only {chosen!r} fits ({why})")
        return (f"auto: only {chosen!r} (inputs/targets), since targets {series.target_names} "
                "are not all features (delta needs each target's last value as an input)")
    lowest = min(candidates, key=lambda k: candidates[k]["val_mse_norm"])
    others = ", ".join(f"{k} {v['val_mse_norm']:.3g}" for k, v in candidates.items()
                       if k != lowest)
    what = ("built" if all(v["epochs_run"] == 0 for v in candidates.values()) else "trained")
    return (f"auto: {what} {len(candidates)} input/target modes; {lowest!r} validated best "
            f"(normalised val MSE {candidates[lowest]['val_mse_norm']:.3g}; {others})")
