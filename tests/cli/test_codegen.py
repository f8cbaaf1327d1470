"""`rnnstream inspect --code`: what the generated programs say about each state, and that they
are valid for any state name the contract allows, keywords of Python or JavaScript included (a
custom model's states are named by its author: ``rnnstream wrap --state IN=OUT:NAME``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from rnnstream.cli.codegen import LANGS, generate
from rnnstream.runtime import spec
from rnnstream.runtime.contract import ModelContract
from rnnstream.runtime.spec import is_state_name

TIMEOUT_S = 60
# keywords of Python, of JavaScript, or both, and names of the generated code's own variables
KEYWORDS = ["lambda", "class", "in", "function", "let", "await", "yield", "new", "def",
            "None", "import", "var", "const", "state", "out", "session", "x", "np", "ort",
            "core", "model", "point", "line", "sys", "json", "MODEL", "FEATURES"]
NAMES = [n for n in KEYWORDS if is_state_name(n)]  # x is the input's name: not a state's


def keyword_contract() -> ModelContract:
    return ModelContract(cell="custom", layers=0, hidden=0, features=["a"], targets=["a"],
                         declared_states=tuple((n, (1 + i % 3,)) for i, n in enumerate(NAMES)),
                         fingerprint="f" * 64)


def test_every_keyword_is_a_state_name_the_contract_allows() -> None:
    assert set(KEYWORDS) - set(NAMES) == {"x"}


def test_python_with_keyword_state_names_compiles() -> None:
    code = generate(keyword_contract(), "python", "m.onnx")
    compile(code, "loop.py", "exec")


@pytest.mark.parametrize("lang", ["js", "web"])
def test_javascript_with_keyword_state_names_parses(lang: str, tmp_path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is needed to parse the generated JavaScript")
    code = generate(keyword_contract(), lang, "m.onnx")
    if lang == "web":
        code = code.split('<script type="module">')[1].split("</script>")[0]
    path = tmp_path / ("loop.js" if lang == "js" else "page.mjs")
    path.write_text(code)
    done = subprocess.run([node, "--check", str(path)], capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, f"{lang}:\n{done.stderr}"

MODES = [(kind, mode) for kind, table in (("input", spec.INPUT_MODE_SPECS),
                                          ("target", spec.TARGET_MODE_SPECS))
         for mode in table.values() if mode.state is not None]


@pytest.mark.parametrize(("kind", "mode"), MODES, ids=[m.name for _, m in MODES])
def test_a_model_level_state_is_described_by_its_mode(kind: str, mode: spec.ModeSpec) -> None:
    """Each state an input or target mode carries (last, cycle, ets) is described by the mode's
    plain data in spec (what it holds, its axes), never by a special case per name; the cell's
    states keep their layers and hidden size."""
    modes = {"input_mode": mode.name} if kind == "input" else {"target_mode": mode.name}
    season = 3 if mode.season != "none" else 0
    contract = ModelContract(cell="gru", layers=2, hidden=4, features=["a", "b"], targets=["a"],
                             season=season, **modes)
    state = next(s for s in contract.states if s.name == mode.state)
    words = mode.describe(state.row_shape)
    assert mode.meaning in words
    for lang in sorted(LANGS):
        if lang == "web":
            continue  # the page lists shapes, not words
        code = generate(contract, lang, "m.onnx")
        assert f"[batch=1, {words}]" in code, lang
        assert "[batch=1, layers=2, hidden=4]" in code, lang  # the cell's h


# -- end to end: a model whose states are called lambda, class and in ------------------------------
@pytest.fixture(scope="module")
def keyword_model(tmp_path_factory):
    """A small custom model (one step per call) whose states are named ``lambda``, ``class``
    and ``in``, with its contract embedded and its sidecar beside it, as an exporter writes
    them (``rnnstream wrap`` refuses Python keywords for state names, a guard for the loops
    this test proves); (path, points [n, 1])."""
    import numpy as np
    onnx = pytest.importorskip("onnx", reason="building a model needs onnx")
    from onnx import TensorProto, helper, numpy_helper

    from rnnstream.runtime._integrity import fingerprint, initializers
    from rnnstream.runtime.contract import METADATA_KEY, sidecar_path

    rows = {"lambda": 3, "class": 2, "in": 1}
    contract = ModelContract(cell="custom", layers=0, hidden=0, features=["a"], targets=["a"],
                             declared_states=tuple((n, (k,)) for n, k in rows.items()),
                             step_only=True)
    f32 = TensorProto.FLOAT
    consts = [numpy_helper.from_array(np.array(v, dtype), name) for name, v, dtype in (
        ("flat", [-1, 1], np.int64), ("point", [-1, 1, 1], np.int64), ("one", [1], np.int64),
        ("half", 0.5, np.float32), ("step", 0.25, np.float32))]
    nodes = [
        helper.make_node("Reshape", ["x", "flat"], ["xf"]),  # [B, 1]
        helper.make_node("Mul", ["lambda_in", "half"], ["decayed"]),
        helper.make_node("Add", ["decayed", "xf"], ["lambda_out"]),  # [B, 3]
        helper.make_node("Add", ["class_in", "step"], ["class_out"]),  # [B, 2]
        helper.make_node("Sub", ["in_in", "xf"], ["in_out"]),  # [B, 1]
        helper.make_node("ReduceSum", ["lambda_out", "one"], ["a"], keepdims=1),
        helper.make_node("ReduceSum", ["class_out", "one"], ["b"], keepdims=1),
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Add", ["ab", "in_out"], ["yf"]),
        helper.make_node("Reshape", ["yf", "point"], ["y"]),  # [B, 1, 1]
    ]
    graph = helper.make_graph(
        nodes, "keywords",
        [helper.make_tensor_value_info("x", f32, ["batch", 1, 1]),
         *(helper.make_tensor_value_info(f"{n}_in", f32, ["batch", k]) for n, k in rows.items())],
        [helper.make_tensor_value_info("y", f32, ["batch", 1, 1]),
         *(helper.make_tensor_value_info(f"{n}_out", f32, ["batch", k])
           for n, k in rows.items())],
        initializer=consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    contract.fingerprint = fingerprint(initializers(model.SerializeToString()), contract.states)
    helper.set_model_props(model, {METADATA_KEY: contract.to_json()})
    path = tmp_path_factory.mktemp("keywords") / "model.onnx"
    onnx.save(model, str(path))
    Path(sidecar_path(str(path))).write_text(contract.to_json())
    points = np.random.default_rng(4).normal(size=(20, 1)).astype(np.float32)
    return path, points


def _stdin(points) -> str:
    return "".join(",".join(repr(float(v)) for v in p) + "\n" for p in points)


def test_python_loop_streams_a_model_with_keyword_state_names(keyword_model, tmp_path,
                                                              capsys) -> None:
    import sys

    import numpy as np

    from rnnstream.cli.main import main
    from rnnstream.runtime import Predictor

    model, points = keyword_model
    assert [s.name for s in Predictor(model).contract.states] == ["lambda", "class", "in"]
    capsys.readouterr()
    assert main(["inspect", str(model), "--code", "python"]) == 0
    loop = tmp_path / "loop.py"
    loop.write_text(capsys.readouterr().out)
    done = subprocess.run([sys.executable, str(loop)], input=_stdin(points), capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    p = Predictor(model)
    want = np.float32([p.step(point) for point in points]).reshape(-1)
    np.testing.assert_array_equal(np.float32(done.stdout.split()), want)


@pytest.mark.js
def test_js_loop_streams_a_model_with_keyword_state_names(keyword_model, tmp_path) -> None:
    import numpy as np
    from embedding._support import install_js_deps, missing_tool, run_js_loop

    from rnnstream.runtime import Predictor

    node = shutil.which("node")
    if node is None or shutil.which("npm") is None:
        missing_tool("node and npm are needed for the JavaScript loop (Node.js >= 20.19)")
    install_js_deps()
    model, points = keyword_model
    code = generate(Predictor(model).contract, "js", str(model))
    done = run_js_loop(node, code, tmp_path, _stdin(points))
    p = Predictor(model)
    want = np.float32([p.step(point) for point in points]).reshape(-1)
    np.testing.assert_allclose(np.float32(done.stdout.split()), want, rtol=0, atol=1e-6)
