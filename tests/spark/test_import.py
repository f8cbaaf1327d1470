"""The Spark integration stays optional: importing the runtime never imports pyspark, and the
module says which extra to install when pyspark is missing. Needs neither Spark nor Java."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)


def test_runtime_import_does_not_import_pyspark():
    done = run_python("import sys, rnnstream.runtime; heavy = ('pyspark', 'pandas', 'torch'); "
                      "print(sorted(m for m in heavy if m in sys.modules))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("blocked", ["pyspark", "pyspark.sql", "pandas", "pyarrow"])
def test_missing_dependency_names_the_extra(blocked):
    # sys.modules[name] = None makes `import name` raise ImportError, as if it were missing.
    done = run_python(f"import sys; sys.modules[{blocked!r}] = None; "
                      "import rnnstream.spark")
    assert done.returncode != 0
    assert "pip install 'rnnstream[spark]'" in done.stderr


def test_old_module_name_is_gone():
    """rnnstream.runtime.spark was the deprecated 0.3 alias of rnnstream.spark; it is removed."""
    done = run_python("import rnnstream.runtime.spark")
    assert done.returncode != 0
    assert "No module named 'rnnstream.runtime.spark'" in done.stderr


def test_spark_uses_only_the_public_runtime_api():
    """rnnstream.spark is an integration: it imports rnnstream.runtime's __all__ and public
    runtime modules, nothing private (read from its source, so no pyspark is needed)."""
    import ast
    import importlib.util
    from pathlib import Path

    import rnnstream.runtime

    spec = importlib.util.find_spec("rnnstream.spark")
    assert spec is not None
    assert spec.origin is not None
    trees = [ast.parse(f.read_text(encoding="utf-8"))  # every module of the package
             for f in sorted(Path(spec.origin).parent.glob("*.py"))]
    imported = []
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rnnstream"):
            imported += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            imported += [(alias.name, "") for alias in node.names
                         if alias.name.startswith("rnnstream")]
    assert imported, "found no import of the runtime"
    for module, name in imported:
        parts = module.split(".")
        assert parts[:2] == ["rnnstream", "runtime"], module
        assert not any(p.startswith("_") for p in parts), module  # no private module
        if module == "rnnstream.runtime":
            assert name in rnnstream.runtime.__all__, name
        assert not name.startswith("_"), (module, name)
