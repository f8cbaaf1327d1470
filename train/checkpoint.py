"""One checkpoint file: weights, config, normalisation, metrics, history and tool versions.

Format (a ``torch.save`` dict holding only tensors, dicts, lists, str, int, float, bool, None)::

    {
      "format": "rnnstream-checkpoint", "format_version": 1,
      "model_config":  ForecasterConfig.to_dict(),
      "state_dict":    {name: tensor},   # weights + normalisation buffers (x_mean, x_std, ...)
      "metrics":       {...},            # see rnnstream.train.loop
      "history":       {"epoch": [...], "train_loss": [...], "val_loss": [...], "lr": [...]},
      "train_config":  TrainConfig.to_dict(),
      "versions":      {"rnnstream": ..., "torch": ..., "numpy": ..., "python": ...},
      "checksum":      sha256 hex of everything above,
    }

Loading uses ``torch.load(weights_only=True)``, which never unpickles arbitrary objects; the
checksum catches flipped bytes inside tensor data that the zip container would not notice.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import platform
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from rnnstream.runtime.atomic import write_file

from .errors import CheckpointError
from .loop import TrainConfig, TrainResult
from .model import Forecaster, ForecasterConfig

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FORMAT = "rnnstream-checkpoint"
CHECKPOINT_VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive since torch 1.6
_KEYS = ("model_config", "state_dict", "metrics", "history", "train_config", "versions")


def save_checkpoint(
    path: str | Path,
    result: TrainResult | Forecaster,
    metrics: dict | None = None,
    history: dict | None = None,
    train_config: TrainConfig | dict | None = None,
) -> Path:
    """Write ``result`` (or a bare model plus optional metrics/history) to ``path``.

    The file is written next to its destination, fsync'ed and renamed into place
    (:mod:`rnnstream.runtime._atomic`): an interrupted save never leaves a half-written
    checkpoint under the final name, and a failed one leaves no temporary file.
    """
    sample = None
    if isinstance(result, TrainResult):
        model, metrics, history = result.model, result.metrics, result.history
        train_config, sample = result.train_config, result.sample
    else:
        model = result
    if isinstance(train_config, TrainConfig):
        train_config = train_config.to_dict()
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_config": _plain(model.config.to_dict()),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metrics": _plain(metrics or {}),
        "history": _plain(history or {}),
        "train_config": _plain(train_config or {}),
        "versions": _plain(_versions()),
    }
    if sample is not None:  # optional: the latest training inputs, for the export's parity proof
        payload["sample"] = torch.as_tensor(np.asarray(sample, np.float32))
    payload["checksum"] = _checksum(payload)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file(path, lambda f: torch.save(payload, f))
    return path


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[Forecaster, dict]:
    """Load a checkpoint -> (model in eval mode, info).

    ``info`` has keys model_config, metrics, history, train_config, versions (plain dicts) and
    path. Anything that is not an intact rnnstream checkpoint raises ``CheckpointError``.
    """
    path = Path(path)
    payload = _read(path, device)
    config = _config(path, payload["model_config"])
    model = Forecaster(config)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: weights do not fit the stored config: {exc}") from exc
    model.to(device).eval()
    info = {key: payload[key] for key in _KEYS if key != "state_dict"}
    info["path"] = str(path)
    sample = payload.get("sample")
    info["sample"] = sample.numpy() if isinstance(sample, torch.Tensor) else None
    return model, info


def _read(path: Path, device: str) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != _ZIP_MAGIC:
        raise CheckpointError(f"{path}: not an rnnstream checkpoint (not a torch.save zip file; "
                              f"starts with {magic!r})")
    try:
        with warnings.catch_warnings():
            # torch only warns about an unexpected pickle protocol; ours always writes the
            # default, so another one means a corrupted file.
            warnings.filterwarnings("error", message="Detected pickle protocol",
                                    category=UserWarning)
            payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses objects it does not know: a foreign or malicious pickle.
        raise CheckpointError(f"{path}: not a safe rnnstream checkpoint (refused to unpickle: "
                              f"{_first_line(exc)})") from exc
    # What torch raises for damaged files varies with where the damage is; all of these were
    # seen when fuzzing saved checkpoints (flipped bytes, truncation, random bytes).
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError, TypeError,
            AttributeError, OverflowError, UserWarning, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint "
                              f"({type(exc).__name__}: {_first_line(exc)})") from exc
    _check_payload(path, payload)
    return payload


def _check_payload(path: Path, payload: object) -> None:
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an rnnstream checkpoint (no format marker "
                              f"{CHECKPOINT_FORMAT!r}); was it written by save_checkpoint?")
    if payload.get("format_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version "
                              f"{payload.get('format_version')!r}, this rnnstream reads "
                              f"{CHECKPOINT_VERSION}; retrain or use a matching rnnstream")
    missing = [k for k in (*_KEYS, "checksum") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: 'state_dict' is not a dict of tensors")
    if payload["checksum"] != _checksum(payload):
        raise CheckpointError(f"{path}: checksum mismatch, the file is corrupted; "
                              "re-copy it or retrain")


def _config(path: Path, data: object) -> ForecasterConfig:
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: 'model_config' is not a dict")
    try:
        return ForecasterConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: invalid model config: {exc}") from exc


def _checksum(payload: dict) -> str:
    """sha256 over the tensors' bytes and the JSON of everything else (key order fixed)."""
    digest = hashlib.sha256()
    for name in sorted(payload["state_dict"]):
        # a fresh dense copy: .contiguous() keeps a size-1 axis's stride, which a damaged file
        # may set to anything, and the byte view below needs stride 1
        tensor = payload["state_dict"][name].detach().cpu().clone(
            memory_format=torch.contiguous_format)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    sample = payload.get("sample")  # optional; files without it keep their checksum
    if isinstance(sample, torch.Tensor):
        digest.update(f"sample:{sample.dtype}:{tuple(sample.shape)}".encode())
        digest.update(sample.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()
                      .tobytes())
    elif sample is not None:
        raise CheckpointError("checkpoint 'sample' is not a tensor")
    rest = {k: payload.get(k) for k in ("format", "format_version", *_KEYS) if k != "state_dict"}
    try:
        digest.update(json.dumps(rest, sort_keys=True, allow_nan=True).encode())
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata is not plain data: {exc}") from exc
    return digest.hexdigest()


def _plain(value: object) -> object:
    """numpy scalars/arrays, tuples, str subclasses -> plain Python that weights_only accepts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        return str(value)  # str subclasses (torch.__version__ is one) would not unpickle safely
    if value is None or isinstance(value, (int, float, bool)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint; use plain data "
                    "(dict, list, str, int, float, bool, None)")


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        own = version("rnnstream")
    except PackageNotFoundError:
        own = "unknown"
    return {"rnnstream": own, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
