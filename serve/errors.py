"""Errors of :mod:`rnnstream.serve`: one exception type that carries its status on both protocols.

Every refused request raises :class:`ServeError` before any sequence is touched; the HTTP and
gRPC front ends turn it into their own status (table below) and the message into the body::

    kind              HTTP  gRPC                 when
    bad_request       400   INVALID_ARGUMENT     wrong input name/shape/dtype, malformed body
    not_started       400   FAILED_PRECONDITION  a sequence id never started, ended or evicted
    not_found         404   NOT_FOUND            unknown model, version or path
    too_large         413   RESOURCE_EXHAUSTED   a body over --max-request-bytes
    too_many          429   RESOURCE_EXHAUSTED   --max-sequences live sequences already
    unavailable       503   UNAVAILABLE          the server is shutting down
    internal          500   INTERNAL             onnxruntime failed (states unchanged)
    unauthenticated   401   UNAUTHENTICATED      no valid token (--token-file)
"""

from __future__ import annotations

from rnnstream.runtime.errors import RnnStreamError

__all__ = ["KINDS", "RnnStreamError", "ServeError"]

# kind -> (HTTP status, gRPC status code name)
KINDS: dict[str, tuple[int, str]] = {
    "bad_request": (400, "INVALID_ARGUMENT"),
    "not_started": (400, "FAILED_PRECONDITION"),
    "not_found": (404, "NOT_FOUND"),
    "too_large": (413, "RESOURCE_EXHAUSTED"),
    "too_many": (429, "RESOURCE_EXHAUSTED"),
    "unavailable": (503, "UNAVAILABLE"),
    "internal": (500, "INTERNAL"),
    "unauthenticated": (401, "UNAUTHENTICATED"),
}


class ServeError(RnnStreamError):
    """A request the server refuses; ``kind`` is a key of :data:`KINDS`.

    Like every rnnstream error it derives from ``rnnstream.runtime.RnnStreamError``.
    """

    def __init__(self, kind: str, message: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown ServeError kind {kind!r}; expected one of {list(KINDS)}")
        super().__init__(message)
        self.kind = kind

    @property
    def http_status(self) -> int:
        return KINDS[self.kind][0]

    @property
    def grpc_code(self) -> str:
        return KINDS[self.kind][1]
