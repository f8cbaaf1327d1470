"""The front ends see the server through serve/backend.py's narrow protocol: neither imports
serve/app.py (not even for types), so there is no import circle between them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVE = Path(__file__).resolve().parents[2] / "serve"


@pytest.mark.parametrize("front_end", ["http.py", "grpc_service.py"])
def test_a_front_end_does_not_import_the_server(front_end):
    tree = ast.parse((SERVE / front_end).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    assert "app" not in imported
    assert "rnnstream.serve.app" not in imported
    assert "backend" in imported  # the protocol it types against


def test_the_server_has_everything_the_protocol_names():
    pytest.importorskip("httptools", reason="rnnstream serve needs the 'serve' extra")
    from rnnstream.serve.app import Server
    from rnnstream.serve.backend import Backend

    wanted = {n for n in dir(Backend) if not n.startswith("_")} | set(Backend.__annotations__)
    methods = {n for n in wanted if callable(getattr(Backend, n, None))}
    assert methods <= {n for n in dir(Server) if callable(getattr(Server, n))}
    attributes = wanted - methods  # set in Server.__init__: read from its source
    source = (SERVE / "app.py").read_text(encoding="utf-8")
    for name in attributes:
        assert f"self.{name}" in source, name
