"""Checkpoint round trip, and every kind of bad file raising CheckpointError."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnstream.train import (
    CheckpointError,
    Forecaster,
    ForecasterConfig,
    TrainResult,
    load_checkpoint,
    save_checkpoint,
    sine_series,
)


@pytest.fixture
def saved(tmp_path: Path, sine_result: TrainResult) -> Path:
    return save_checkpoint(tmp_path / "run" / "model.pt", sine_result)


def test_round_trip_gives_identical_predictions(saved: Path, sine_result: TrainResult) -> None:
    model, info = load_checkpoint(saved)
    x = torch.as_tensor(sine_series().features, dtype=torch.float32)[None]
    with torch.no_grad():
        expected, s1 = sine_result.model(x)
        got, s2 = model(x)
    assert torch.equal(expected, got)
    assert all(torch.equal(a, b) for a, b in zip(s1, s2, strict=True))
    assert model.config == sine_result.model.config
    assert info["metrics"] == sine_result.metrics
    assert info["history"] == sine_result.history
    assert info["train_config"] == sine_result.train_config.to_dict()
    assert set(info["versions"]) == {"rnnstream", "torch", "numpy", "python"}
    assert torch.equal(model.x_std, sine_result.model.x_std)  # normalisation travels too


def test_checkpoint_is_plain_data(saved: Path) -> None:
    payload = torch.load(saved, weights_only=True)
    assert payload["format"] == "rnnstream-checkpoint"
    assert payload["model_config"]["cell"] == "lstm"


def test_bare_model_can_be_saved(tmp_path: Path) -> None:
    model = Forecaster(ForecasterConfig(cell="gru", hidden=4))
    path = save_checkpoint(tmp_path / "m.pt", model)
    loaded, info = load_checkpoint(path)
    assert loaded.config == model.config
    assert info["metrics"] == {}


class Payload:
    """A foreign object: weights_only loading must refuse to build it."""

    def __reduce__(self):
        return (os.getcwd, ())


def _bad_files(good: bytes, tmp_path: Path) -> dict[str, Path]:
    rng = random.Random(0)
    flipped = bytearray(good)
    for pos in rng.sample(range(len(good)), 20):
        flipped[pos] ^= 0xFF
    data = {
        "flipped": bytes(flipped),
        "truncated": good[: len(good) // 2],
        "random": rng.randbytes(4000),
        "empty": b"",
        "raw pickle": pickle.dumps({"format": "rnnstream-checkpoint"}),
    }
    paths = {}
    for name, content in data.items():
        paths[name] = tmp_path / f"{name.replace(' ', '_')}.pt"
        paths[name].write_bytes(content)
    torch.save({"weights": torch.zeros(2), "obj": Payload()}, tmp_path / "object.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    paths["object"], paths["foreign"] = tmp_path / "object.pt", tmp_path / "foreign.pt"
    return paths


@pytest.mark.parametrize("kind", ["flipped", "truncated", "random", "empty", "raw pickle",
                                  "object", "foreign"])
def test_bad_file_raises_checkpoint_error_naming_file(saved: Path, tmp_path: Path,
                                                      kind: str) -> None:
    path = _bad_files(saved.read_bytes(), tmp_path)[kind]
    with pytest.raises(CheckpointError, match=rf"{path.name}: .*"):
        load_checkpoint(path)


def test_object_pickle_is_refused_not_run(tmp_path: Path) -> None:
    torch.save({"obj": Payload()}, tmp_path / "object.pt")
    with pytest.raises(CheckpointError, match="refused to unpickle"):
        load_checkpoint(tmp_path / "object.pt")


def test_flipped_tensor_bytes_fail_the_checksum(saved: Path, tmp_path: Path) -> None:
    # Re-save with one weight changed but the old checksum: what silent corruption looks like.
    payload = torch.load(saved, weights_only=True)
    payload["state_dict"]["head.bias"] += 1.0
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(tmp_path / "tampered.pt")


def test_fuzzed_checkpoints_only_raise_checkpoint_error(saved: Path, tmp_path: Path) -> None:
    """Damage is refused with CheckpointError, or (a flip in bytes the zip container ignores,
    such as its alignment padding) loads exactly the original: never an altered model."""
    good, rng = saved.read_bytes(), random.Random(1)
    model, info = load_checkpoint(saved)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    bad = tmp_path / "fuzz.pt"
    refused = 0
    for i in range(150):
        data = bytearray(good)
        if i % 2:
            data = data[: rng.randrange(len(data))]
        else:
            for _ in range(rng.randrange(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        bad.write_bytes(bytes(data))
        try:
            loaded, loaded_info = load_checkpoint(bad)
        except CheckpointError:
            refused += 1
            continue
        assert {k: v for k, v in loaded_info.items() if k not in ("path", "sample")} == \
            {k: v for k, v in info.items() if k not in ("path", "sample")}
        assert (loaded_info["sample"] is None) == (info["sample"] is None)
        if info["sample"] is not None:
            assert np.array_equal(loaded_info["sample"], info["sample"])
        for name, tensor in loaded.state_dict().items():
            assert torch.equal(tensor, weights[name]), name
    assert refused >= 140  # nearly every damage lands in data the checksum or zip covers


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.pt: no such checkpoint file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_failed_save_keeps_the_old_checkpoint_and_no_temp_file(
        saved: Path, sine_result: TrainResult, monkeypatch: pytest.MonkeyPatch) -> None:
    before = saved.read_bytes()

    def torch_save_fails_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", torch_save_fails_halfway)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(saved, sine_result)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]


def test_checkpoint_keeps_a_sample_that_export_proves_parity_on(tmp_path: Path) -> None:
    """`rnnstream export CHECKPOINT` proves parity on the latest training inputs the checkpoint
    keeps (the series as it will be streamed), not only on random inputs."""
    from rnnstream.export import export_checkpoint
    from rnnstream.train import ForecasterConfig, TrainConfig, from_arrays, train

    values = 5000 + np.cumsum(np.random.default_rng(0).normal(0, 5, 300))
    result = train(from_arrays(values), ForecasterConfig(hidden=8),
                   TrainConfig(epochs=2, progress=False))
    path = save_checkpoint(tmp_path / "m.pt", result)
    _, info = load_checkpoint(path)
    np.testing.assert_array_equal(info["sample"], result.sample)
    assert info["sample"].shape == (result.metrics["n_train"], 1)
    report = export_checkpoint(path, tmp_path / "m.onnx")
    assert report.parity.inputs == f"sample of {result.metrics['n_train']} points"
    assert report.contract.parity["inputs"] == report.parity.inputs
    # a damaged sample is caught by the checksum like any other byte
    payload = torch.load(path, weights_only=True)
    payload["sample"][0, 0] += 1.0
    torch.save(payload, tmp_path / "tampered.pt")
    with pytest.raises(CheckpointError, match="checksum mismatch"):
        load_checkpoint(tmp_path / "tampered.pt")
