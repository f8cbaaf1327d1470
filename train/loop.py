"""Training: truncated BPTT with the detached state carried across windows, early stopping.

How one run goes (``train`` may make two, see "target mode" below):

1. Pairs input t -> target t + horizon; the last ``val_fraction`` of the pairs validate.
2. Mean/std of the features and targets are fitted on the training pairs only and stored in
   the model's buffers.
3. The training pairs are cut into ``segments`` contiguous pieces, stacked as the batch
   [segments, L, F]. Each epoch walks along them in windows of ``bptt`` steps from a zero
   state; the state leaving one window enters the next *detached*, so the network sees the
   whole history but gradients stop at the window edge.
4. Validation after every epoch runs the model over the whole series from a zero state, i.e.
   the validation part continues from the state reached at the end of the training data, as a
   stream would. The loss (MSE in the model's normalised target units) drives early stopping
   and a halving learning rate; the best epoch's weights are kept.

Target mode: ``"level"`` predicts the target, ``"delta"`` its change from the last observed
value (only when every target is also a feature). ``"auto"`` trains both and keeps the one with
the lower validation MSE measured in the same units for both (raw errors divided by the
training std of the target level), recording both numbers and the reason in the metrics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from .data import Series, Split, fit_mean_std, make_split
from .errors import ConfigError, DataError
from .model import Forecaster, ForecasterConfig, State

__all__ = ["EpochReport", "TrainConfig", "TrainResult", "Validation", "train", "train_epoch"]

TARGET_MODES = ("auto", "level", "delta")


@dataclass
class TrainConfig:
    """Everything about how to train (the model's shape lives in ``ForecasterConfig``)."""

    epochs: int = 60  # upper bound; early stopping usually ends sooner
    lr: float = 1e-2  # Adam
    segments: int = 8  # parallel contiguous pieces of the training series (the batch)
    bptt: int = 25  # time steps per truncated-BPTT window
    clip: float = 1.0  # max gradient norm
    patience: int = 10  # epochs without a better validation loss before stopping
    lr_patience: int = 3  # epochs without improvement before the learning rate halves
    seed: int = 0
    device: str = "cpu"  # "cpu" | "cuda" | "cuda:N"
    val_fraction: float = 0.2  # the last part of the series, by time
    target_mode: str = "auto"  # "auto" | "level" | "delta"
    # Steps ahead to predict; None keeps ForecasterConfig.horizon (default 1).
    horizon: int | None = None
    progress: bool = True  # tqdm bar per run (shown only on a terminal)
    # torch CPU threads while training (restored after); None keeps torch's setting. Small
    # recurrent models run fastest on one: the step-by-step recurrence leaves little to split,
    # and extra threads spin-wait on each other, which gets many times slower on a busy machine.
    threads: int | None = 1

    def __post_init__(self) -> None:
        for name, lo in (("epochs", 1), ("segments", 1), ("bptt", 1), ("patience", 1),
                         ("lr_patience", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < lo:
                raise ConfigError(f"TrainConfig.{name}={value!r}: expected an integer >= {lo}")
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
        if self.target_mode not in TARGET_MODES:
            raise ConfigError(f"TrainConfig.target_mode={self.target_mode!r}: expected one of "
                              f"{TARGET_MODES}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


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
    """Raw-unit validation traces [n_val, targets]; row i is time ``start + i``."""

    start: int
    actual: np.ndarray
    predicted: np.ndarray
    persistence: np.ndarray


@dataclass
class TrainResult:
    model: Forecaster
    metrics: dict
    history: dict[str, list]
    train_config: TrainConfig
    validation: Validation
    candidates: dict[str, dict] = field(default_factory=dict)


@dataclass
class _Run:
    model: Forecaster
    history: dict[str, list]
    best_epoch: int
    best_val_loss: float


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
    (n_features, n_targets, names, target_index) are filled from ``series`` and its
    ``target_mode``/``horizon`` from ``config``. Data problems raise ``DataError`` before
    any training starts.
    """
    config = config or TrainConfig()
    template = _resolve_model_config(series, model_config or ForecasterConfig(), config)
    split = make_split(series, template.horizon, config.val_fraction, min_train=config.bptt)
    device = _device(config.device)
    modes = _candidate_modes(config.target_mode, series)
    started = time.perf_counter()
    runs = {}
    for mode in modes:
        with _threads(config.threads), _seeded(config.seed, device):
            mcfg = replace(template, target_mode=mode)
            runs[mode] = _fit(split, mcfg, config, device, callbacks)
    seconds = time.perf_counter() - started
    scored = {mode: _evaluate(run.model, split, device) for mode, run in runs.items()}
    chosen = min(scored, key=lambda m: scored[m][0]["val_mse_norm"])
    metrics, validation = scored[chosen]
    run = runs[chosen]
    candidates = {m: _candidate_summary(scored[m][0], runs[m]) for m in runs}
    metrics.update(
        target_mode=chosen,
        target_mode_reason=_mode_reason(config.target_mode, chosen, candidates, series),
        best_epoch=run.best_epoch,
        epochs_run=len(run.history["epoch"]),
        train_seconds=round(seconds, 3),
        n_train=split.n_train,
        n_val=split.n_val,
        horizon=split.horizon,
        device=str(device),
        candidates=candidates,
    )
    run.model.cpu().eval()
    return TrainResult(run.model, metrics, run.history, config, validation, candidates)


def _resolve_model_config(series: Series, base: ForecasterConfig,
                          config: TrainConfig) -> ForecasterConfig:
    horizon = base.horizon if config.horizon is None else config.horizon
    if config.horizon is not None and base.horizon not in (1, config.horizon):
        raise ConfigError(f"horizon given twice and different: ForecasterConfig.horizon="
                          f"{base.horizon}, TrainConfig.horizon={config.horizon}; set one")
    return replace(
        base,
        n_features=series.features.shape[1],
        n_targets=series.targets.shape[1],
        feature_names=list(series.feature_names),
        target_names=list(series.target_names),
        target_index=list(series.target_index or []),
        target_mode="level",
        horizon=horizon,
    )


def _candidate_modes(target_mode: str, series: Series) -> tuple[str, ...]:
    if target_mode == "delta" and series.target_index is None:
        raise DataError(f"{series.source}: target_mode='delta' needs every target to be a "
                        f"feature too (targets {series.target_names}, features "
                        f"{series.feature_names}); add them to the features or use 'level'")
    if target_mode != "auto":
        return (target_mode,)
    return ("level", "delta") if series.target_index is not None else ("level",)


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
    """Seed torch and numpy and ask for deterministic kernels; restore the global flag after."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    previous = torch.are_deterministic_algorithms_enabled()
    previous_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    # On CUDA, deterministic cuBLAS needs CUBLAS_WORKSPACE_CONFIG set before the first matmul,
    # otherwise torch raises; without it we settle for deterministic cuDNN.
    # https://docs.nvidia.com/cuda/cublas/index.html#results-reproducibility
    strict = device.type == "cpu" or "CUBLAS_WORKSPACE_CONFIG" in os.environ
    torch.use_deterministic_algorithms(strict)
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=previous_warn)


# -- one run --------------------------------------------------------------------------------
def _fit(split: Split, mcfg: ForecasterConfig, config: TrainConfig, device: torch.device,
         callbacks: Sequence[Callback]) -> _Run:
    model = _normalized_model(split, mcfg).to(device)
    x_all = torch.as_tensor(split.x, dtype=torch.float32, device=device)[None]  # [1, n, F]
    y_all = torch.as_tensor(split.y, dtype=torch.float32, device=device)[None]  # [1, n, T]
    u_all = model.target_to_normalized(x_all, y_all)  # what forward_normalized should give
    xs, us = _segments(x_all[0, : split.n_train], u_all[0, : split.n_train],
                       config.segments, config.bptt)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=config.lr_patience)
    history: dict[str, list] = {"epoch": [], "train_loss": [], "val_loss": [], "lr": []}
    best = (0, float("inf"), _copy_state(model))
    with _progress(mcfg.target_mode, config) as bar:
        for epoch in range(1, config.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            train_loss = train_epoch(model, optimizer, xs, us, config.bptt, config.clip)
            val_loss = _val_loss(model, x_all, u_all, split.n_train)
            scheduler.step(val_loss)
            if val_loss < best[1]:
                best = (epoch, val_loss, _copy_state(model))
            for key, value in zip(history, (epoch, train_loss, val_loss, lr), strict=True):
                history[key].append(value)
            report = EpochReport(mcfg.target_mode, epoch, config.epochs, train_loss,
                                 val_loss, best[1], lr)
            for callback in (bar, *callbacks):
                callback(report)
            if epoch - best[0] >= config.patience:
                break
    model.load_state_dict(best[2])
    return _Run(model, history, best[0], best[1])


def _normalized_model(split: Split, mcfg: ForecasterConfig) -> Forecaster:
    """A fresh model whose buffers hold mean/std fitted on the training pairs only."""
    n = split.n_train
    x_mean, x_std = fit_mean_std(split.x[:n])
    y = split.y[:n]
    if mcfg.target_mode == "delta":
        y = y - split.x[:n][:, mcfg.target_index]
    y_mean, y_std = fit_mean_std(y)
    model = Forecaster(mcfg)
    model.set_normalization(x_mean, x_std, y_mean, y_std)
    return model


def _segments(x: Tensor, u: Tensor, segments: int, bptt: int) -> tuple[Tensor, Tensor]:
    """[n, C] -> [S, L, C]: S contiguous pieces of the latest S*L steps, L >= one window."""
    segments = max(1, min(segments, x.shape[0] // bptt))
    length = x.shape[0] // segments
    start = x.shape[0] - segments * length  # drop the oldest steps, keep the newest
    return (x[start:].reshape(segments, length, -1), u[start:].reshape(segments, length, -1))


def train_epoch(model: Forecaster, optimizer: torch.optim.Optimizer, xs: Tensor, us: Tensor,
                bptt: int, clip: float) -> float:
    """One truncated-BPTT pass over [S, L, F] inputs and [S, L, T] normalised targets.

    Returns the mean training loss over the windows (weighted by window length).
    """
    model.train()
    state: State = model.initial_state(xs.shape[0], xs.device)
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
def _evaluate(model: Forecaster, split: Split, device: torch.device) -> tuple[dict, Validation]:
    """Validation metrics in raw and normalised units, for the model and for persistence."""
    model.eval()
    x_all = torch.as_tensor(split.x, dtype=torch.float32, device=device)[None]
    y_all = torch.as_tensor(split.y, dtype=torch.float32, device=device)[None]
    y_pred, _ = model(x_all)
    u_pred, _ = model.forward_normalized(x_all)
    n = split.n_train
    val_loss = F.mse_loss(u_pred[:, n:], model.target_to_normalized(x_all, y_all)[:, n:]).item()
    pred = y_pred[0, n:].double().cpu().numpy()
    actual, last = split.y[n:], split.last[n:]
    _, level_std = fit_mean_std(split.y[:n])  # one scale for both modes and persistence
    metrics = {
        "val_mse": _mse(pred - actual),
        "val_mae": float(np.mean(np.abs(pred - actual))),
        "persistence_val_mse": _mse(last - actual),
        "persistence_val_mae": float(np.mean(np.abs(last - actual))),
        "val_mse_norm": _mse((pred - actual) / level_std),
        "persistence_val_mse_norm": _mse((last - actual) / level_std),
        "val_loss": val_loss,
    }
    metrics["beats_persistence"] = metrics["val_mse"] < metrics["persistence_val_mse"]
    return metrics, Validation(split.horizon + n, actual, pred, last)


def _mse(error: np.ndarray) -> float:
    return float(np.mean(np.square(error)))


def _candidate_summary(metrics: dict, run: _Run) -> dict:
    return {"val_mse_norm": metrics["val_mse_norm"], "val_mse": metrics["val_mse"],
            "best_epoch": run.best_epoch, "epochs_run": len(run.history["epoch"])}


def _mode_reason(requested: str, chosen: str, candidates: dict[str, dict],
                 series: Series) -> str:
    if requested != "auto":
        return f"target_mode={requested!r} was requested"
    if len(candidates) == 1:
        return (f"auto: 'level' only, since targets {series.target_names} are not all "
                "features (delta needs each target's last value as an input)")
    other = "level" if chosen == "delta" else "delta"
    return (f"auto: trained both; {chosen!r} validated better "
            f"(normalised val MSE {candidates[chosen]['val_mse_norm']:.3g} vs "
            f"{candidates[other]['val_mse_norm']:.3g} for {other!r})")
