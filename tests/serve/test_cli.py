"""The command's edges: the missing extra names the pip command; serve uses only the runtime's
public API (another part of the project may reorganise its private modules)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from rnnstream.cli import serve_cmd
from rnnstream.cli.main import build_parser

pytestmark = pytest.mark.serve

SERVE = Path(__file__).parent.parent.parent / "serve"


def test_without_the_extra_it_names_the_pip_command(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "grpc" else real(name, *a))
    args = build_parser().parse_args(["serve", "model.onnx"])
    assert serve_cmd.run(args) == 2
    assert "pip install 'rnnstream[serve]'" in capsys.readouterr().err


def test_names_must_match_models(capsys):
    args = build_parser().parse_args(["serve", "a.onnx", "b.onnx", "--name", "x"])
    assert serve_cmd.run(args) == 2
    assert "1 --name for 2 models" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["--season", "24"], 2, "--season is for the live scores: give --coverage too"),
    (["--coverage", "1.5"], None, "'1.5' is not a coverage strictly between 0 and 1"),
    (["--coverage", "0.9", "--season", "x"], None, "'x' is not a whole number of points"),
])
def test_coverage_and_season_are_checked_like_stream(capsys, argv, code, message):
    if code is None:  # argparse refuses it (usage error, status 2)
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["serve", "model.onnx", *argv])
        assert exit_info.value.code == 2
    else:
        args = build_parser().parse_args(["serve", "model.onnx", *argv])
        assert serve_cmd.run(args) == code
    assert message in capsys.readouterr().err


def test_serve_imports_only_the_public_runtime_api():
    sources = sorted(SERVE.glob("*.py"))
    assert sources
    for path in sources:
        text = path.read_text()
        assert not re.search(r"rnnstream\.runtime\._|from \.\.runtime", text), path.name


def test_asyncio_loop_serves_too():
    """uvloop is the default where installed; --loop asyncio must serve the same answers."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    from .conftest import LEGACY, Reference, infer_doc, post, same_bits, serving

    x = np.array([[[0.5], [1.5]]], np.float32)
    ref = Reference(LEGACY)
    with serving([LEGACY], "--loop", "asyncio") as running:
        status, body = post(f"{running.url}/v2/models/model/infer",
                            infer_doc(x, seq=1, start=True))
        assert status == 200, body
        same_bits(np.array(body["outputs"][0]["data"]).reshape(1, 2, 1),
                  ref.run([1], x, start=True))
        client = grpcclient.InferenceServerClient(running.grpc_url)
        inp = grpcclient.InferInput("x", [1, 2, 1], "FP32")
        inp.set_data_from_numpy(x)
        same_bits(client.infer("model", [inp], sequence_id=1).as_numpy("y"), ref.run([1], x))
        client.close()
        assert running.stop() == 0


def test_a_port_in_use_is_an_error_not_a_shared_port():
    """grpc's default SO_REUSEPORT would let a second server share the port silently."""
    import subprocess
    import sys

    from .conftest import LEGACY, serving

    with serving([LEGACY]) as running:
        for flags, message in (
            (["--http-port", str(running.http_port), "--grpc-port", "0"], "address already in use"),
            (["--http-port", "0", "--grpc-port", str(running.grpc_port)],
             f"cannot listen for gRPC on 127.0.0.1:{running.grpc_port}"),
        ):
            done = subprocess.run([sys.executable, "-m", "rnnstream.cli.main", "serve",
                                   str(LEGACY), *flags], capture_output=True, text=True,
                                  timeout=60, check=False)
            assert done.returncode == 1, done.stderr
            assert message in done.stderr


def test_max_idle_is_a_deprecated_alias_of_idle_timeout(capsys):
    """--idle-timeout is the name StreamPool and Spark use; --max-idle still works, warning."""
    args = build_parser().parse_args(["serve", "model.onnx", "--idle-timeout", "7"])
    assert serve_cmd.idle_timeout(args) == 7.0
    assert capsys.readouterr().err == ""
    args = build_parser().parse_args(["serve", "model.onnx", "--max-idle", "5"])
    assert serve_cmd.idle_timeout(args) == 5.0
    assert "--max-idle is deprecated" in capsys.readouterr().err
    assert serve_cmd.idle_timeout(build_parser().parse_args(["serve", "m.onnx"])) == 3600.0


def test_limits_max_idle_seconds_is_a_deprecated_alias():
    from rnnstream.serve.sequences import Limits

    assert Limits(idle_timeout_s=None).idle_timeout_s is None
    with pytest.warns(DeprecationWarning, match=r"idle_timeout_s"):
        limits = Limits(max_idle_seconds=9.0)
    assert limits.idle_timeout_s == 9.0
