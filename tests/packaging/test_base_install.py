"""A base install (`pip install .`, no extras) streams an exported model from the CLI and the API.

Builds a real virtual environment with only numpy + onnxruntime (what `pip install .` pulls),
so it proves the dependency direction end to end: no torch, no onnx, and the training commands
say how to get them.
"""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnstream.export import export_model
from rnnstream.runtime import Predictor
from rnnstream.train.model import Forecaster, ForecasterConfig

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                          env=env, **kw)


@pytest.fixture(scope="module")
def base_env(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("base-venv")
    venv.create(folder, with_pip=True)
    bindir = folder / "bin"
    # a copy of the source, so the build leaves nothing in the working tree
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE", "train", "export", "runtime", "cli",
                 "spark", "serve"):
        _run(["cp", "-r", str(ROOT / name), str(src / name)]).check_returncode()
    done = _run([str(bindir / "python"), "-m", "pip", "install", "--quiet",
                 "--disable-pip-version-check", str(src)])
    assert done.returncode == 0, done.stderr
    return bindir


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    model = Forecaster(ForecasterConfig(cell="gru", hidden=8, layers=2)).eval()
    model.set_normalization([2.0], [0.5], [2.0], [0.5])
    path = tmp_path_factory.mktemp("model") / "model.onnx"
    export_model(model, path)
    return path


def test_base_install_has_no_torch_or_onnx(base_env: Path) -> None:
    code = ("import importlib.util as u; "
            "print(json.dumps([bool(u.find_spec(m)) for m in ('torch', 'onnx', 'numpy', "
            "'onnxruntime')]))")
    done = _run([str(base_env / "python"), "-c", "import json; " + code])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [False, False, True, True]


def test_every_package_ships_its_type_hints(base_env: Path) -> None:
    """PEP 561: py.typed in each package, so mypy checks code that uses rnnstream."""
    code = ("import importlib.util as u, json, os; print(json.dumps([os.path.isfile(os.path.join("
            "u.find_spec(f'rnnstream.{p}').submodule_search_locations[0], 'py.typed')) "
            "for p in ('runtime', 'train', 'export', 'cli', 'spark')]))")  # found, not imported
    done = _run([str(base_env / "python"), "-c", code])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [True] * 5


def test_base_install_streams_from_the_cli(base_env: Path, model_file: Path) -> None:
    points = [2.0, 2.5, 1.5, 3.0, 2.25]
    done = _run([str(base_env / "rnnstream"), "stream", str(model_file)],
                input="".join(f"{p}\n" for p in points))
    assert done.returncode == 0, done.stderr
    here = Predictor(model_file)
    expected = [here.step(p) for p in points]
    np.testing.assert_allclose([float(v) for v in done.stdout.split()], expected, rtol=0,
                               atol=1e-6)


def test_base_install_streams_from_the_api(base_env: Path, model_file: Path) -> None:
    code = (
        "import sys, json; from rnnstream.runtime import Predictor; "
        f"p = Predictor({str(model_file)!r}); "
        "ys = [p.step(v) for v in (2.0, 2.5, 1.5)]; "
        "assert 'torch' not in sys.modules and 'onnx' not in sys.modules; "
        "print(json.dumps(ys))"
    )
    done = _run([str(base_env / "python"), "-c", code])
    assert done.returncode == 0, done.stderr
    here = Predictor(model_file)
    np.testing.assert_array_equal(json.loads(done.stdout), [here.step(v) for v in (2.0, 2.5, 1.5)])


@pytest.mark.parametrize("command", ["train", "export", "demo"])
def test_training_commands_say_which_extra_to_install(base_env: Path, command: str) -> None:
    argv = [str(base_env / "rnnstream"), command]
    if command == "export":
        argv.append("model.pt")
    done = _run(argv)
    assert done.returncode == 2
    assert "pip install 'rnnstream[train]'" in done.stderr


def test_serve_says_which_extra_to_install(base_env: Path, model_file: Path) -> None:
    done = _run([str(base_env / "rnnstream"), "serve", str(model_file)])
    assert done.returncode == 2
    assert "pip install 'rnnstream[serve]'" in done.stderr


def test_inspect_works_on_a_base_install(base_env: Path, model_file: Path) -> None:
    done = _run([str(base_env / "rnnstream"), "inspect", str(model_file), "--json"])
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["cell"] == "gru"

