"""Bad input gets a typed error naming the problem, and the state stays bit-for-bit."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from rnnstream.runtime import (
    ContractError,
    InferenceError,
    InputError,
    ModelLoadError,
    Predictor,
    StateError,
    StreamKeyError,
    StreamPool,
)
from rnnstream.runtime.contract import METADATA_KEY, SCHEMA_VERSION


@pytest.fixture
def multi(model_file):
    return model_file(cell="lstm", features=3, targets=2, hidden=8, seed=11)


def _same(a, b):
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert (a.last_output is None) == (b.last_output is None)


BAD_POINTS = [
    ([1.0, 2.0], InputError, "got 2 values.*expected 3 values \\(features f0, f1, f2\\)"),
    ([[1.0, 2.0, 3.0]], InputError, "as a flat sequence"),
    (np.ones((2, 3)), InputError, "got 6 values"),
    (1.0, InputError, "got one number.*expected 3 values"),
    ({"f0": 1, "f1": 2, "f9": 3}, InputError, "unknown feature name 'f9'.*missing 'f2'"),
    ({"f0": 1, "f1": 2, "f2": "x"}, InputError, "feature 'f2' is str"),
    ("1,2,3", InputError, "got str"),
    (None, InputError, "got NoneType"),
    ([1.0, None, 2.0], InputError, "got non-numeric values"),
    (["a", "b", "c"], InputError, r"got text \(list"),
    ([True, False, True], InputError, "booleans"),
    (True, InputError, "boolean"),
    ([1.0, float("nan"), 2.0], InputError, "non-finite value.*feature 'f1'"),
    (np.array([1.0, np.inf, 2.0], np.float32), InputError, "non-finite"),
    ([], InputError, "empty point"),
    (object(), InputError, "expected a number, a sequence"),
]


@pytest.mark.parametrize(("point", "exc", "match"), BAD_POINTS,
                         ids=[str(i) for i in range(len(BAD_POINTS))])
def test_bad_point_is_refused_and_state_unchanged(multi, point, exc, match):
    p = Predictor(multi[0])
    p.step([0.1, 0.2, 0.3])
    before = p.get_state()
    with pytest.raises(exc, match=match):
        p.step(point)
    _same(before, p.get_state())


def test_scalar_fast_path_refuses_nan_and_inf(lstm):
    p = Predictor(lstm[0])
    p.step(0.5)
    before = p.get_state()
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(InputError, match="non-finite"):
            p.step(bad)
    _same(before, p.get_state())


@pytest.mark.parametrize(("history", "match"), [
    (np.ones((5, 2)), "got shape \\(5, 2\\); expected \\[count, 3\\]"),
    (np.zeros((0, 3)), "no points"),
    ([[1, 2, float("nan")]], "non-finite"),
    ("abc", "history: got str"),
])
def test_bad_history(multi, history, match):
    p = Predictor(multi[0])
    p.step([0.0, 0.1, 0.2])
    before = p.get_state()
    with pytest.raises(InputError, match=match):
        p.prime(history)
    _same(before, p.get_state())


def test_forecast_bad_n(lstm):
    p = Predictor(lstm[0])
    p.step(0.1)
    for n in (0, -1, 2.5, True, "3"):
        with pytest.raises(InputError, match="positive integer"):
            p.forecast(n)


def test_bad_states_and_snapshots(lstm, multi, tmp_path):
    p = Predictor(lstm[0])
    p.step(0.4)
    before = p.get_state()
    h = before["h"]
    cases = [
        ({"h": h}, "has states \\['h'\\], this model has \\['h', 'c'\\]"),
        ({"h": h, "c": h[:, :4]},
         "state 'c' is array of shape \\(1, 4\\).*expected float32 of shape \\(1, 8\\)"),
        ({"h": h, "c": h.astype(np.float64)}, "dtype float64"),
        ({"h": h, "c": np.full_like(h, np.nan)}, "NaN"),
        ({"h": h, "c": [0.0] * 8}, "state 'c' is list"),
        ([1, 2], "expected a State or a mapping"),
    ]
    for state, match in cases:
        with pytest.raises(StateError, match=match):
            p.set_state(state)
        _same(before, p.get_state())
    other = Predictor(multi[0])
    other.step([0.0, 0.0, 0.0])
    other.save_state(tmp_path / "other.npz")
    with pytest.raises(StateError, match="belongs to another model"):
        p.load_state(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip at all")
    with pytest.raises(StateError, match="not a readable rnnstream snapshot"):
        p.load_state(tmp_path / "junk.npz")
    with pytest.raises(StateError, match="no such snapshot"):
        p.load_state(tmp_path / "missing.npz")
    np.savez(tmp_path / "plain.npz", h=h)
    with pytest.raises(StateError, match="not an rnnstream snapshot"):
        p.load_state(tmp_path / "plain.npz")
    _same(before, p.get_state())


def test_snapshot_loading_never_unpickles(lstm, tmp_path):
    p = Predictor(lstm[0])
    np.savez(tmp_path / "evil.npz", __meta__=np.array([{"x": 1}], dtype=object))
    with pytest.raises(StateError, match="not a readable rnnstream snapshot"):
        p.load_state(tmp_path / "evil.npz")


def test_pool_unhashable_key(lstm):
    from rnnstream.runtime import StreamPool

    pool = StreamPool(lstm[0], auto_add=True)
    with pytest.raises(StreamKeyError, match="not hashable"):
        pool.step_many([["a"]], [[1.0]])


# -- hostile or odd files ------------------------------------------------------------------------
def _rewrite_contract(src, dst, **changes):
    m = onnx.load(str(src))
    meta = {p.key: p.value for p in m.metadata_props}
    data = json.loads(meta[METADATA_KEY])
    data.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del data[key]  # let the contract derive it from the changed sizes
    del m.metadata_props[:]
    helper.set_model_props(m, {METADATA_KEY: json.dumps(data)})
    onnx.save(m, str(dst))
    return dst


def test_hostile_files(lstm, tmp_path):
    good = lstm[0]
    raw = good.read_bytes()
    (tmp_path / "trunc.onnx").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "random.onnx").write_bytes(np.random.default_rng(0).bytes(4000))
    (tmp_path / "empty.onnx").write_bytes(b"")
    m = onnx.load(str(good))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "nocontract.onnx"))
    m.metadata_props.add(key=METADATA_KEY, value="{not json")
    onnx.save(m, str(tmp_path / "badjson.onnx"))
    cases = [
        (tmp_path / "missing.onnx", ModelLoadError, "missing.onnx: no such file"),
        (tmp_path, ModelLoadError, "not a regular file"),
        (tmp_path / "empty.onnx", ModelLoadError, "empty.onnx: the file is empty"),
        (tmp_path / "trunc.onnx", ModelLoadError, "trunc.onnx: not a valid ONNX file"),
        (tmp_path / "random.onnx", ModelLoadError, "random.onnx: not a valid ONNX file"),
        (tmp_path / "badjson.onnx", ContractError, "badjson.onnx: the rnnstream metadata is not"),
        (_rewrite_contract(good, tmp_path / "newer.onnx", schema_version=SCHEMA_VERSION + 1),
         ContractError, f"newer.onnx: contract schema version {SCHEMA_VERSION + 1} is newer"),
        (_rewrite_contract(good, tmp_path / "hidden.onnx", hidden=16, states=None),
         ContractError, "hidden.onnx: .*'h_in'.*\\[batch, 1, 16\\]"),
        (_rewrite_contract(good, tmp_path / "feat.onnx", features=["a", "b"], input=None),
         ContractError, "feat.onnx: .*'x'.*\\[batch, time, 2\\]"),
        (_rewrite_contract(good, tmp_path / "cell.onnx", cell="gru", states=None),
         ContractError, "cell.onnx: the contract \\(cell=gru\\) implies inputs"),
    ]
    for path, exc, match in cases:
        with pytest.raises(exc, match=match):
            Predictor(path)
    # no contract: streamed as a foreign model, since x/h_in/h_out follow a convention
    p = Predictor(tmp_path / "nocontract.onnx")
    assert p.contract is None
    assert p.state_pairs == {"h_in": "h_out", "c_in": "c_out"}


def test_no_contract_and_no_pairs(tmp_path):
    g = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "g",
                          [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
              str(tmp_path / "relu.onnx"))
    with pytest.raises(ContractError, match=r"relu\.onnx: has no rnnstream contract.*state_map="):
        Predictor(tmp_path / "relu.onnx")


def test_external_data_outside_the_folder_is_refused(tmp_path):
    import numpy as np
    from onnx import numpy_helper

    sub = tmp_path / "models"
    sub.mkdir()
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["a", "W"], ["b"])], "g",
                          [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1, 4])],
                          [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(sub / "m.onnx"), save_as_external_data=True, location="w.bin",
              size_threshold=0)
    np.ones(16, np.float32).tofile(tmp_path / "secret.bin")
    m = onnx.load(str(sub / "m.onnx"), load_external_data=False)
    for entry in m.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../secret.bin"
    onnx.save(m, str(sub / "escape.onnx"))
    with pytest.raises(ModelLoadError, match=r"escape\.onnx: refused its external data"):
        Predictor(sub / "escape.onnx")


def _ort_failure(*args, **kwargs):
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    raise Fail("injected kernel failure")


def test_onnxruntime_failure_is_an_inference_error_and_changes_nothing(multi, monkeypatch):
    path = multi[0]
    p = Predictor(path)
    p.step([0.1, 0.2, 0.3])
    before = p.get_state()
    monkeypatch.setattr(p._stream, "_run_bound", _ort_failure)  # the step's bound call
    monkeypatch.setattr(p._engine.session, "run", _ort_failure)  # prime, forecast, sequences
    calls = [lambda: p.step([1.0, 2.0, 3.0]), lambda: p.prime(np.ones((4, 3))),
             lambda: p.run_sequence(np.ones((4, 3)), before)]
    for call in calls:
        with pytest.raises(InferenceError, match=r"onnxruntime failed: .*injected kernel") as info:
            call()
        assert type(info.value.__cause__).__name__ == "Fail"
        _same(p.get_state(), before)
    pool = StreamPool(path)
    for key in ("a", "b"):
        pool.add(key)
    pool.step_many(["a", "b"], np.ones((2, 3)))  # a non-zero state; batch size 1 not seen yet
    kept = pool.get_state("a")
    session = pool._engine.step_session or pool._engine.session
    monkeypatch.setattr(session, "run", _ort_failure)  # batch sizes seen once
    monkeypatch.setattr(session, "run_with_iobinding", _ort_failure)  # bound plans
    for _ in range(2):  # 1st sighting of 1 row: run(); 2nd: a bound plan
        with pytest.raises(InferenceError, match="injected kernel"):
            pool.step_many(["a"], np.zeros((1, 3)))
        _same(pool.get_state("a"), kept)


def test_the_drawn_error_tree_is_the_class_tree():
    """errors.py draws the hierarchy in its docstring; a class added or moved without the
    drawing (or the other way round) fails here."""
    import re

    from rnnstream.runtime import errors

    drawn: dict[str, str | None] = {}
    stack: list[str] = []
    for line in (errors.__doc__ or "").splitlines():
        found = re.match(r"^    ([│├└─ ]*)(\w+Error)\b", line)
        if not found:
            continue
        depth = len(found.group(1)) // 4
        del stack[depth:]
        drawn[found.group(2)] = stack[-1] if stack else None
        stack.append(found.group(2))
    actual = {name: (getattr(errors, name).__bases__[0].__name__
                     if name != "RnnStreamError" else None) for name in errors.__all__}
    assert drawn == actual
