"""The gRPC front end: Triton's ``inference.GRPCInferenceService`` on ``grpc.aio``.

The message and service classes are the ones generated from Triton's ``grpc_service.proto``
that ship inside tritonclient (``tritonclient.grpc.service_pb2`` and ``service_pb2_grpc``):
importing them, rather than keeping a copy of the .proto here, guarantees the very wire format
that tritonclient and Triton speak. Methods not implemented here answer UNIMPLEMENTED (the
generated base class does that).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from .errors import ServeError
from .protocol import grpc_request, grpc_response

if TYPE_CHECKING:
    from .backend import Backend

__all__ = ["InferenceService", "TokenInterceptor", "add_to_server"]

# answered without a token (health probes carry none)
OPEN_METHODS = ("/inference.GRPCInferenceService/ServerLive",
                "/inference.GRPCInferenceService/ServerReady")
UNAUTHENTICATED = ("this server needs a token: send the metadata 'authorization: Bearer "
                   "<token>' with one of the tokens of its --token-file")


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """--token-file: every call but the health probes carries ``authorization: Bearer T``;
    others are answered UNAUTHENTICATED before the method runs."""

    def __init__(self, server: Backend) -> None:
        self.server = server

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = await continuation(details)
        if handler is None or details.method in OPEN_METHODS:
            return handler
        given = next((v for k, v in details.invocation_metadata or ()
                      if k == "authorization"), None)
        # grpc decodes a metadata value from UTF-8 to str; Server.authorized encodes a str
        # back to the client's UTF-8 bytes, the rule HTTP's raw header bytes follow
        if self.server.authorized(given):
            return handler
        self.server.count_error("", "grpc", ServeError("unauthenticated", "no valid token"))

        async def deny(request: Any, context: Any) -> Any:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)

        kinds = {"unary_unary": grpc.unary_unary_rpc_method_handler,
                 "unary_stream": grpc.unary_stream_rpc_method_handler,
                 "stream_unary": grpc.stream_unary_rpc_method_handler,
                 "stream_stream": grpc.stream_stream_rpc_method_handler}
        for kind, make in kinds.items():
            if getattr(handler, kind) is not None:
                return make(deny, request_deserializer=handler.request_deserializer,
                            response_serializer=handler.response_serializer)
        return handler


def add_to_server(servicer: InferenceService, server: grpc.aio.Server) -> None:
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, server: Backend) -> None:
        self.server = server

    async def _abort(self, context: grpc.aio.ServicerContext, exc: ServeError) -> None:
        await context.abort(getattr(grpc.StatusCode, exc.grpc_code), str(exc))

    # -- health and metadata ----------------------------------------------------------------------
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.server.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            self.server.model(request.name, request.version)
        except ServeError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.server.ready)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        doc = self.server.server_metadata()
        return pb.ServerMetadataResponse(name=doc["name"], version=doc["version"],
                                         extensions=doc["extensions"])

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        try:
            doc = self.server.model(request.name, request.version).metadata()
        except ServeError as exc:
            await self._abort(context, exc)
        resp = pb.ModelMetadataResponse(name=doc["name"], versions=doc["versions"],
                                        platform=doc["platform"])
        for kind, tensors in (("inputs", doc["inputs"]), ("outputs", doc["outputs"])):
            for t in tensors:
                getattr(resp, kind).add(name=t["name"], datatype=t["datatype"],
                                        shape=t["shape"])
        return resp

    # -- inference --------------------------------------------------------------------------------
    def _submit(self, request: Any) -> tuple[asyncio.Future, str, int, tuple[str, ...]]:
        service = self.server.model(request.model_name, request.model_version)
        infer = grpc_request(request)
        self.server.metrics.requests.inc(service.name, "grpc")
        points = infer.x.shape[0] * infer.x.shape[1]
        return service.submit(infer), service.name, points, infer.outputs

    def _respond(self, request: Any, model: str, outputs: Any, start: float, points: int,
                 names: tuple[str, ...]) -> Any:
        metrics = self.server.metrics
        resp = grpc_response(pb, model, request.id, outputs, names)
        metrics.predictions.inc(model, by=points)
        metrics.request_seconds.observe(time.perf_counter() - start)
        return resp

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        start = time.perf_counter()
        try:
            future, model, points, names = self._submit(request)
            outputs = await future
        except ServeError as exc:
            self.server.count_error(request.model_name, "grpc", exc)
            await self._abort(context, exc)
        return self._respond(request, model, outputs, start, points, names)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any],
                               context: Any) -> AsyncIterator[Any]:
        """Requests are submitted as they arrive (so they batch with each other and with other
        clients); answers go back in request order. A refused request answers with
        ``error_message`` and the stream goes on."""
        queue: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            try:
                async for request in request_iterator:
                    start = time.perf_counter()
                    try:
                        queue.put_nowait((request, start, *self._submit(request)))
                    except ServeError as exc:
                        queue.put_nowait((request, start, exc, "", 0, ()))
            finally:
                queue.put_nowait(None)

        reader = asyncio.ensure_future(read())
        try:
            while (entry := await queue.get()) is not None:
                request, start, future, model, points, names = entry
                try:
                    if isinstance(future, ServeError):
                        raise future
                    outputs = await future
                except ServeError as exc:
                    self.server.count_error(request.model_name, "grpc", exc)
                    yield pb.ModelStreamInferResponse(error_message=str(exc))
                    continue
                yield pb.ModelStreamInferResponse(
                    infer_response=self._respond(request, model, outputs, start, points,
                                                 names))
        finally:
            reader.cancel()
