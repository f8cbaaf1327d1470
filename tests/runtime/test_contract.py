"""runtime/contract.py on its own: the contract round-trips, and every malformed field is a
ContractError naming the field (no model file, no onnxruntime)."""

from __future__ import annotations

import json

import pytest

from rnnstream.runtime import ContractError
from rnnstream.runtime.contract import (
    SCHEMA_VERSION,
    ModelContract,
    StateSpec,
    sidecar_path,
)


def _contract(**kw) -> ModelContract:
    base = {"cell": "lstm", "layers": 2, "hidden": 8, "features": ["a", "b"], "targets": ["a"]}
    return ModelContract(**{**base, **kw})


def test_round_trip_and_derived_fields():
    c = _contract(fingerprint="sha256:" + "0" * 64,
                  step_model={"file": "m.step.onnx", "sha256": "ab" * 32})
    back = ModelContract.from_json(c.to_json())
    assert back == c
    assert (back.n_features, back.n_targets) == (2, 1)
    assert [s.name for s in back.states] == ["h", "c"]
    assert back.states[0] == StateSpec("h", "h_in", "h_out", ("batch", 2, 8))
    assert back.states[0].row_shape == (2, 8)
    assert back.input == {"name": "x", "shape": ["batch", "time", 2], "dtype": "float32"}
    assert not back.targets_are_features
    assert _contract(targets=["a", "b"]).targets_are_features
    assert not _contract(targets=["a", "b"], horizon=2).targets_are_features
    assert back.schema_version == 1  # the lowest version that describes a level-input model


def test_delta_input_adds_the_last_state_and_needs_schema_2():
    c = _contract(input_mode="delta")
    assert [s.name for s in c.states] == ["h", "c", "last"]
    assert c.states[2].row_shape == (3,)  # the previous point: F + 1 values
    assert c.schema_version == 2
    assert ModelContract.from_json(c.to_json()) == c
    with pytest.raises(ContractError, match="'delta' needs schema_version 2"):
        ModelContract.from_dict({**c.to_dict(), "schema_version": 1})


def test_no_step_model_keeps_the_old_json_exactly():
    assert "step_model" not in json.loads(_contract().to_json())


@pytest.mark.parametrize(("edit", "match"), [
    ({"format": "other"}, "metadata format is 'other'"),
    ({"schema_version": SCHEMA_VERSION + 1}, "newer than this runtime understands"),
    ({"schema_version": True}, "schema_version True is not a positive integer"),
    ({"cell": "transformer"}, "unknown cell 'transformer'; expected one of"),
    ({"layers": 0}, r"metadata 'layers' is 0; expected an integer 1\.\.64"),
    ({"hidden": 1.5}, "metadata 'hidden' is 1.5"),
    ({"features": ["a", "a"]}, "'features' must be a non-empty list of distinct names"),
    ({"targets": "a"}, "'targets' must be a non-empty list"),
    ({"target_mode": "ratio"}, "target_mode 'ratio' is not 'level' or 'delta'"),
    ({"metrics": [1]}, "metadata 'metrics' must be an object, got list"),
    ({"step_model": {"file": "../x.onnx", "sha256": "ab" * 32}}, "metadata 'step_model' is"),
    ({"states": []}, "metadata field 'states' is \\[\\], but cell=lstm, layers=2, hidden=8"),
])
def test_malformed_fields_are_named(edit, match):
    data = {**_contract().to_dict(), **edit}
    with pytest.raises(ContractError, match=match):
        ModelContract.from_dict(data, source="m.onnx")


def test_not_json_and_not_an_object():
    with pytest.raises(ContractError, match=r"m\.onnx: the rnnstream metadata is not valid JSON"):
        ModelContract.from_json("{", source="m.onnx")
    with pytest.raises(ContractError, match="must be a JSON object"):
        ModelContract.from_json("[1]")


def test_sidecar_path():
    assert sidecar_path("dir/model.onnx") == "dir/model.onnx.json"
