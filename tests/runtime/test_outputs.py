"""Named outputs: every output of a model by name and role, and a second output proven end to end.

The second output is test-only: an rnnstream model whose graphs (sequence and single-step) get
one more output, ``y_aux = y + y`` (role ``aux``; doubling is exact in float32, so every check
is bit for bit), declared in the contract's ``outputs``. Nothing else in the package knows it:
the runtime finds it by name and role and hands it out beside the prediction
(``Predictor.last_outputs``, ``StreamPool.last_outputs``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from model_files import contract_for, make_forecaster
from onnx import TensorProto, helper

from rnnstream.export.graph import build_graph
from rnnstream.export.step_graph import build_step_graph
from rnnstream.runtime import ContractError, Predictor, StreamPool
from rnnstream.runtime.contract import METADATA_KEY, SCHEMA_VERSION, ModelContract
from rnnstream.runtime.spec import OUTPUT_NAME, PREDICTION_ROLE, STATE_ROLE

AUX = "y_aux"
BATCHES = [1, 3, 5, 3, 5, 64, 64]  # repeats: first sightings run(), repeats are bound plans


def with_aux(graph: onnx.ModelProto, n_targets: int, time: str | int) -> onnx.ModelProto:
    """``graph`` with one more output: ``y_aux = y + y``, [batch, time, targets]."""
    graph.graph.node.append(helper.make_node("Add", [OUTPUT_NAME, OUTPUT_NAME], [AUX]))
    graph.graph.output.append(helper.make_tensor_value_info(
        AUX, TensorProto.FLOAT, ["batch", time, n_targets]))
    onnx.checker.check_model(graph)
    return graph


def write_aux_model(folder: Path, *, step: bool, cell: str = "lstm", features: int = 2,
                    targets: int = 2) -> tuple[Path, ModelContract]:
    """A model with the extra output, with or without its single-step companion."""
    model = make_forecaster(cell=cell, features=features, targets=targets, hidden=8, seed=5)
    graph = with_aux(build_graph(model), targets, "time")
    contract = contract_for(model, graph)
    contract.extra_outputs = ((AUX, "aux", targets),)
    contract.schema_version = contract.required_schema  # 5: the contract has `outputs`
    if step:
        data = with_aux(build_step_graph(model), targets, 1).SerializeToString()
        (folder / "model.step.onnx").write_bytes(data)
        contract.step_model = {"file": "model.step.onnx",
                               "sha256": hashlib.sha256(data).hexdigest()}
    helper.set_model_props(graph, {METADATA_KEY: contract.to_json()})
    path = folder / "model.onnx"
    onnx.save(graph, str(path))
    return path, contract


@pytest.fixture(params=[False, True], ids=["sequence-graph", "step-graph"])
def aux_model(request, tmp_path):
    return write_aux_model(tmp_path, step=request.param)[0]


# -- the contract ------------------------------------------------------------------------------
def test_every_output_has_a_role_and_old_files_derive_them(lstm):
    c = Predictor(lstm[0]).contract
    assert c is not None
    assert "outputs" not in c.to_dict()
    assert [(o["name"], o["role"]) for o in c.outputs] == [
        (OUTPUT_NAME, PREDICTION_ROLE), ("h_out", STATE_ROLE), ("c_out", STATE_ROLE)]
    assert c.output_names(STATE_ROLE) == ["h_out", "c_out"]


def test_the_legacy_fixture_gets_roles_from_its_fields():
    folder = Path(__file__).parents[1] / "data"
    sidecars = sorted(folder.rglob("*.onnx.json"))
    assert sidecars, "tests/data holds the 0.1.0 fixture"
    for sidecar in sidecars:
        text = sidecar.read_text()
        c = ModelContract.from_json(text, str(sidecar))
        assert c.outputs[0]["role"] == PREDICTION_ROLE
        assert all(o["role"] == STATE_ROLE for o in c.outputs[1:])
        assert "outputs" not in c.to_dict()


def test_extra_outputs_round_trip_at_schema_5(tmp_path):
    _, contract = write_aux_model(tmp_path, step=False)
    d = json.loads(contract.to_json())
    assert d["schema_version"] == 5 == SCHEMA_VERSION
    assert d["outputs"][-1] == {"name": AUX, "role": "aux", "shape": ["batch", "time", 2],
                                "dtype": "float32"}
    again = ModelContract.from_json(contract.to_json())
    assert again.extra_outputs == ((AUX, "aux", 2),)
    assert again.to_json() == contract.to_json()


@pytest.mark.parametrize(("change", "match"), [
    (lambda d: d.update(schema_version=4), "schema_version 5"),
    (lambda d: d["outputs"][-1].update(role="state"), "outputs"),
    (lambda d: d["outputs"][-1].update(role="wish"), "not an output rnnstream can hand out"),
    (lambda d: d["outputs"][-1].update(name="h_out"), "repeat"),
    (lambda d: d["outputs"][-1].update(shape=["batch", 2]), "not an output"),
    (lambda d: d["outputs"].pop(1), "outputs"),
])
def test_a_malformed_outputs_list_is_refused(tmp_path, change, match):
    _, contract = write_aux_model(tmp_path, step=False)
    d = json.loads(contract.to_json())
    change(d)
    with pytest.raises(ContractError, match=match):
        ModelContract.from_dict(d)


def test_a_declared_output_the_graph_lacks_is_refused(tmp_path):
    model = make_forecaster(cell="gru", features=1, targets=1, hidden=4, seed=1)
    graph = build_graph(model)
    contract = contract_for(model, graph)
    contract.extra_outputs = ((AUX, "quantile", 1),)
    contract.schema_version = contract.required_schema
    helper.set_model_props(graph, {METADATA_KEY: contract.to_json()})
    path = tmp_path / "m.onnx"
    onnx.save(graph, str(path))
    with pytest.raises(ContractError, match=AUX):
        Predictor(path)


# -- the second output through the runtime -------------------------------------------------------
def test_predictor_hands_out_the_second_output_by_name(aux_model):
    p = Predictor(aux_model)
    assert p.last_outputs == {}
    for point in np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32):
        y = p.step(point)
        out = p.last_outputs
        assert set(out) == {OUTPUT_NAME, AUX}
        np.testing.assert_array_equal(out[OUTPUT_NAME], y)
        np.testing.assert_array_equal(out[AUX], y + y)
    ys = p.prime(np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(p.last_outputs[AUX], ys[-1] + ys[-1])
    state = p.get_state()
    p.set_state(state)
    assert np.isnan(p.last_outputs[AUX]).all()  # a state carries only the prediction
    p.reset()
    assert p.last_outputs == {}


def test_the_second_output_does_not_change_the_prediction_or_the_state(tmp_path):
    path, _ = write_aux_model(tmp_path, step=False)  # both on the sequence graph
    model = make_forecaster(cell="lstm", features=2, targets=2, hidden=8, seed=5)
    plain_path = tmp_path / "plain.onnx"
    graph = build_graph(model)
    helper.set_model_props(graph, {METADATA_KEY: contract_for(model, graph).to_json()})
    onnx.save(graph, str(plain_path))
    a, b = Predictor(path), Predictor(plain_path)
    for point in np.random.default_rng(1).normal(size=(6, 2)).astype(np.float32):
        np.testing.assert_array_equal(a.step(point), b.step(point))
    for name, row in a.get_state().tensors.items():
        np.testing.assert_array_equal(row, b.get_state().tensors[name])


def test_stream_pool_hands_out_the_second_output_by_name(aux_model, monkeypatch):
    from rnnstream.runtime import pool as pool_module
    monkeypatch.setattr(pool_module, "CHUNK_GATE_FLOATS", 1)  # several pieces a call
    monkeypatch.setattr(pool_module, "MIN_CHUNK_ROWS", 4)
    rng = np.random.default_rng(2)
    with StreamPool(aux_model, auto_add=True, threads=2) as pool:
        assert pool.last_outputs == {}
        for n in BATCHES:
            keys = list(range(n))
            y = pool.step_many(keys, rng.normal(size=(n, 2)).astype(np.float32))
            out = pool.last_outputs
            assert set(out) == {OUTPUT_NAME, AUX}
            np.testing.assert_array_equal(out[OUTPUT_NAME], y)
            np.testing.assert_array_equal(out[AUX], y + y)
        pool.step({0: [1.0, 2.0]})
        np.testing.assert_array_equal(pool.last_outputs[AUX], pool.last_outputs["y"] * 2)


def test_a_model_without_extra_outputs_hands_out_its_prediction(lstm):
    p = Predictor(lstm[0])
    y = p.step(0.5)
    assert list(p.last_outputs) == [OUTPUT_NAME]
    assert p.last_outputs[OUTPUT_NAME].tolist() == [y]
    with StreamPool(lstm[0], auto_add=True) as pool:
        pool.step_many(["a"], np.ones((1, 1), np.float32))
        assert list(pool.last_outputs) == [OUTPUT_NAME]


# -- the JavaScript core reads the same outputs by name -----------------------------------------
JS_DIR = Path(__file__).parents[2] / "examples" / "javascript"
CORE = JS_DIR.parent / "core" / "rnnstream-core.mjs"
JS_SCRIPT = """
const [core, ortPath, model, sidecar] = process.argv.slice(1);
const c = require(core);
const ort = require(ortPath);
(async () => {
  const contract = c.parseSidecar(require('fs').readFileSync(sidecar, 'utf8'), sidecar);
  const session = await ort.InferenceSession.create(model);
  c.checkSession(session, contract);
  const loop = new c.StateLoop(ort, session, contract);
  const state = loop.initialState();
  const rows = [];
  for (const point of [[0.5, -1], [2, 0.25], [1, 1]]) {
    const out = await loop.run(point, state);
    Object.assign(state, loop.nextState(out));
    const named = loop.outputs(out);
    rows.push(Object.fromEntries(Object.entries(named).map(([k, v]) => [k, Array.from(v)])));
  }
  process.stdout.write(JSON.stringify({ roles: c.outputsOf(contract).map((o) => o.role), rows }));
})().catch((err) => { process.stderr.write(String(err)); process.exit(1); });
"""


def test_the_javascript_core_hands_out_the_second_output_by_name(tmp_path):
    node = shutil.which("node")
    ort_path = JS_DIR / "node_modules" / "onnxruntime-node"
    if node is None or not ort_path.is_dir():
        pytest.skip("needs node and examples/javascript's packages (tests/embedding installs "
                    "them: npm ci in examples/javascript)")
    path, contract = write_aux_model(tmp_path, step=False)
    sidecar = tmp_path / "model.onnx.json"
    sidecar.write_text(contract.to_json())
    done = subprocess.run([node, "-e", JS_SCRIPT, str(CORE), str(ort_path), str(path),
                           str(sidecar)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    js = json.loads(done.stdout)
    assert js["roles"] == [PREDICTION_ROLE, STATE_ROLE, STATE_ROLE, "aux"]
    p = Predictor(path)
    for point, row in zip([[0.5, -1], [2, 0.25], [1, 1]], js["rows"], strict=True):
        p.step(np.array(point, np.float32))
        want = p.last_outputs
        assert set(row) == set(want)
        for name, values in row.items():  # float32 through JSON: exact as float64
            np.testing.assert_array_equal(np.float32(values), want[name])


def test_the_javascript_core_refuses_what_python_refuses(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs node")
    _, contract = write_aux_model(tmp_path, step=False)
    good = json.loads(contract.to_json())
    bad = []
    for change in (lambda d: d.update(schema_version=4),
                   lambda d: d["outputs"][-1].update(role="wish"),
                   lambda d: d["outputs"][-1].update(name="h_out", role="aux"),
                   lambda d: d["outputs"].pop(1)):
        d = json.loads(json.dumps(good))
        change(d)
        with pytest.raises(ContractError):
            ModelContract.from_dict(d)
        bad.append(d)
    script = """
const c = require(process.argv[1]);
const docs = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const refused = docs.bad.map((d) => { try { c.checkSidecar(d); return null; }
  catch (err) { return err instanceof c.ModelError ? err.message : String(err); } });
c.checkSidecar(docs.good);
process.stdout.write(JSON.stringify(refused));
"""
    done = subprocess.run([node, "-e", script, str(CORE)], input=json.dumps(
        {"good": good, "bad": bad}), capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    refused = json.loads(done.stdout)
    assert all(refused), refused
    assert "schema_version 5" in refused[0]
