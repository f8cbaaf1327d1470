"""gRPC's token check follows HTTP's rule: the token's UTF-8 bytes, compared in constant time.

grpc decodes a metadata value to str; HTTP hands the header's raw bytes to
``Server.authorized``. A non-ASCII token (the token file may hold one) must match over gRPC as
it does over HTTP, and a value no token has must be refused, never raise. Python's grpc client
refuses to send a non-ASCII metadata value, so the interceptor is called directly, as grpc.aio
calls it, with the value grpc would hand it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rnnstream.serve.app import ServeConfig, Server
from rnnstream.serve.grpc_service import TokenInterceptor

LEGACY = Path(__file__).parent.parent / "data" / "legacy_v0_1_0" / "model.onnx"
TOKEN = "tök€n-ünïcode_42"  # noqa: S105 (a test token: Latin-1 letters and one beyond it)
LATIN1 = "ökén"  # Latin-1 only: its latin-1 bytes differ from its UTF-8 ones
METHOD = "/inference.GRPCInferenceService/ModelInfer"


@dataclass
class Details:
    """What grpc.aio hands an interceptor: the method and the metadata, values as str."""

    method: str
    invocation_metadata: tuple[tuple[str, str], ...]


class Handler:
    unary_unary = object()  # the real method (a sentinel: never called here)
    unary_stream = stream_unary = stream_stream = None
    request_deserializer = response_serializer = None


@pytest.fixture(scope="module")
def server() -> Server:
    return Server(ServeConfig(models={"model": str(LEGACY)}, tokens=("other", TOKEN, LATIN1)))


def let_through(server: Server, value: str | None) -> bool:
    """Whether the interceptor hands a call with this authorization value to the method."""
    handler = Handler()
    metadata = () if value is None else (("authorization", value),)

    async def continuation(details: Any) -> Handler:
        return handler

    got = asyncio.run(TokenInterceptor(server).intercept_service(
        continuation, Details(METHOD, metadata)))
    return got is handler


def test_a_non_ascii_token_matches_over_grpc_as_over_http(server: Server) -> None:
    assert server.authorized(f"Bearer {TOKEN}".encode())  # HTTP: the header's UTF-8 bytes
    assert let_through(server, f"Bearer {TOKEN}")
    assert let_through(server, f"Bearer {LATIN1}")
    assert let_through(server, "Bearer other")


@pytest.mark.parametrize("value", [None, "Bearer nope", "Bearer tök€n", "Bearer \U0001f511",
                                   f"Basic {TOKEN}", f"Bearer {TOKEN}x"])
def test_a_wrong_token_is_refused_not_raised(server: Server, value: str | None) -> None:
    assert not let_through(server, value)
