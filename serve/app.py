"""The server: models, both front ends, housekeeping and a graceful stop, on one event loop.

Everything runs on one asyncio loop in one thread: the HTTP protocol, grpc.aio, the batching
rounds of each :class:`~rnnstream.serve.sequences.ModelService`, eviction and snapshots. A pool
step runs inline on the loop (tens of microseconds): handing it to a thread would cost more
than it takes.

Stop (SIGTERM/SIGINT, or :meth:`Server.stop`): stop accepting connections and new requests
(503 / UNAVAILABLE), finish every queued request, save every sequence (``--state``), close.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from typing import Any

from rnnstream.runtime import ConfigError, LiveConfig, RnnStreamError

from .errors import ServeError
from .http import JSON, HttpProtocol, metadata_body
from .metrics import Metrics
from .sequences import DURABILITY, Limits, ModelService

__all__ = ["ServeConfig", "Server", "exposure_warning", "state_paths"]

log = logging.getLogger("rnnstream.serve")

EXTENSIONS = ["binary_tensor_data", "sequence", "sequence(string_id)"]


@dataclass
class ServeConfig:
    models: dict[str, str]  # name -> .onnx path
    host: str = "127.0.0.1"
    http_port: int | None = 8000
    grpc_port: int | None = 8001
    state: str | None = None
    save_every: float = 30.0
    max_request_bytes: int = 16 << 20
    limits: Limits = field(default_factory=Limits)
    # prediction intervals (outputs lower/upper) and live scores: live=LiveConfig(coverage=...),
    # or the shorthands coverage= and season= (not both); checked once, by LiveConfig
    coverage: float | None = None
    season: int | None = None
    live: LiveConfig | None = None
    # with state: "log" answers a request only once its inputs are in the fsynced log (nothing
    # answered is lost); "snapshot" only saves every save_every seconds and at stop
    durability: str = "log"
    # clients must send one of these (HTTP "Authorization: Bearer T", gRPC metadata
    # "authorization: Bearer T"); empty: no authentication
    tokens: tuple[str, ...] = ()
    tls_cert: str | None = None  # PEM certificate chain and key: HTTPS and gRPC over TLS
    tls_key: str | None = None

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("ServeConfig: tls_cert and tls_key go together (a certificate "
                             "and its private key, PEM files)")
        if any(not t or t != t.strip() or not t.isprintable() for t in self.tokens):
            raise ConfigError("ServeConfig: a token is empty or holds spaces or control "
                             "characters")
        if self.durability not in DURABILITY:
            raise ConfigError(f"ServeConfig: durability={self.durability!r}; expected one of "
                             f"{list(DURABILITY)}")
        live = self.live
        if live is not None and (self.coverage, self.season) in ((None, None),
                                                                 (live.coverage, live.season)):
            # the shorthands mirror live (as dataclasses.replace passes them back): agreed
            live = LiveConfig.resolve(live, None, None, None, "ServeConfig")
        else:
            live = LiveConfig.resolve(live, self.coverage, self.season, None, "ServeConfig")
        self.live, self.coverage, self.season = live, live.coverage, live.season


def exposure_warning(host: str, tokens: tuple[str, ...]) -> str | None:
    """What to say when the server listens beyond this machine with no token (None if it
    does not)."""
    if tokens:
        return None
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        loopback = False
    if loopback:
        return None
    return (f"warning: listening on {host} without --token-file: anyone who can reach this "
            "address can read and change every sequence; give --token-file FILE (and "
            "--tls-cert/--tls-key), or --host 127.0.0.1")


def state_paths(state: str | None, names: list[str]) -> dict[str, str]:
    """Snapshot file per model: ``state`` itself for one model, ``<stem>.<name><ext>`` for
    several (``pool.npz`` -> ``pool.a.npz``, ``pool.b.npz``)."""
    if not state:
        return {}
    if len(names) == 1:
        return {names[0]: state}
    stem, ext = os.path.splitext(state)
    return {n: f"{stem}.{n}{ext or '.npz'}" for n in names}


class Server:
    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.services = {name: ModelService(name, path, config.limits, self.metrics,
                                            live=config.live)
                         for name, path in config.models.items()}
        self.metrics.watch_live(lambda: {(n, ): s.live for n, s in self.services.items()})
        if config.coverage is not None:
            self.metrics.watch_scores(lambda: {n: s.live_summary()
                                               for n, s in self.services.items()})
        self.max_request_bytes = config.max_request_bytes
        self.connections: set[HttpProtocol] = set()
        self.ready = False
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._http: asyncio.base_events.Server | None = None
        self._grpc: Any = None
        self._tasks: list[asyncio.Task] = []
        self._stopped = asyncio.Event()
        self._stopping = False
        self._paths = state_paths(config.state, list(self.services))
        self._tokens = [t.encode() for t in config.tokens]

    # -- lookup -----------------------------------------------------------------------------------
    def model(self, name: str, version: str = "") -> ModelService:
        service = self.services.get(name)
        if service is None:
            raise ServeError("not_found", f"unknown model {name!r}; this server has "
                             f"{sorted(self.services)}")
        if version not in ("", "1"):
            raise ServeError("not_found", f"model {name!r} has no version {version!r}; its "
                             "only version is 1")
        if self._stopping:
            raise ServeError("unavailable", "the server is shutting down; retry on another "
                             "instance or after the restart")
        return service

    def authorized(self, header: bytes | str | None) -> bool:
        """Whether an Authorization value (``Bearer <token>``) carries one of the tokens;
        every token is compared in constant time (hmac.compare_digest)."""
        if not self._tokens:
            return True
        if header is None:
            return False
        # a str is taken as UTF-8, as the tokens are (the HTTP front end passes the raw bytes)
        value = header.encode("utf-8", "surrogatepass") if isinstance(header, str) else header
        scheme, _, given = value.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        given = given.strip()
        ok = False
        for token in self._tokens:
            ok |= hmac.compare_digest(given, token)
        return ok

    def count_error(self, model: str, protocol: str, exc: ServeError) -> None:
        self.metrics.errors.inc(model if model in self.services else "", protocol, exc.kind)
        log.info("request refused", extra={"event": "refused", "model": model,
                                           "protocol": protocol, "kind": exc.kind,
                                           "error": str(exc)})

    def server_metadata(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("rnnstream")
        except PackageNotFoundError:
            v = "unknown"
        return {"name": "rnnstream", "version": v, "extensions": EXTENSIONS}

    def get(self, parts: list[str]) -> tuple[int, bytes, bytes]:
        """GET routes: health, metadata, readiness, metrics."""
        if parts == ["metrics"]:
            return 200, self.metrics.render().encode(), b"text/plain; version=0.0.4"
        if parts == ["v2", "health", "live"]:
            return 200, b"", JSON
        if parts == ["v2", "health", "ready"]:
            return (200 if self.ready else 503), b"", JSON
        if parts == ["v2"]:
            return 200, metadata_body(self.server_metadata()), JSON
        if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
            rest = parts[3:]
            version = ""
            if len(rest) >= 2 and rest[0] == "versions":
                version, rest = rest[1], rest[2:]
            if rest == ["ready"]:
                try:
                    self.model(parts[2], version)
                except ServeError as exc:
                    return exc.http_status, metadata_body({"error": str(exc)}), JSON
                return 200, b"", JSON
            if not rest:
                return 200, metadata_body(self.model(parts[2], version).metadata()), JSON
        raise ServeError("not_found", f"no such path /{'/'.join(parts)}")

    # -- life cycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for name, path in self._paths.items():
            n = self.services[name].load(path, self.config.durability)
            if n:
                log.info("state restored", extra={"event": "restored", "model": name,
                                                   "path": path, "sequences": n})
        cfg = self.config
        if cfg.http_port is not None:
            self._http = await loop.create_server(lambda: HttpProtocol(self), cfg.host,
                                                  cfg.http_port, ssl=self._ssl_context())
            self.http_port = self._http.sockets[0].getsockname()[1]
        if cfg.grpc_port is not None:
            await self._start_grpc()
        self._tasks = [asyncio.ensure_future(self._evict_loop())]
        if self._paths and cfg.save_every > 0:
            self._tasks.append(asyncio.ensure_future(self._save_loop()))
        self.ready = True
        warning = exposure_warning(cfg.host, cfg.tokens)
        if warning:
            log.warning(warning, extra={"event": "exposed", "host": cfg.host})
        log.info("serving", extra={"event": "serving", "models": sorted(self.services),
                                   "http_port": self.http_port, "grpc_port": self.grpc_port,
                                   "tls": cfg.tls_cert is not None,
                                   "auth": bool(cfg.tokens)})

    def _ssl_context(self) -> Any:
        cfg = self.config
        if cfg.tls_cert is None or cfg.tls_key is None:
            return None
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # TLS 1.2+, the default ciphers
        context.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        return context

    async def _start_grpc(self) -> None:
        import grpc

        from .grpc_service import InferenceService, TokenInterceptor, add_to_server

        size = self.max_request_bytes
        cfg = self.config
        # so_reuseport 0: grpc's default lets a second server bind a port in use, silently
        self._grpc = grpc.aio.server(
            options=[("grpc.max_receive_message_length", size),
                     ("grpc.max_send_message_length", size), ("grpc.so_reuseport", 0)],
            interceptors=[TokenInterceptor(self)] if self._tokens else None)
        add_to_server(InferenceService(self), self._grpc)
        address = f"{cfg.host}:{cfg.grpc_port}"
        try:
            if cfg.tls_cert is not None and cfg.tls_key is not None:
                with open(cfg.tls_key, "rb") as key, open(cfg.tls_cert, "rb") as cert:
                    credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
                port = self._grpc.add_secure_port(address, credentials)
            else:
                port = self._grpc.add_insecure_port(address)
        except RuntimeError:  # grpc's way of saying the bind failed
            port = 0
        if port == 0:
            raise OSError(f"cannot listen for gRPC on {address} (in use? --grpc-port 0 picks a "
                          "free port, -1 turns gRPC off)")
        self.grpc_port = port
        await self._grpc.start()

    async def _evict_loop(self) -> None:
        idle = self.config.limits.idle_timeout_s
        if idle is None:
            return
        period = max(0.05, min(idle / 4, 10.0))
        while True:
            await asyncio.sleep(period)
            for service in self.services.values():
                service.evict_idle()

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.save_every)
            self.save()

    def save(self) -> bool:
        """Snapshot every model's sequences (between rounds: each one is consistent)."""
        ok = True
        for name, path in self._paths.items():
            started = time.perf_counter()
            try:
                self.services[name].save(path)
            except (OSError, RnnStreamError) as exc:
                log.error("save failed", extra={"event": "save_failed", "model": name,
                                                "path": path, "error": str(exc)})
                ok = False
                continue
            log.info("state saved", extra={"event": "saved", "model": name, "path": path,
                                           "sequences": self.services[name].live,
                                           "ms": round((time.perf_counter() - started) * 1e3,
                                                       2)})
        return ok

    async def stop(self) -> None:
        """Graceful stop: refuse new work, finish queued requests, save, close."""
        if self._stopping:
            return
        self._stopping = True
        self.ready = False
        log.info("stopping", extra={"event": "stopping"})
        if self._http is not None:
            self._http.close()
        for service in self.services.values():
            await service.drained()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        self.save()
        for conn in list(self.connections):
            conn.close()
        if self._http is not None:
            await self._http.wait_closed()
        for service in self.services.values():
            service.close()
        log.info("stopped", extra={"event": "stopped"})
        self._stopped.set()

    async def serve_until_signal(self) -> None:
        """start(), then stop() on SIGTERM or SIGINT. The handlers are installed before
        start(), so a signal that arrives as soon as the "serving" line is logged (or while
        the state is restored) still stops the server cleanly, once start() is done."""
        loop = asyncio.get_running_loop()
        asked = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, asked.set)
        try:
            await self.start()
            signalled = asyncio.ensure_future(asked.wait())
            stopped = asyncio.ensure_future(self._stopped.wait())
            await asyncio.wait((signalled, stopped), return_when=asyncio.FIRST_COMPLETED)
            for task in (signalled, stopped):
                task.cancel()
            if asked.is_set() and not self._stopped.is_set():
                await self.stop()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
