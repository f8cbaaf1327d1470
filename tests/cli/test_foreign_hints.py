"""The CLI on ONNX files with no rnnstream contract: they stream (headers of any names, JSON
objects with --key), and every command says in one line how `rnnstream wrap` gives them one."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from rnnstream.cli.main import main


@pytest.fixture
def accumulator(tmp_path):
    """hn = h0 + x; y = 2 * hn, declared [batch, 2]: no contract, pairs by naming convention."""
    f = TensorProto.FLOAT
    g = helper.make_graph(
        [helper.make_node("Add", ["h0", "x"], ["hn"]),
         helper.make_node("Mul", ["hn", "two"], ["y"])],
        "acc",
        [helper.make_tensor_value_info("x", f, ["batch", 2]),
         helper.make_tensor_value_info("h0", f, ["batch", 2])],
        [helper.make_tensor_value_info("y", f, ["batch", 2]),
         helper.make_tensor_value_info("hn", f, ["batch", 2])],
        [helper.make_tensor("two", f, [], [2.0])])
    path = tmp_path / "acc.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _stream(monkeypatch, capsys, model, text, *extra):
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    code = main(["stream", str(model), *extra])
    out, err = capsys.readouterr()
    return code, out, err


def _one_clean_line(err: str) -> str:
    assert err.count("\n") == 1, err
    assert "\x1b" not in err
    assert "Traceback" not in err
    return err


def _rows(out: str) -> np.ndarray:
    return np.array([[float(v) for v in line.split(",")] for line in out.splitlines()])


def test_a_csv_header_of_any_names_streams_in_order(monkeypatch, capsys, accumulator):
    code, out, err = _stream(monkeypatch, capsys, accumulator, "u,v\n1,2\n3,4\n")
    assert code == 0, err
    np.testing.assert_array_equal(_rows(out), [[2, 4], [8, 12]])
    note = _one_clean_line(err)
    assert note.startswith(f"note: {accumulator} has no rnnstream contract")
    assert f"`rnnstream wrap {accumulator} --state IN=OUT" in note


def test_a_header_of_the_wrong_width_says_so(monkeypatch, capsys, accumulator):
    code, _, err = _stream(monkeypatch, capsys, accumulator, "v\n1\n")
    assert code == 1
    assert "line 2: got one number (1.0); expected 2 values (the model has no feature names, " \
           "so the header's columns ['v'] are read in order" in err


def test_keyed_csv_and_json_objects_on_a_foreign_model(monkeypatch, capsys, accumulator):
    code, out, err = _stream(monkeypatch, capsys, accumulator,
                             "id,a,b\nx,1,2\ny,3,4\nx,1,1\n", "--key", "id")
    assert code == 0, err
    assert out.splitlines() == ["x,2,4", "y,6,8", "x,4,6"]
    code, out, err = _stream(monkeypatch, capsys, accumulator,
                             '{"id": "x", "a": 1, "b": 2}\n{"id": "y", "a": 3, "b": 4}\n',
                             "--key", "id")
    assert code == 0, err
    assert out.splitlines() == ["x,2,4", "y,6,8"]


def test_stream_coverage_on_a_foreign_model_points_to_wrap(monkeypatch, capsys, accumulator):
    code, out, err = _stream(monkeypatch, capsys, accumulator, "1,2\n", "--coverage", "0.9")
    assert code == 1
    assert out == ""
    line = _one_clean_line(err)
    assert line.startswith("error: coverage needs an rnnstream contract")
    assert "rnnstream wrap" in line


def test_stream_of_a_file_without_pairs_points_to_wrap(monkeypatch, capsys, tmp_path):
    g = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "g",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    code, _, err = _stream(monkeypatch, capsys, path, "1,2,3,4\n")
    assert code == 1
    line = _one_clean_line(err)
    assert "no state input/output pairs were found" in line
    assert f"`rnnstream wrap {path} --state IN=OUT" in line


@pytest.mark.parametrize("command", ["inspect", "serve"])
def test_inspect_and_serve_point_to_wrap(capsys, accumulator, command):
    assert main([command, str(accumulator)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    line = _one_clean_line(captured.err)
    assert line.startswith(f"error: {accumulator}: no rnnstream contract")
    assert (f"`rnnstream wrap {accumulator} --state IN=OUT ... --features ... --targets ... "
            "--out MODEL.onnx`") in line
    assert "(intervals, serve, Spark)" in line
