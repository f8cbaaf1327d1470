"""Load every file named on the command line with Predictor and StreamPool (run as a script).

Prints one line per file and loader, ``RESULT <json>`` (onnxruntime writes its own lines to
stdout too, e.g. "EP Error" banners): the exception class and its message, or "loaded".
Runs in its own process so that a segfault or an abort inside onnxruntime shows up as an exit
status, not as a dead test runner. Imports only the runtime (no torch, no onnx).
"""

from __future__ import annotations

import json
import sys

from rnnstream.runtime import Predictor, RnnStreamError, StreamPool


def main(paths: list[str]) -> None:
    for path in paths:
        for loader in (Predictor, StreamPool):
            try:
                loader(path)
                outcome = {"error": None, "message": "loaded"}
            except RnnStreamError as exc:
                outcome = {"error": type(exc).__name__, "message": str(exc)}
            except Exception as exc:  # untyped: a failure the test reports
                outcome = {"error": "UNTYPED " + type(exc).__name__, "message": str(exc)}
            line = json.dumps({"path": path, "loader": loader.__name__, **outcome})
            print("RESULT " + line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
