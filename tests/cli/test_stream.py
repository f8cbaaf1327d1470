"""`rnnstream stream` through a real pipe."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rnnstream.runtime import Predictor, StreamPool


def _stream(model, stdin: str, *extra: str):
    return subprocess.run([sys.executable, "-m", "rnnstream.cli.main", "stream", str(model),
                           *extra], input=stdin, capture_output=True, text=True, timeout=60,
                          check=False)


def _ref(path, xs):
    p = Predictor(path)
    return [p.step(float(v)) for v in xs], p


def test_csv_with_header_and_json_lines(lstm):
    path = lstm[0]
    xs = [0.1, -0.4, 0.25, 0.8]
    ref, _ = _ref(path, xs)
    csv = _stream(path, "f0\n" + "".join(f"{v}\n" for v in xs))
    assert csv.returncode == 0, csv.stderr
    np.testing.assert_allclose([float(v) for v in csv.stdout.split()], ref, rtol=1e-7)
    jsonl = _stream(path, f"{xs[0]}\n[{xs[1]}]\n{{\"f0\": {xs[2]}}}\n\n{xs[3]}\n")
    assert jsonl.returncode == 0, jsonl.stderr
    assert jsonl.stdout == csv.stdout


def test_state_resume_equals_uninterrupted(lstm, tmp_path):
    path = lstm[0]
    xs = np.random.default_rng(0).normal(size=20).round(4).tolist()
    whole = _stream(path, "".join(f"{v}\n" for v in xs))
    state = str(tmp_path / "s.npz")
    a = _stream(path, "".join(f"{v}\n" for v in xs[:9]), "--state", state)
    b = _stream(path, "".join(f"{v}\n" for v in xs[9:]), "--state", state)
    assert a.returncode == b.returncode == 0
    assert a.stdout + b.stdout == whole.stdout


def test_bad_line_exits_1_and_keeps_state_of_last_good_line(lstm, tmp_path):
    path = lstm[0]
    state = tmp_path / "s.npz"
    out = _stream(path, "0.1\n0.2\nnot-a-number\n0.4\n", "--state", str(state))
    assert out.returncode == 1
    assert "line 3: 'not-a-number' is not a number" in out.stderr
    assert len(out.stdout.split()) == 2
    _, ref = _ref(path, [0.1, 0.2])
    p = Predictor(path)
    p.load_state(state)
    for name in ("h", "c"):
        np.testing.assert_array_equal(p.get_state()[name], ref.get_state()[name])
    nan = _stream(path, "0.1\nnan\n")
    assert nan.returncode == 1
    assert "line 2: got a non-finite value" in nan.stderr


def test_key_serves_many_streams(lstm, tmp_path):
    path = lstm[0]
    rows = [("A", 0.1), ("B", 0.5), ("A", 0.2), ("C", -0.3), ("B", 0.1)]
    state = tmp_path / "pool.npz"
    out = _stream(path, "ticker,f0\n" + "".join(f"{k},{v}\n" for k, v in rows),
                  "--key", "ticker", "--state", str(state))
    assert out.returncode == 0, out.stderr
    solo: dict[str, Predictor] = {}
    expected = [f"{k},{format(solo.setdefault(k, Predictor(path)).step(v), '.9g')}"
                for k, v in rows]
    assert out.stdout.split() == expected
    pool = StreamPool(path)
    pool.load_state(state)
    assert sorted(pool.keys()) == ["A", "B", "C"]
    np.testing.assert_array_equal(pool.get_state("A")["h"], solo["A"].get_state()["h"])
    js = _stream(path, '{"ticker": "A", "f0": 0.1, "ts": 1}\n{"ticker": "B", "f0": 0.5}\n'
                 '{"f0": 1}\n', "--key", "ticker")
    assert js.returncode == 1
    assert js.stdout.split() == expected[:2]
    assert "line 3: expected a JSON object with the key field 'ticker'" in js.stderr


@pytest.mark.parametrize(("stdin", "message"), [
    ("a,b\n1\n", "line 2: 1 values for the 2 header columns"),
    ("[1, 2]\n", "line 1: got 2 values"),
    ('{"zz": 1}\n', "line 1: no field for the model's feature(s) ['f0'] in ['zz']"),
    ("{broken\n", "line 1: not valid JSON"),
])
def test_bad_input_messages(lstm, stdin, message):
    out = _stream(lstm[0], stdin)
    assert out.returncode == 1
    assert message in out.stderr


def test_missing_model_is_a_clear_error(tmp_path):
    out = _stream(tmp_path / "nope.onnx", "1\n")
    assert out.returncode == 1
    assert "nope.onnx: no such file" in out.stderr


def test_header_picks_the_features_by_name_and_ignores_other_columns(model_file):
    path, _ = model_file(cell="gru", features=3, targets=2, hidden=8, seed=5)  # f0, f1, f2
    rows = np.random.default_rng(2).normal(size=(6, 3)).round(4)
    p = Predictor(path)
    ref = [p.step(r.tolist()) for r in rows]
    # columns shuffled, plus a date and an id the model does not read
    lines = ["date,f2,id,f0,f1"] + [f"2024-01-0{i + 1},{r[2]},x{i},{r[0]},{r[1]}"
                                    for i, r in enumerate(rows)]
    done = _stream(path, "\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    got = [[float(v) for v in line.split(",")] for line in done.stdout.splitlines()]
    np.testing.assert_allclose(got, ref, rtol=1e-7)


def test_header_without_a_feature_column_is_refused(model_file):
    path, _ = model_file(cell="gru", features=3, targets=2, hidden=8, seed=5)
    done = _stream(path, "f0,f1,date\n1,2,2024-01-01\n")
    assert done.returncode == 1
    assert "line 1: the header ['f0', 'f1', 'date'] has no column for the model's feature(s) " \
           "['f2']" in done.stderr
    assert done.stdout == ""


def test_json_objects_pick_the_features_by_name(model_file):
    path, _ = model_file(cell="gru", features=3, targets=2, hidden=8, seed=5)
    rows = np.random.default_rng(3).normal(size=(4, 3)).round(4)
    p = Predictor(path)
    ref = [p.step(r.tolist()) for r in rows]
    lines = [f'{{"ts": {i}, "f2": {r[2]}, "f0": {r[0]}, "f1": {r[1]}}}' for i, r in enumerate(rows)]
    done = _stream(path, "\n".join(lines) + "\n")
    assert done.returncode == 0, done.stderr
    got = [[float(v) for v in line.split(",")] for line in done.stdout.splitlines()]
    np.testing.assert_allclose(got, ref, rtol=1e-7)
    missing = _stream(path, '{"f0": 1, "f1": 2}\n')
    assert missing.returncode == 1
    assert "line 1: no field for the model's feature(s) ['f2']" in missing.stderr


def test_csv_lines_are_read_by_the_csv_module():
    """A quoted field may hold a comma (a name, an address): the csv module, not split(",")."""
    from rnnstream.cli.stream_cmd import LineParser

    parser = LineParser(key="name", features=["price"])
    assert parser.parse("name,price,note\n") is None  # header
    assert parser.parse('"Smith, J",1.5,"a, b, c"\n') == ("Smith, J", 1.5)
    assert parser.parse('Doe , 2.5 ,x\n') == ("Doe", 2.5)
