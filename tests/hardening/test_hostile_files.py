"""Hostile model files are refused at load with a typed error, never a crash of the process.

Every file is loaded by Predictor and by StreamPool in one subprocess (``_load_hostile.py``), so
a segfault or abort inside onnxruntime is caught as an exit status instead of killing pytest.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rnnstream.runtime.contract import METADATA_KEY

HERE = Path(__file__).parent
# name -> (expected error class, a piece of its message)
LOAD = "ModelLoadError"
CONTRACT = "ContractError"


def _with_contract(proto: onnx.ModelProto, edit) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for prop in out.metadata_props:
        if prop.key == METADATA_KEY:
            prop.value = edit(prop.value)
    return out


def _json_edit(**changes):
    def edit(text: str) -> str:
        data = json.loads(text)
        for k, v in changes.items():
            if v is None:
                data.pop(k, None)
            else:
                data[k] = v
        data.pop("step_model", None)  # a companion file would be checked before the contract
        return json.dumps(data)
    return edit


def _plain_graph(kind: str) -> onnx.ModelProto:
    """A valid ONNX model of the wrong kind: no state at all, or a classifier."""
    if kind == "stateless":
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
        graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    else:
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])
        p = helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])
        w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3], np.ones(12, np.float32))
        graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["z"]),
                                   helper.make_node("Softmax", ["z"], ["probabilities"])],
                                  "classifier", [x], [p], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _huge_initializer(proto: onnx.ModelProto, outside: bool) -> onnx.ModelProto:
    """The first initializer claims [10**9, 10**9] floats (raw data unchanged), or points its
    data at a file outside the model's folder."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    init = out.graph.initializer[0]
    if outside:
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.data_location = TensorProto.EXTERNAL
        for k, v in (("location", "../../../../etc/passwd"), ("offset", "0"), ("length", "64")):
            entry = init.external_data.add()
            entry.key, entry.value = k, v
    else:
        del init.dims[:]
        init.dims.extend([10**9, 10**9])
    return out


