"""Which HTTP server stack for `rnnstream serve`? Loopback round trips of a ~250-byte KServe-v2
JSON infer request answered with a fixed ~200-byte JSON body (no model: the stack's own cost).

Candidates: uvicorn (httptools parser) + a bare ASGI callable; aiohttp's web server; a raw
asyncio.Protocol with httptools' parser; each on asyncio's own event loop and on uvloop. Client:
one keep-alive http.client connection, in a second process, N sequential requests; p50/p99 of
the client-measured round trip.

    python bench/serve_stacks.py [--requests 3000]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
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
