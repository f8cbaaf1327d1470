"""Which HTTP server stack for `rnnstream serve`? Loopback round trips of a ~250-byte KServe-v2
JSON infer request answered with a fixed ~200-byte JSON body (no model: the stack's own cost).

Candidates: uvicorn (httptools parser) + a bare ASGI callable; aiohttp's web server; a raw
asyncio.Protocol with httptools' parser; each on asyncio's own event loop and on uvloop. Client:
one keep-alive http.client connection, in a second process, N sequential requests; p50/p99 of
the client-measured round trip.

    python bench/serve_stacks.py [--requests 3000]
    python bench/serve_stacks.py --grpc [--seconds 5]

``--grpc``: the gRPC floor. Triton's ModelInfer answered with a fixed ModelInferResponse (no
model, no parsing) by grpc.aio on asyncio's loop and on uvloop, and by grpc's thread-pool server;
64 concurrent unary calls from a grpc.aio client in a second process for ``--seconds``; calls/s
and the server process's CPU per call (user + system, every thread: grpc's own included).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import multiprocessing as mp
import socket
import statistics
import time

BODY = json.dumps({"parameters": {"sequence_id": 7, "sequence_start": False},
                   "inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "FP32",
                               "data": [0.5]}]}).encode()
REPLY = json.dumps({"model_name": "m", "model_version": "1", "outputs": [
    {"name": "y", "shape": [1, 1, 1], "datatype": "FP32", "data": [0.25]}]}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_uvicorn(port: int, loop: str) -> None:
    import uvicorn

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        more = True
        while more:
            msg = await receive()
            more = msg.get("more_body", False)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": REPLY})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", http="httptools",
                lifespan="off", access_log=False, loop=loop)


def run_aiohttp(port: int, loop: str) -> None:
    from aiohttp import web

    if loop == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def infer(request):
        await request.read()
        return web.Response(body=REPLY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v2/models/m/infer", infer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def run_raw(port: int, loop: str) -> None:
    import httptools

    class Proto(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport
            self.p = httptools.HttpRequestParser(self)
            self.body = []

        def data_received(self, data):
            self.p.feed_data(data)

        def on_body(self, b):
            self.body.append(b)

        def on_message_complete(self):
            self.body = []
            self.t.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                         + str(len(REPLY)).encode() + b"\r\n\r\n" + REPLY)

    async def main():
        server = await asyncio.get_running_loop().create_server(Proto, "127.0.0.1", port)
        await server.serve_forever()

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def client(port: int, n: int) -> list[float]:
    for _ in range(200):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.connect()
            break
        except OSError:
            time.sleep(0.05)
    out = []
    headers = {"Content-Type": "application/json"}
    for i in range(n + 200):
        t = time.perf_counter()
        conn.request("POST", "/v2/models/m/infer", BODY, headers)
        r = conn.getresponse()
        r.read()
        if i >= 200:  # warm-up
            out.append(time.perf_counter() - t)
    return out


def _infer_response():
    from tritonclient.grpc import service_pb2 as pb

    resp = pb.ModelInferResponse(model_name="m", model_version="1")
    out = resp.outputs.add(name="y", datatype="FP32")
    out.shape.extend([1, 1, 1])
    resp.raw_output_contents.append(b"\0\0\x80>")
    return resp


def run_grpc(port: int, loop: str) -> None:
    import grpc
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    reply = _infer_response()
    if loop == "threads":
        from concurrent import futures

        class Sync(pb_grpc.GRPCInferenceServiceServicer):
            def ModelInfer(self, request, context):
                return reply

        server = grpc.server(futures.ThreadPoolExecutor(8))
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Sync(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        server.wait_for_termination()
        return

    class Aio(pb_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request, context):
            return reply

    async def main():
        server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Aio(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    if loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


def _grpc_client(port: int, seconds: float, conn) -> None:
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    async def go() -> tuple[int, float]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await channel.channel_ready()
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            req = pb.ModelInferRequest(model_name="m")
            req.parameters["sequence_id"].int64_param = 7
            t = req.inputs.add(name="x", datatype="FP32")
            t.shape.extend([1, 1, 1])
            req.raw_input_contents.append(b"\0\0\0?")
            calls = [0]
            conn.send("go")
            conn.recv()  # the parent has read the server's CPU
            stop = time.perf_counter() + seconds

            async def drive() -> None:
                while time.perf_counter() < stop:
                    await stub.ModelInfer(req)
                    calls[0] += 1

            start = time.perf_counter()
            await asyncio.gather(*(drive() for _ in range(64)))
            return calls[0], time.perf_counter() - start

    conn.send(asyncio.run(go()))


def _cpu(pid: int) -> float:
    import os

    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def grpc_floor(seconds: float) -> None:
    print(f"{'gRPC stack (fixed answer)':<28} {'loop':<8} {'calls/s':>8} {'CPU µs/call':>12}")
    ctx = mp.get_context("spawn")
    for loop in ("asyncio", "uvloop", "threads"):
        port = free_port()
        proc = ctx.Process(target=run_grpc, args=(port, loop), daemon=True)
        proc.start()
        parent, child = ctx.Pipe()
        cl = ctx.Process(target=_grpc_client, args=(port, seconds, child), daemon=True)
        cl.start()
        try:
            parent.recv()
            cpu0 = _cpu(proc.pid)
            parent.send("start")
            calls, took = parent.recv()
            used = _cpu(proc.pid) - cpu0
        finally:
            cl.join(10)
            proc.terminate()
            proc.join(5)
        name = "grpc.server + threads" if loop == "threads" else "grpc.aio"
        print(f"{name:<28} {loop if loop != 'threads' else '-':<8} {calls / took:8,.0f} "
              f"{used / max(calls, 1) * 1e6:12.0f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--grpc", action="store_true", help="the gRPC floor instead (see above)")
    ap.add_argument("--seconds", type=float, default=5.0, help="--grpc: seconds per stack")
    args = ap.parse_args()
    if args.grpc:
        grpc_floor(args.seconds)
        return
    print(f"{'stack':<28} {'loop':<8} {'p50 µs':>8} {'p99 µs':>8}")
    for (name, target), loop in itertools.product(
            (("uvicorn+httptools, ASGI", run_uvicorn), ("aiohttp", run_aiohttp),
             ("asyncio.Protocol+httptools", run_raw)), ("asyncio", "uvloop")):
        port = free_port()
        proc = mp.get_context("spawn").Process(target=target, args=(port, loop), daemon=True)
        proc.start()
        try:
            lat = sorted(client(port, args.requests))
        finally:
            proc.terminate()
            proc.join(5)
        p50 = statistics.median(lat) * 1e6
        p99 = lat[int(0.99 * len(lat))] * 1e6
        print(f"{name:<28} {loop:<8} {p50:8.0f} {p99:8.0f}")


if __name__ == "__main__":
    main()
