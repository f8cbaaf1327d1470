"""The generated loops (rnnstream.cli.codegen) run, and predict what the runtime predicts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnnstream.cli.codegen import JS_CORE, JS_CORE_SOURCE, LANGS, generate
from rnnstream.runtime.contract import ModelContract, sidecar_path

from ._support import (
    CASES,
    REPO,
    WEB_DIR,
    Case,
    parse_predictions,
    python_stream,
    run_headless,
    run_js_loop,
    series,
    serve,
    to_csv,
)

ATOL = 1e-5
TIMEOUT_S = 60


def contract_of(model: Path) -> ModelContract:
    return ModelContract.from_json(Path(sidecar_path(str(model))).read_text())


def run_generated(argv: list[str], code: str, path: Path, stdin: str, env=None):
    path.write_text(code)
    done = subprocess.run([*argv, str(path)], input=stdin, capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False, env=env)
    assert done.returncode == 0, f"generated program failed:\n{code}\n--- stderr:\n{done.stderr}"
    return done.stdout


def test_python_loop_predicts_like_runtime(exported: tuple[Case, Path], tmp_path: Path) -> None:
    case, model = exported
    points = series(case, n=25)
    code = generate(contract_of(model), "python", str(model))
    out = run_generated([sys.executable], code, tmp_path / "loop.py", to_csv(points))
    expected, _ = python_stream(model, points)
    np.testing.assert_allclose(parse_predictions(out), expected, atol=ATOL, rtol=0)


@pytest.mark.js
def test_js_loop_predicts_like_runtime(node: str, exported: tuple[Case, Path],
                                       tmp_path: Path) -> None:
    case, model = exported
    points = series(case, n=25)
    code = generate(contract_of(model), "js", str(model))
    assert f"requireCore('./{JS_CORE}')" in code  # the core's checks and state loop
    out = run_js_loop(node, code, tmp_path, to_csv(points)).stdout
    expected, _ = python_stream(model, points)
    np.testing.assert_allclose(parse_predictions(out), expected, atol=ATOL, rtol=0)


@pytest.mark.js
def test_js_loop_reads_a_csv_header_and_refuses_a_bad_point(node: str, rnn_model: Path,
                                                            tmp_path: Path) -> None:
    """What the core's PointParser does, the loop does: a header picks columns by name; a
    point that is not a number stops the stream with the line's number."""
    case = CASES[0]
    points = series(case, n=6)
    code = generate(contract_of(rnn_model), "js", str(rnn_model))
    text = to_csv(points, header=["sensor_0"])
    out = run_js_loop(node, code, tmp_path / "ok", text).stdout
    expected, _ = python_stream(rnn_model, points)
    np.testing.assert_allclose(parse_predictions(out), expected, atol=ATOL, rtol=0)
    bad = run_js_loop(node, code, tmp_path / "bad", "1.5\nabc\n", check=False)
    assert bad.returncode == 1
    assert 'error: line 2: feature sensor_0 is "abc", not a finite number' in bad.stderr


@pytest.mark.js
def test_js_loop_without_the_core_says_where_it_comes_from(node: str, rnn_model: Path,
                                                           tmp_path: Path) -> None:
    code = generate(contract_of(rnn_model), "js", str(rnn_model))
    assert JS_CORE_SOURCE in code  # the header says where to copy it from
    assert (REPO / JS_CORE_SOURCE).is_file()
    done = run_js_loop(node, code, tmp_path, "1.0\n", core=False, check=False)
    assert done.returncode == 1
    assert f"error: ./{JS_CORE} is not beside " in done.stderr
    assert f"copy {JS_CORE_SOURCE} from the source" in done.stderr


@pytest.mark.js
def test_js_loop_refuses_another_model(node: str, rnn_model: Path, tmp_path: Path) -> None:
    """A loop checks the sidecar's fingerprint, as the Python loop checks the model's."""
    contract = contract_of(rnn_model)
    contract.fingerprint = "not-this-model"
    done = run_js_loop(node, generate(contract, "js", str(rnn_model)), tmp_path, "1.0\n",
                       check=False)
    assert done.returncode == 1
    assert "error: this loop was generated for another model" in done.stderr


