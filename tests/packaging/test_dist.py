"""The wheel and the sdist hold what `pip install rnnstream` needs, and nothing of the tests.

Built as `make dist` builds them (`python -m build --no-isolation`: the sdist, then the wheel
from the sdist) from a copy of the source, so the working tree gets no build output. `make dist`
also runs `twine check` on both.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with tomllib (Python 3.11+)")

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# package name -> source folder, as pyproject.toml maps them
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
pytestmark = pytest.mark.slow


def _source_files(folder: str) -> set[str]:
    return {p.name for p in (ROOT / folder).iterdir()
            if p.is_file() and (p.suffix == ".py" or p.name == "py.typed")}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE", *PACKAGE_DIRS.values()):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    done = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out),
                           str(src)], capture_output=True, text=True, timeout=300, check=False,
                          env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _wheel(dist: Path) -> zipfile.ZipFile:
    (path,) = dist.glob("*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_has_every_package_file_and_py_typed(dist: Path) -> None:
    names = set(_wheel(dist).namelist())
    for package, folder in PACKAGE_DIRS.items():
        prefix = package.replace(".", "/") + "/"
        shipped = {n[len(prefix):] for n in names if n.startswith(prefix) and "/" not in
                   n[len(prefix):]}
        assert "py.typed" in shipped, f"{package} ships no py.typed (PEP 561)"
        missing = _source_files(folder) - shipped
        assert not missing, f"{package}: {sorted(missing)} from {folder}/ are not in the wheel"


def test_the_wheel_has_no_tests_and_nothing_outside_the_namespace(dist: Path) -> None:
    names = _wheel(dist).namelist()
    assert not [n for n in names if "tests/" in n or "/test_" in n or n.startswith("test")]
    outside = [n for n in names if not n.startswith(("rnnstream/", "rnnstream-"))]
    assert not outside, outside
    # rnnstream itself is an implicit namespace package: no rnnstream/__init__.py
    assert "rnnstream/__init__.py" not in names


def test_the_wheel_metadata(dist: Path) -> None:
    wheel = _wheel(dist)
    (meta_name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    meta = email.message_from_bytes(wheel.read(meta_name))
    project = PYPROJECT["project"]
    assert meta["Name"] == project["name"]
    assert meta["Version"] == project["version"]
    assert meta["Description-Content-Type"] == "text/markdown"
    assert set(meta.get_all("Provides-Extra") or []) == set(project["optional-dependencies"])
    base = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert sorted(r.split(">")[0] for r in base) == ["numpy", "onnxruntime"]
    (entry_points,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    assert "rnnstream = rnnstream.cli.main:main" in wheel.read(entry_points).decode()


def test_the_sdist_builds_the_wheel_and_holds_the_sources(dist: Path) -> None:
    (path,) = dist.glob("*.tar.gz")
    with tarfile.open(path) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        assert name in names
    for folder in PACKAGE_DIRS.values():
        missing = {f"{folder}/{f}" for f in _source_files(folder)} - names
        assert not missing, sorted(missing)