def _huge_graph_dims(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Declared state shapes of hidden = 10**9 in the graph (the contract still says 8)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    for vi in [*out.graph.input, *out.graph.output]:
        if vi.name.startswith("h_"):
            vi.type.tensor_type.shape.dim[2].dim_value = 10**9
    return out


def hostile_files(source: Path, folder: Path) -> dict[str, tuple[Path, str, str]]:
    data = source.read_bytes()
    proto = onnx.load(str(source))
    cases: dict[str, tuple[bytes | onnx.ModelProto, str, str]] = {
        "empty": (b"", LOAD, "empty"),
        "text": (b"this is not a model\n" * 10, LOAD, "not a valid ONNX file|cannot load"),
        "random": (np.random.default_rng(0).bytes(4096), LOAD, "not a valid ONNX|cannot load"),
        "metadata_not_utf8": (data.replace(b'"format": "rnnstream"',
                                           b'"format": "rnnstr\xffam"', 1),
                              CONTRACT, "not valid UTF-8"),
        "stateless": (_plain_graph("stateless"), CONTRACT, "no state input/output pairs"),
        "classifier": (_plain_graph("classifier"), CONTRACT, "no state input/output pairs"),
        "lying_hidden": (_with_contract(proto, _json_edit(hidden=16, states=None)), CONTRACT,
                         "the graph declares"),
        "lying_states": (_with_contract(proto, _json_edit(states=[{"name": "h"}])), CONTRACT,
                         "metadata field 'states'"),
        "lying_cell": (_with_contract(proto, _json_edit(cell="gru", states=None)), CONTRACT,
                       "implies inputs"),
        "newer_schema": (_with_contract(proto, _json_edit(schema_version=99)), CONTRACT,
                         "newer than this runtime"),
        "absurd_hidden_metadata": (_with_contract(proto, _json_edit(hidden=10**9, states=None)),
                                   CONTRACT, "'hidden' is 1000000000"),
        "absurd_layers_metadata": (_with_contract(proto, _json_edit(layers=10**6, states=None)),
                                   CONTRACT, "'layers' is 1000000"),
        "metadata_not_json": (_with_contract(proto, lambda t: t[:-5]), CONTRACT, "not valid JSON"),
        "metadata_not_object": (_with_contract(proto, lambda t: "[1, 2]"), CONTRACT,
                                "must be a JSON object"),
        "absurd_graph_dims": (_huge_graph_dims(proto), LOAD, ""),
        "absurd_initializer": (_huge_initializer(proto, outside=False), LOAD, ""),
        "external_outside": (_huge_initializer(proto, outside=True), LOAD, "external data|"
                             "outside|cannot load"),
    }
    for cut in (1, 16, len(data) // 3, len(data) // 2, len(data) - 10):
        cases[f"truncated_{cut}"] = (data[:cut], LOAD, "")
    out = {}
    for name, (content, error, match) in cases.items():
        path = folder / name / "model.onnx"  # one folder each: nothing shared between cases
        path.parent.mkdir()
        blob = content if isinstance(content, bytes) else content.SerializeToString()
        path.write_bytes(blob)
        out[name] = (path, error, match)
    return out


def _load_all(paths: list[Path]) -> list[dict]:
    proc = subprocess.run([sys.executable, str(HERE / "_load_hostile.py"), *map(str, paths)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"the loading process died ({proc.returncode}): {proc.stderr}"
    return [json.loads(line[len("RESULT "):]) for line in proc.stdout.splitlines()
            if line.startswith("RESULT ")]


def test_hostile_model_files_are_refused(models, tmp_path, figures):
    cases = hostile_files(models["uni"].path, tmp_path)
    results = _load_all([p for p, _, _ in cases.values()])
    assert len(results) == 2 * len(cases)
    by_path = {}
    for r in results:
        by_path.setdefault(r["path"], []).append(r)
    problems = []
    for name, (path, error, match) in cases.items():
        for r in by_path[str(path)]:
            ok_class = r["error"] == error or (error == LOAD and r["error"] == CONTRACT)
            if not ok_class or not __import__("re").search(match, r["message"]):
                problems.append(f"{name} via {r['loader']}: {r['error']}: {r['message'][:200]}")
    figures("hostile.files", cases=len(cases), loads=len(results),
            refused=len(results) - len(problems))
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def _weight_spans(data: bytes) -> list[tuple[int, int]]:
    """[start, end) of every initializer's bytes inside the serialized model."""
    spans = []
    for init in onnx.load_from_string(data).graph.initializer:
        raw = init.raw_data
        start = data.find(raw)
        assert start >= 0
        assert data.find(raw, start + 1) < 0  # unique, so the span is unambiguous
        spans.append((start, start + len(raw)))
    return spans


def test_flipped_bytes_never_crash(models, tmp_path, figures):
    """Flipped bytes anywhere: refused with a typed error or, outside the weights (e.g. inside
    a metric in the metadata text), loaded; never an untyped error or a crash. Every flip inside
    the weights is refused: the runtime re-checks the contract's fingerprint at load."""
    data = bytearray(models["uni"].path.read_bytes())
    rng = np.random.default_rng(1)
    spans = _weight_spans(bytes(data))
    in_weights = rng.integers(0, len(spans), 20)
    weight_positions = [int(rng.integers(*spans[i])) for i in in_weights]
    positions = sorted({0, 1, 2, 5, 10, *rng.integers(0, len(data), 35).tolist(),
                        *weight_positions})
    paths = []
    for pos in positions:
        flipped = bytearray(data)
        flipped[pos] ^= 0xFF
        path = tmp_path / f"flip{pos}" / "model.onnx"
        path.parent.mkdir()
        path.write_bytes(bytes(flipped))
        paths.append(path)
    results = _load_all(paths)
    untyped = [r for r in results if r["error"] and r["error"].startswith("UNTYPED")]
    refused = sum(1 for r in results if r["error"] and r["loader"] == "Predictor")
    loaded_in_weights = [r["path"] for r in results if not r["error"] and r["loader"] ==
                         "Predictor" and any(a <= _flip_pos(r["path"]) < b for a, b in spans)]
    weights_hit = sum(1 for pos in positions if any(a <= pos < b for a, b in spans))
    figures("hostile.flips", positions=len(positions), refused=refused,
            loaded=len(positions) - refused, inside_weights=weights_hit,
            inside_weights_loaded=len(loaded_in_weights))
    assert not untyped, untyped
    assert weights_hit >= 20
    assert not loaded_in_weights, loaded_in_weights


def _flip_pos(path: str) -> int:
    return int(Path(path).parent.name.removeprefix("flip"))