@pytest.mark.web
@pytest.mark.parametrize("exported", [CASES[1]], ids=["lstm"], indirect=True)
def test_web_loop_predicts_like_runtime(browser: str, exported: tuple[Case, Path],
                                        tmp_path: Path) -> None:
    """The generated page, beside its model and onnxruntime-web, in headless Chromium (one
    browser start: the LSTM, with two states, two features and two targets)."""
    case, model = exported
    points = series(case, n=25)
    (tmp_path / "index.html").write_text(generate(contract_of(model), "web", str(model)))
    shutil.copy(model, tmp_path / model.name)
    (tmp_path / "node_modules").symlink_to(WEB_DIR / "node_modules")  # `npm install` there
    server = serve(tmp_path)
    try:
        report = run_headless(browser, {
            "url": f"http://127.0.0.1:{server.server_port}/", "ready": "#run:enabled",
            "actions": [{"fill": "#points", "text": to_csv(points)}, {"click": "#run"},
                        {"waitFor": "#status.done"}, {"label": "out", "text": "#out"}],
        }, tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    out = report["results"]["out"]
    assert "error" not in out, out
    expected, _ = python_stream(model, points)
    np.testing.assert_allclose(parse_predictions(out["value"]), expected, atol=ATOL, rtol=0)


def test_code_names_the_real_model(exported: tuple[Case, Path]) -> None:
    case, model = exported
    contract = contract_of(model)
    for lang in LANGS:
        code = generate(contract, lang, str(model))
        for name in [*contract.features, *contract.targets, *(s.input for s in contract.states)]:
            assert name in code, f"{lang}: {name!r} missing"
        assert f"{case.layers}, {case.hidden}]" in code.replace("(", "[").replace(")", "]")


def test_python_loop_refuses_another_model(rnn_model: Path, tmp_path: Path) -> None:
    """The generated Python checks the fingerprint: a loop for one model won't run another."""
    model = rnn_model
    contract = contract_of(model)
    contract.fingerprint = "not-this-model"
    path = tmp_path / "loop.py"
    path.write_text(generate(contract, "python", str(model)))
    done = subprocess.run([sys.executable, str(path)], input="", capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert done.returncode == 1
    assert "generated for another model" in done.stderr


HOSTILE = ['a"b', "c\nd", "${process.exit(3)}", "`e`", "f'\"\"\"g", "{h}", "\\i", "é\u2028"]


def test_hostile_names_stay_inert(tmp_path: Path) -> None:
    """Feature names reach the code only as escaped literals: the programs still compile."""
    contract = ModelContract(cell="lstm", layers=1, hidden=4, features=HOSTILE[:4],
                             targets=HOSTILE[4:], fingerprint="x'\"y")
    model_path = "dir with 'quotes\"/m.onnx"
    compile(generate(contract, "python", model_path), "loop.py", "exec")
    page = generate(contract, "web", model_path)
    # no name may end a <script> element or open a comment in it: exactly the two closing tags
    assert page.count("</script") == 2
    assert page.count("<!--") == 1  # the page's own header comment
    node = shutil.which("node")
    if node:  # optional: the JS syntax check needs only node, not the example's install
        js = tmp_path / "loop.js"
        js.write_text(generate(contract, "js", model_path))
        module = tmp_path / "page.mjs"
        module.write_text(page.split('<script type="module">')[1].split("</script>")[0])
        for path in (js, module):
            done = subprocess.run([node, "--check", str(path)], capture_output=True, text=True,
                                  timeout=TIMEOUT_S, check=False)
            assert done.returncode == 0, f"{path.name}: {done.stderr}"


def test_unknown_language_is_refused(rnn_model: Path) -> None:
    with pytest.raises(ValueError, match=r"no code generator for language 'rust'; choose one of"):
        generate(contract_of(rnn_model), "rust", str(rnn_model))


@pytest.mark.parametrize("lang", sorted(LANGS))
def test_inspect_code_prints_the_generated_loop(rnn_model: Path, lang: str, capsys) -> None:
    from rnnstream.cli.main import main

    assert main(["inspect", str(rnn_model), "--code", lang]) == 0
    printed = capsys.readouterr().out
    expected = generate(contract_of(rnn_model), lang, str(rnn_model))
    assert printed.rstrip("\n") == expected.rstrip("\n")


def test_python_loop_reads_outputs_by_name(tmp_path: Path) -> None:
    """A model with one more output than y and its states (``y_aux``, role ``aux``, declared in
    the contract's ``outputs``): the generated loop fetches every output, reads each by name,
    and predicts exactly what the runtime predicts."""
    import onnx
    from model_files import contract_for, make_forecaster
    from onnx import TensorProto, helper

    from rnnstream.export.graph import build_graph
    from rnnstream.runtime import Predictor
    from rnnstream.runtime.contract import METADATA_KEY

    model = make_forecaster(cell="gru", features=2, targets=1, hidden=4, seed=9)
    graph = build_graph(model)
    graph.graph.node.append(helper.make_node("Neg", ["y"], ["y_aux"]))
    graph.graph.output.append(helper.make_tensor_value_info(
        "y_aux", TensorProto.FLOAT, ["batch", "time", 1]))
    contract = contract_for(model, graph)
    contract.extra_outputs = (("y_aux", "aux", 1),)
    contract.schema_version = contract.required_schema
    helper.set_model_props(graph, {METADATA_KEY: contract.to_json()})
    path = tmp_path / "aux.onnx"
    onnx.save(graph, str(path))
    code = generate(contract, "python", str(path))
    assert 'out["y_aux"]: role \'aux\'' in code
    points = np.random.default_rng(3).normal(size=(12, 2)).astype(np.float32)
    out = run_generated([sys.executable], code, tmp_path / "loop.py",
                        "".join(",".join(repr(float(v)) for v in p) + "\n" for p in points))
    p = Predictor(path)
    expected = [p.step(point) for point in points]
    np.testing.assert_array_equal(parse_predictions(out).reshape(-1), np.float32(expected))


@pytest.mark.js
def test_js_loop_streams_the_step_graph_with_the_models_sidecar(node: str, rnn_model: Path,
                                                                 tmp_path: Path) -> None:
    """Generated for model.step.onnx, the loop reads model.onnx.json (the core identifies the
    step graph by the SHA-256 the sidecar names) and predicts what Predictor predicts."""
    from rnnstream.export.step_graph import step_path

    step = step_path(str(rnn_model))
    code = generate(contract_of(rnn_model), "js", step)
    assert f"const SIDECAR = {json.dumps(str(rnn_model) + '.json')};" in code
    points = series(CASES[0], n=25)
    out = run_js_loop(node, code, tmp_path, to_csv(points)).stdout
    expected, _ = python_stream(rnn_model, points)
    np.testing.assert_allclose(parse_predictions(out), expected, atol=ATOL, rtol=0)
