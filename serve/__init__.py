"""Serve rnnstream models over the network with the KServe v2 protocol (HTTP and gRPC), keeping
each sequence's state between requests (Triton's sequence extension).

Needs the ``serve`` extra (``pip install 'rnnstream[serve]'``)::

    import asyncio
    from rnnstream.serve import ServeConfig, Server

    server = Server(ServeConfig({"sine": "model.onnx"}, http_port=8000, grpc_port=8001,
                                state="sequences.npz"))
    asyncio.run(server.serve_until_signal())

Uses only :mod:`rnnstream.runtime`'s public API (StreamPool). See docs/serving.md.
"""

from __future__ import annotations

from .app import ServeConfig, Server, exposure_warning, state_paths
from .errors import ServeError
from .sequences import Infer, Limits, ModelService

__all__ = ["Infer", "Limits", "ModelService", "ServeConfig", "ServeError", "Server",
           "exposure_warning", "state_paths"]
