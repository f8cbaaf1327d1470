"""The allowed import edges between rnnstream's packages, read from the source with ``ast``.

Nothing is imported to find the edges (no torch, no onnx), so the test is fast and sees every
import, the ones inside functions included::

    runtime     none of train, export, cli, serve, spark; of third-party code only numpy and
                onnxruntime
    train       runtime's public modules only; none of export, cli, serve, spark
    export      train and runtime's public modules; none of cli, serve, spark
    serve       runtime's public modules only; none of train, export, cli, spark
    spark       runtime's public modules only; none of train, export, cli, serve
    cli         any stage, but runtime's public modules only

A runtime module is private when a part of its name starts with ``_`` (``_session``); the
public ones (``session``, ``atomic``, ``integrity``, ``spec``, ``contract``, ...) are what other
stages may rely on. The small core -- the runtime package itself, spec, errors, the atomic
writer, the fingerprint, the contract and the calibration format -- runs only standard-library
imports when it is imported (a function may import numpy when called), and a fresh interpreter
that imports it has neither numpy nor onnxruntime loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("runtime", "train", "export", "cli", "serve", "spark")

# stage -> the stages it must never import
FORBIDDEN = {
    "runtime": {"train", "export", "cli", "serve", "spark"},
    "train": {"export", "cli", "serve", "spark"},
    "export": {"cli", "serve", "spark"},
    "serve": {"train", "export", "cli", "spark"},
    "spark": {"train", "export", "cli", "serve"},
    "cli": set(),
}
RUNTIME_THIRD_PARTY = {"numpy", "onnxruntime"}
# runtime modules (file stems) that import nothing but the standard library and each other
SMALL_CORE = ("__init__", "spec", "errors", "atomic", "integrity", "contract", "calibration",
              "_atomic", "_integrity")
# (file, imported module) -> why it is allowed for now; an entry goes when its edge goes
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class Edge:
    source: str  # the importing file, relative to the repository: "export/wrap.py"
    line: int
    target: str  # the absolute name imported: "rnnstream.runtime.session", "numpy"
    at_import: bool  # runs when the file is imported (not in a function, not TYPE_CHECKING)

    @property
    def top(self) -> str:
        return self.target.split(".")[0]

    @property
    def stage(self) -> str | None:
        """The rnnstream stage imported ("runtime"), or None for anything else."""
        parts = self.target.split(".")
        return parts[1] if parts[0] == "rnnstream" and len(parts) > 1 else None

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


class _Collector(ast.NodeVisitor):
    def __init__(self, source: str, package: str) -> None:
        self.source, self.package = source, package
        self.edges: list[Edge] = []
        self._deferred = 0  # depth inside functions and `if TYPE_CHECKING:` blocks

    def _add(self, node: ast.stmt, target: str) -> None:
        self.edges.append(Edge(self.source, node.lineno, target, self._deferred == 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(node, alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:  # relative: resolved against the importing file's package
            parts = self.package.split(".")
            base = ".".join(parts[:len(parts) - (node.level - 1)])
            module = f"{base}.{node.module}" if node.module else base
        else:
            module = node.module or ""
        self._add(node, module)
        for alias in node.names:  # `from pkg import _mod` or `from mod import _name` count too
            if alias.name != "*":
                self._add(node, f"{module}.{alias.name}")

    def _deferring(self, node: ast.AST) -> None:
        self._deferred += 1
        self.generic_visit(node)
        self._deferred -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _deferring

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            self._deferred += 1
            for stmt in node.body:
                self.visit(stmt)
            self._deferred -= 1
            for stmt in node.orelse:
                self.visit(stmt)
        else:
            self.generic_visit(node)


def _edges_of(path: Path) -> list[Edge]:
    stage = path.parent.name
    collector = _Collector(path.relative_to(ROOT).as_posix(), f"rnnstream.{stage}")
    collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return collector.edges


EDGES: dict[str, list[Edge]] = {
    stage: [e for f in sorted((ROOT / stage).glob("*.py")) for e in _edges_of(f)]
    for stage in STAGES
}


def _private_runtime(edge: Edge) -> bool:
    parts = edge.target.split(".")
    return parts[:2] == ["rnnstream", "runtime"] and any(
        p.startswith("_") and p != "__init__" for p in parts[2:])


def _report(bad: list[Edge], rule: str) -> str:
    return f"{len(bad)} import(s) break the rule {rule!r}:\n" + "\n".join(f"  {e}" for e in bad)


def test_the_parser_sees_the_edges_it_must_see() -> None:
    """A sanity check of the collector itself, on edges that exist today."""
    wrap = {e.target for e in EDGES["export"] if e.source == "export/wrap.py"}
    assert {"rnnstream.runtime.session", "rnnstream.runtime.spec", "numpy"} <= wrap
    runtime_init = [e for e in EDGES["runtime"] if e.source == "runtime/__init__.py"]
    assert any(e.target == "rnnstream.runtime.pool" and not e.at_import for e in runtime_init)


@pytest.mark.parametrize("stage", [s for s in STAGES if FORBIDDEN[s]])
def test_a_stage_never_imports_the_stages_it_must_not(stage: str) -> None:
    bad = [e for e in EDGES[stage] if e.stage in FORBIDDEN[stage]
           and (e.source, e.target) not in KNOWN_EXCEPTIONS]
    assert not bad, _report(bad, f"{stage} imports none of {sorted(FORBIDDEN[stage])}")


def test_the_runtime_needs_only_numpy_and_onnxruntime() -> None:
    bad = [e for e in EDGES["runtime"] if e.top not in sys.stdlib_module_names
           and e.top not in {"__future__", "rnnstream", *RUNTIME_THIRD_PARTY}]
    assert not bad, _report(bad, f"the runtime imports only {sorted(RUNTIME_THIRD_PARTY)}")


@pytest.mark.parametrize("stage", [s for s in STAGES if s != "runtime"])
def test_other_stages_use_only_the_runtimes_public_modules(stage: str) -> None:
    bad = [e for e in EDGES[stage] if _private_runtime(e)]
    assert not bad, _report(bad, f"{stage} imports no private runtime module or name "
                                 "(use rnnstream.runtime.session, .atomic, .integrity, ...)")


@pytest.mark.parametrize("stem", SMALL_CORE)
def test_the_small_core_imports_only_the_standard_library(stem: str) -> None:
    core = {"rnnstream.runtime", *(f"rnnstream.runtime.{s}" for s in SMALL_CORE)}
    edges = _edges_of(ROOT / "runtime" / f"{stem}.py")
    bad = [e for e in edges if e.at_import and e.top not in sys.stdlib_module_names
           and e.top != "__future__" and e.target not in core
           and e.target.rsplit(".", 1)[0] not in core - {"rnnstream.runtime"}]
    assert not bad, _report(bad, "the small core imports only the standard library and itself "
                                 "when imported (import numpy inside the function that needs it)")


def test_importing_the_small_core_loads_neither_numpy_nor_onnxruntime() -> None:
    """Each module in turn in a fresh interpreter's order; the first that loads numpy or
    onnxruntime is named."""
    code = (
        "import importlib, json, sys\n"
        "heavy = ('numpy', 'onnxruntime', 'torch', 'onnx')\n"
        f"for stem in {[s for s in SMALL_CORE if s != '__init__']!r}:\n"
        "    importlib.import_module('rnnstream.runtime.' + stem)\n"
        "    loaded = [m for m in heavy if m in sys.modules]\n"
        "    if loaded:\n"
        "        print(json.dumps([stem, loaded])); break\n"
        "else:\n"
        "    print(json.dumps(None))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) is None, (
        f"importing rnnstream.runtime.{json.loads(done.stdout)[0]} loaded "
        f"{json.loads(done.stdout)[1]}")


def test_every_public_runtime_name_resolves_lazily() -> None:
    import rnnstream.runtime as rt

    assert sorted(rt._HOMES) == sorted(rt.__all__)  # one table, no name left out
    for name in rt.__all__:
        assert getattr(rt, name).__name__ == name
    assert set(rt.__all__) <= set(dir(rt))
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        rt.no_such_name  # noqa: B018 -- the attribute access is the test
