"""What the front ends (HTTP in :mod:`.http`, gRPC in :mod:`.grpc_service`) need of the server:
a narrow protocol, so that they depend on this and not on :class:`.app.Server` (no import circle,
not even a type-only one), and a test can drive a front end with a small fake."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .errors import ServeError
    from .metrics import Metrics
    from .sequences import ModelService

__all__ = ["Backend"]


class Backend(Protocol):
    """The server as its front ends see it (:class:`.app.Server` is the one implementation)."""

    metrics: Metrics
    max_request_bytes: int
    ready: bool
    # the open HTTP connections (the server closes them at shutdown); each adds and removes
    # itself (Any: the server holds the HTTP front end's own class, which this must not name)
    connections: set[Any]

    def model(self, name: str, version: str = "") -> ModelService:
        """The named model's service; ServeError (not_found) otherwise."""

    def authorized(self, header: bytes | str | None) -> bool:
        """True when the Authorization header (or gRPC metadata) carries a valid token."""

    def count_error(self, model: str, protocol: str, exc: ServeError) -> None:
        """Count a refused request in the metrics."""

    def server_metadata(self) -> dict[str, Any]:
        """The KServe v2 server metadata document."""

    def get(self, parts: list[str]) -> tuple[int, bytes, bytes]:
        """A GET request's (status, body, content type), for the path split at '/'."""
