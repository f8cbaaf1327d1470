"""Serve the page on 127.0.0.1, with ../core at /core/ and a folder of models at /models/.

    python serve.py --models ../../runs/sine        # then open http://127.0.0.1:8000/

The page imports ../core/rnnstream-core.mjs (the module it shares with the Node example), so a
plain static server must serve the examples folder: ``python -m http.server`` in examples/
works too (open /web/). This maps /core/ to that folder beside this one, and /models/ to
``--models``, so that exported files can stay where they are. The browser
test (tests/embedding/test_web.py) and the bench (bench/bench_web.py) use :func:`start`.
Standard library only; it listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import threading
from pathlib import Path
from typing import ClassVar

HERE = Path(__file__).resolve().parent
CORE = HERE.parent / "core"  # rnnstream-core.mjs, shared with examples/javascript
MODELS_PREFIX = "/models/"
CORE_PREFIX = "/core/"


def handler(models: Path | None, root: Path = HERE) -> type[http.server.SimpleHTTPRequestHandler]:
    """A static file handler for ``root`` (this folder), with ../core under /core/ and
    ``models`` under /models/."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        # a module script must come as JavaScript; not every system's mime.types knows .mjs
        extensions_map: ClassVar[dict[str, str]] = {
            **http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def translate_path(self, path: str) -> str:
            for prefix, folder in ((MODELS_PREFIX, models), (CORE_PREFIX, CORE)):
                if folder is not None and path.startswith(prefix):
                    # the parent class resolves the rest against `directory`, refusing "..";
                    # re-root it at the mapped folder
                    rest = super().translate_path("/" + path[len(prefix):])
                    return str(folder / Path(rest).relative_to(root))
            return super().translate_path(path)

        def log_message(self, format: str, *args) -> None:
            pass  # quiet: a test or bench prints what matters

    return Handler


def start(models: Path | None = None, port: int = 0,
          root: Path = HERE) -> http.server.ThreadingHTTPServer:
    """Serve ``root`` in a daemon thread; ``port=0`` takes a free port (``server.server_port``).
    Call ``server.shutdown()`` and ``server.server_close()`` when done."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler(models, root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, help="a folder of exported models, served at /models/")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), handler(args.models))
    print(f"http://127.0.0.1:{server.server_port}/  (Ctrl-C stops)")
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
