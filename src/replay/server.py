"""The replay server: WebSocket streams, REST and control endpoints on one port, plus the timers
that inject connection faults.

One asyncio task moves the :class:`~candlestack.replay.feed.Feed` clock and writes the frames due at each
tick to every open connection, all frames of a tick in one go per connection. Plain HTTP
requests are answered from ``process_request`` during what would be the WebSocket handshake,
which is how ``websockets`` lets one port serve both.

Control endpoints (for tests and demos)::

    POST /_replay/disconnect[?mode=abort]   close (or drop the TCP connection of) every client
    POST /_replay/shutdown                  send serverShutdown, then close, every client
    POST /_replay/malformed                 send one malformed frame to every client now
    POST /_replay/pause | /_replay/resume   stop / restart the market clock
    POST /_replay/start                     start the clock without waiting for a subscriber
    POST /_replay/rest-fault?mode=429|418|truncate|off[&count=N][&retry_after=S]
                                            the next N (default: all) REST answers get that fault
    POST /_replay/kline-fault?field=F|off[&symbol=S][&interval=I][&open_time=MS][&count=N]
                                            served klines get field F one unit off in the last place:
                                            the one opening at MS every time it is served, else the
                                            next N (default 1) served; GET it to see what was corrupted
    GET  /_replay/status                    counters (JSON)
    GET  /_replay/rest-log                  the last REST requests: wall time (ms), path, status
    GET  /_replay/trades?symbol=S           every trade id published so far for S (JSON list)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State

from candlestack.core.contract import StreamType
from candlestack.replay import rest
from candlestack.replay.events import encode_frame, server_shutdown_frame
from candlestack.replay.faults import (
    BANNED_BODY,
    RATE_LIMIT_BODY,
    FrameFaults,
    KlineFault,
    RestFaultError,
    RestFaults,
)
from candlestack.replay.feed import Feed
from candlestack.replay.model import InvalidStream, ReplayTrade
from candlestack.replay.streams import RequestError, Stream, is_websocket_path, parse_path, parse_request

log = logging.getLogger(__name__)

# A client whose unsent frames exceed this is dropped as a slow consumer (paced modes); in
# as-fast-as-possible mode the feed instead waits until every client is below the low mark.
SLOW_CONSUMER_BYTES = 32 * 1024 * 1024
BACKPRESSURE_HIGH_BYTES = 1024 * 1024
BACKPRESSURE_LOW_BYTES = 256 * 1024
# Close reasons must fit a control frame (123 bytes of UTF-8).
MAX_REASON = 120
# REST requests remembered for GET /_replay/rest-log.
REST_LOG_SIZE = 1000
# Binance's request weight per endpoint (spot API docs), reported in X-MBX-USED-WEIGHT-1M.
REST_WEIGHTS = {"/api/v3/aggTrades": 4, "/api/v3/historicalTrades": 25, "/api/v3/trades": 25, "/api/v3/klines": 2}


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """How the server listens, paces its ticks and injects faults; ``None`` disables a feature.

    Args:
        host: address to listen on.
        port: TCP port; 0 picks a free one (logged as ``port=`` in the "listening" line).
        start_immediately: start the clock at once instead of at the first subscription.
        ping_interval: seconds between server pings (Binance: 180).
        ping_timeout: seconds to wait for a pong before dropping the client.
        max_connection_age: close a connection this many seconds after it opened (Binance: 24 h).
        disconnect_every: close every client connection this often, in seconds, once the clock runs.
        disconnect_abort: drop the TCP connection instead of a WebSocket close.
        malformed_every: send a malformed frame after every N trade frames of a connection.
        duplicate_every: send every Nth trade frame of a connection twice.
        shutdown_after: send ``serverShutdown`` to a connection this many seconds after it opened,
            then close it after ``shutdown_grace`` seconds.
        rest_faults: the REST fault switch at start (see :class:`~candlestack.replay.faults.RestFaults`).
        progress_every: seconds between progress log lines.
        tick: the shortest wait between two publishing rounds; trades due meanwhile go together.
        batch_limit: most trades published in one round.
    """

    host: str = "127.0.0.1"
    port: int = 9443
    start_immediately: bool = False
    ping_interval: float | None = 180.0
    ping_timeout: float | None = 60.0
    max_connection_age: float | None = 86_400.0
    disconnect_every: float | None = None
    disconnect_abort: bool = False
    malformed_every: int | None = None
    duplicate_every: int | None = None
    shutdown_after: float | None = None
    shutdown_grace: float = 0.5
    rest_faults: RestFaults = dataclasses.field(default_factory=RestFaults)
    progress_every: float | None = 5.0
    tick: float = 0.005
    batch_limit: int = 2000


class Client:
    """One WebSocket connection and what it listens to."""

    __slots__ = ("combined", "conn", "faults", "number", "streams", "timers")

    def __init__(self, conn: ServerConnection, number: int, *, combined: bool, faults: FrameFaults) -> None:
        self.conn = conn
        self.number = number
        self.combined = combined
        self.faults = faults
        self.streams: dict[str, list[Stream]] = {}
        self.timers: list[asyncio.TimerHandle] = []

    def subscribe(self, streams: tuple[Stream, ...]) -> None:
        for stream in streams:
            listening = self.streams.setdefault(stream.symbol, [])
            if stream not in listening:
                listening.append(stream)

    def unsubscribe(self, streams: tuple[Stream, ...]) -> None:
        for stream in streams:
            listening = self.streams.get(stream.symbol, [])
            if stream in listening:
                listening.remove(stream)
            if not listening:
                self.streams.pop(stream.symbol, None)

    def names(self) -> list[str]:
        return [stream.name for streams in self.streams.values() for stream in streams]

    def first_stream(self) -> Stream | None:
        return next((streams[0] for streams in self.streams.values() if streams), None)

    @property
    def open(self) -> bool:
        return self.conn.protocol.state is State.OPEN

    def buffered(self) -> int:
        return self.conn.transport.get_write_buffer_size()

    def write(self, frames: list[bytes]) -> bool:
        """Queue ``frames`` as text frames and hand them to the socket in one write.

        Returns False when the connection is no longer open (nothing is sent).
        """
        if not self.open:
            return False
        protocol = self.conn.protocol
        for frame in frames:
            protocol.send_text(frame)
        chunks = protocol.data_to_send()
        # An empty chunk would mean "half-close"; only send_text ran on an open connection, so
        # there is none, but let websockets' own writer handle that case if it ever happens.
        if all(chunks):
            self.conn.transport.writelines(chunks)
        else:  # pragma: no cover - defensive
            for chunk in chunks:
                if chunk:
                    self.conn.transport.write(chunk)
                else:
                    self.conn.transport.close()
        return True


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ReplayServer:
    """Serves one :class:`Feed` to any number of clients until :meth:`stop`."""

    def __init__(
        self,
        feed: Feed,
        options: ServerOptions,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self.feed = feed
        self.options = options
        self._clock = clock
        self._wall_ms = wall_ms
        self.clients: set[Client] = set()
        self.connections_total = 0
        self.frames_sent = 0
        self.disconnects = 0
        self.shutdowns_sent = 0
        self.slow_consumers = 0
        # Frame counters of connections already gone (those of open ones are in their Client).
        self._retired = FrameFaults()
        self.rest_faults = dataclasses.replace(options.rest_faults)
        self.kline_fault = KlineFault()
        self.rest_log: deque[dict[str, Any]] = deque(maxlen=REST_LOG_SIZE)
        self._weight_minute = -1
        self._weight_used = 0
        self.port: int | None = None
        self._wake = asyncio.Event()
        self._clock_started = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started_at: float | None = None
        self._failure: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self, *, install_signal_handlers: bool = True) -> int:
        """Serve until SIGTERM/SIGINT or :meth:`stop`; returns the exit status."""
        loop = asyncio.get_running_loop()
        if install_signal_handlers:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, self.stop)
        # websockets logs every plain HTTP answer as a "rejected" handshake at INFO.
        ws_logger = logging.getLogger("candlestack.replay.websockets")
        ws_logger.setLevel(max(logging.WARNING, log.getEffectiveLevel()))
        options = self.options
        async with serve(
            self._handler,
            options.host,
            options.port,
            process_request=self._process_request,
            compression=None,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            close_timeout=2,
            max_size=64 * 1024,
            logger=ws_logger,
        ) as server:
            self.port = server.sockets[0].getsockname()[1]
            log.info(
                "replay feed listening",
                extra={"host": options.host, "port": self.port, "pace": self.feed.pace.describe(),
                       "total": self.feed.total, "symbols": ",".join(sorted(self.feed.history))},
            )
            if options.start_immediately:
                self._start_clock("immediately")
            self._spawn(self._publish_loop(), critical=True)
            if options.disconnect_every:
                self._spawn(self._disconnect_loop(options.disconnect_every))
            if options.progress_every:
                self._spawn(self._progress_loop(options.progress_every))
            await self._stopping.wait()
            log.info("replay feed stopping", extra={"connections": len(self.clients)})
            for task in list(self._tasks):
                task.cancel()
            await self._close_server(server)
        if self._failure is not None:
            log.error("replay feed failed", exc_info=self._failure)
            return 1
        log.info("replay feed stopped", extra={"published": self.feed.published})
        return 0

    async def _close_server(self, server: Server) -> None:
        server.close(code=CloseCode.GOING_AWAY, reason="replay feed shutting down")
        await server.wait_closed()

    def stop(self) -> None:
        self._stopping.set()

    def _spawn(self, coroutine: Coroutine[Any, Any, Any], *, critical: bool = False) -> None:
        """Run ``coroutine`` as a task; if a ``critical`` one fails, the server stops with status 1."""
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._task_done(done, critical=critical))

    def _task_done(self, task: asyncio.Task[Any], *, critical: bool) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None:
            return
        if critical:
            self._failure = exc
            self.stop()
        else:
            log.warning("background task failed", exc_info=exc)

    def _start_clock(self, why: str) -> None:
        if self.feed.started:
            return
        self.feed.start(self._clock(), self._wall_ms())
        self._started_at = self._clock()
        self._clock_started.set()
        self._wake.set()
        log.info("market clock started", extra={"trigger": why})

    # -- WebSocket connections -----------------------------------------------------------

    async def _handler(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        try:
            combined, streams = parse_path(conn.request.path)
        except InvalidStream as exc:
            log.info("refusing stream", extra={"path": conn.request.path, "reason": exc.reason})
            await conn.close(CloseCode.POLICY_VIOLATION, str(exc)[:MAX_REASON])
            return
        self.connections_total += 1
        client = Client(
            conn,
            self.connections_total,
            combined=combined,
            faults=FrameFaults(duplicate_every=self.options.duplicate_every,
                               malformed_every=self.options.malformed_every),
        )
        client.subscribe(streams)
        self.clients.add(client)
        loop = asyncio.get_running_loop()
        if self.options.max_connection_age:
            client.timers.append(loop.call_later(
                self.options.max_connection_age, self._close_later, client, "max connection age reached"))
        if self.options.shutdown_after:
            client.timers.append(loop.call_later(self.options.shutdown_after, self.announce_shutdown, [client]))
        log.info("client connected", extra={"client": client.number, "path": conn.request.path,
                                             "connections": len(self.clients)})
        if streams:
            self._start_clock("first subscription")
        try:
            async for message in conn:
                self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(client)
            self._retired.trade_frames += client.faults.trade_frames
            self._retired.duplicates += client.faults.duplicates
            self._retired.malformed += client.faults.malformed
            for timer in client.timers:
                timer.cancel()
            log.info("client disconnected", extra={
                "client": client.number, "code": conn.close_code, "trade_frames": client.faults.trade_frames,
                "connections": len(self.clients)})

    def _on_message(self, client: Client, message: str | bytes) -> None:
        """Answer a live SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS request."""
        try:
            request = parse_request(message)
        except RequestError as exc:
            client.write([json.dumps(exc.body).encode()])
            return
        result: list[str] | None = None
        if request.method == "SUBSCRIBE":
            client.subscribe(request.streams)
            if request.streams:
                self._start_clock("first subscription")
        elif request.method == "UNSUBSCRIBE":
            client.unsubscribe(request.streams)
        else:
            result = client.names()
        client.write([json.dumps({"result": result, "id": request.id}).encode()])

    def _close_later(self, client: Client, reason: str) -> None:
        if client.open:
            self._spawn(client.conn.close(CloseCode.GOING_AWAY, reason))

    # -- publishing ----------------------------------------------------------------------

    async def _publish_loop(self) -> None:
        feed, options = self.feed, self.options
        while True:
            self._wake.clear()
            batch = feed.take_due(self._clock(), options.batch_limit)
            if batch:
                self._publish(batch)
            if feed.done:
                self._log_done()
                return
            wait = feed.wait_time(self._clock())
            if wait is None:
                await self._wake.wait()
            elif feed.pace.asap:
                await self._backpressure()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(max(wait, options.tick), 1.0))

    async def _backpressure(self) -> None:
        """As fast as possible means as fast as the slowest reader: wait for write buffers."""
        await asyncio.sleep(0)
        if any(client.buffered() > BACKPRESSURE_HIGH_BYTES for client in self.clients):
            while any(client.open and client.buffered() > BACKPRESSURE_LOW_BYTES for client in self.clients):
                await asyncio.sleep(0.001)

    def _publish(self, batch: list[ReplayTrade]) -> None:
        """Write the frames of ``batch`` to every client that listens to their symbols."""
        encoded: dict[tuple[int, StreamType, bool], bytes] = {}
        for client in tuple(self.clients):
            if not client.streams or not client.open:
                continue
            frames: list[bytes] = []
            for position, trade in enumerate(batch):
                for stream in client.streams.get(trade.symbol, ()):
                    key = (position, stream.kind, client.combined)
                    frame = encoded.get(key)
                    if frame is None:
                        frame = encoded[key] = encode_frame(
                            trade, stream.kind, stream.name if client.combined else None)
                    client.faults.add(frames, frame, stream, combined=client.combined)
            if frames and client.write(frames):
                self.frames_sent += len(frames)
                if not self.feed.pace.asap and client.buffered() > SLOW_CONSUMER_BYTES:
                    log.warning("dropping slow consumer", extra={"client": client.number,
                                                                 "buffered": client.buffered()})
                    self.slow_consumers += 1
                    client.conn.transport.abort()

    def _log_done(self) -> None:
        elapsed = self._clock() - (self._started_at or self._clock())
        log.info("replay done: source exhausted", extra={
            "published": self.feed.published, "seconds": round(elapsed, 3),
            "rate": round(self.feed.published / elapsed) if elapsed > 0 else None})

    async def _progress_loop(self, every: float) -> None:
        last_count, last_time = 0, self._clock()
        while not self.feed.done:
            await asyncio.sleep(every)
            now = self._clock()
            if self.feed.started and not self.feed.done:
                rate = (self.feed.published - last_count) / (now - last_time)
                log.info("progress", extra={
                    "published": self.feed.published, "total": self.feed.total, "rate": round(rate, 1),
                    "connections": len(self.clients), "paused": self.feed.paused})
            last_count, last_time = self.feed.published, now

    # -- injected faults -----------------------------------------------------------------

    async def _disconnect_loop(self, every: float) -> None:
        await self._clock_started.wait()
        while True:
            await asyncio.sleep(every)
            self.disconnect_all(abort=self.options.disconnect_abort)

    def disconnect_all(self, *, abort: bool = False) -> int:
        """Close every client connection (or drop its TCP connection); the clock keeps running."""
        clients = [client for client in self.clients if client.open]
        for client in clients:
            if abort:
                client.conn.transport.abort()
            else:
                self._spawn(client.conn.close(CloseCode.GOING_AWAY, "replay: injected disconnect"))
        self.disconnects += len(clients)
        log.log(logging.INFO if clients else logging.DEBUG, "injected disconnect",
                extra={"clients": len(clients), "abort": abort})
        return len(clients)

    def announce_shutdown(self, clients: list[Client]) -> int:
        """Send ``serverShutdown`` to ``clients``, then close them after the grace period."""
        loop = asyncio.get_running_loop()
        sent = 0
        for client in clients:
            if client.write([server_shutdown_frame(self._wall_ms(), combined=client.combined)]):
                sent += 1
                self.frames_sent += 1
                client.timers.append(loop.call_later(
                    self.options.shutdown_grace, self._close_later, client, "replay: server shutdown"))
        self.shutdowns_sent += sent
        log.info("sent serverShutdown", extra={"clients": sent})
        return sent

    def send_malformed(self) -> int:
        sent = 0
        for client in list(self.clients):
            if client.write([client.faults.junk(client.first_stream(), combined=client.combined)]):
                sent += 1
                self.frames_sent += 1
        return sent

    # -- plain HTTP ----------------------------------------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = request.path
        if is_websocket_path(path):
            if request.method != "GET":
                return _json_response(conn, 405, {"code": -1, "msg": "WebSocket endpoints take GET."})
            return None  # go on with the WebSocket handshake
        if rest.is_rest_path(path):
            return self._rest(conn, request.method, path)
        if urlsplit(path).path.startswith("/_replay/"):
            status, body = self._control(request.method, path)
            return _json_response(conn, status, body)
        return _json_response(conn, 404, {"code": -1, "msg": f"Unknown endpoint {urlsplit(path).path}."})

    def _rest(self, conn: ServerConnection, method: str, path: str) -> Response:
        """Answer ``/api/...`` as Binance would, or with the fault the switch asks for."""
        now_ms = self._wall_ms()
        used = self._spend_weight(urlsplit(path).path.rstrip("/"), now_ms)
        fault = self.rest_faults.take()
        if fault in ("429", "418"):
            response = _json_response(conn, int(fault), RATE_LIMIT_BODY if fault == "429" else BANNED_BODY)
            response.headers["Retry-After"] = str(self.rest_faults.retry_after)
        else:
            answer = rest.handle(self.feed, method, path, now_ms=now_ms)
            if answer.status == 200 and urlsplit(path).path.rstrip("/") == "/api/v3/klines":
                query = {key: values[0] for key, values in parse_qs(urlsplit(path).query).items()}
                self.kline_fault.apply(query.get("symbol", ""), query.get("interval", ""), answer.body)
            response = _json_response(conn, answer.status, answer.body)
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        if fault == "truncate":
            # Content-Length still announces the whole body: the client sees the answer end early.
            response = dataclasses.replace(response, body=response.body[: len(response.body) // 2])
        self.rest_log.append({"t": now_ms, "path": path, "status": response.status_code, "fault": fault})
        return response

    def _spend_weight(self, route: str, now_ms: int) -> int:
        minute = now_ms // 60_000
        if minute != self._weight_minute:
            self._weight_minute, self._weight_used = minute, 0
        self._weight_used += REST_WEIGHTS.get(route, 1)
        return self._weight_used

    def _set_rest_fault(self, query: dict[str, str]) -> tuple[int, Any]:
        try:
            self.rest_faults = RestFaults.parse(query.get("mode", ""), query.get("count"), query.get("retry_after"))
        except RestFaultError as exc:
            return 400, {"code": -1100, "msg": str(exc)}
        log.info("REST fault switched", extra=self.rest_faults.describe())
        return 200, self.rest_faults.describe()

    def _set_kline_fault(self, query: dict[str, str]) -> tuple[int, Any]:
        try:
            self.kline_fault = KlineFault.parse(query)
        except RestFaultError as exc:
            return 400, {"code": -1100, "msg": str(exc)}
        log.info("kline fault switched", extra=self.kline_fault.describe())
        return 200, self.kline_fault.describe()

    def _control(self, method: str, path: str) -> tuple[int, Any]:
        parts = urlsplit(path)
        action = parts.path.removeprefix("/_replay/").rstrip("/")
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        getters: dict[str, Callable[[], tuple[int, Any]]] = {
            "status": lambda: (200, self.status()),
            "trades": lambda: self._trade_ids(query.get("symbol", "")),
            "rest-log": lambda: (200, list(self.rest_log)),
        }
        posts: dict[str, Callable[[], Any]] = {
            "disconnect": lambda: {"disconnected": self.disconnect_all(abort=query.get("mode") == "abort")},
            "shutdown": lambda: {"shutdown": self.announce_shutdown(list(self.clients))},
            "malformed": lambda: {"sent": self.send_malformed()},
            "pause": self._pause,
            "resume": self._resume,
            "start": self._start_on_request,
        }
        if action == "kline-fault":
            if method == "GET":
                return 200, self.kline_fault.describe()
            return self._set_kline_fault(query) if method == "POST" else (405, {"code": -1, "msg": "use POST"})
        if action == "rest-fault":
            return self._set_rest_fault(query) if method == "POST" else (405, {"code": -1, "msg": "use POST"})
        if action in getters:
            return getters[action]() if method == "GET" else (405, {"code": -1, "msg": "use GET"})
        if action in posts:
            return (200, posts[action]()) if method == "POST" else (405, {"code": -1, "msg": "use POST"})
        return 404, {"code": -1, "msg": f"Unknown control endpoint {parts.path}."}

    def _pause(self) -> dict[str, Any]:
        self.feed.pause(self._clock())
        self._wake.set()
        log.info("market clock paused", extra={"published": self.feed.published})
        return {"paused": True}

    def _resume(self) -> dict[str, Any]:
        self.feed.resume(self._clock())
        self._wake.set()
        log.info("market clock resumed", extra={"published": self.feed.published})
        return {"paused": False}

    def _start_on_request(self) -> dict[str, Any]:
        self._start_clock("control request")
        return {"started": True}

    def _trade_ids(self, symbol: str) -> tuple[int, Any]:
        history = self.feed.history.get(symbol)
        if history is None:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        return 200, history.ids()

    def status(self) -> dict[str, Any]:
        feed = self.feed
        return {
            "published": feed.published,
            "total": feed.total,
            "done": feed.done,
            "started": feed.started,
            "paused": feed.paused,
            "pace": feed.pace.describe(),
            "connections": len(self.clients),
            "connections_total": self.connections_total,
            "symbols": {
                symbol: {"first_id": history.first_id, "last_published_id": history.last_id,
                         "published": len(history) + history.dropped}
                for symbol, history in sorted(feed.history.items())
            },
            "frames_sent": self.frames_sent,
            "trade_frames": self._retired.trade_frames + sum(c.faults.trade_frames for c in self.clients),
            "duplicates_sent": self._retired.duplicates + sum(c.faults.duplicates for c in self.clients),
            "malformed_sent": self._retired.malformed + sum(c.faults.malformed for c in self.clients),
            "disconnects": self.disconnects,
            "shutdowns_sent": self.shutdowns_sent,
            "slow_consumers_dropped": self.slow_consumers,
            "rest_fault": self.rest_faults.describe(),
            "kline_fault": self.kline_fault.describe(),
            "rest_requests": len(self.rest_log),
        }


def _json_response(conn: ServerConnection, status: int, body: Any) -> Response:
    response = conn.respond(HTTPStatus(status), json.dumps(body, separators=(",", ":")))
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json;charset=UTF-8"
    return response


async def serve_feed(feed: Feed, options: ServerOptions) -> int:
    """Run a :class:`ReplayServer` until a signal; the exit status of ``candlestack replay``."""
    try:
        return await ReplayServer(feed, options).run()
    except OSError as exc:
        log.error("cannot listen", extra={"host": options.host, "port": options.port, "error": str(exc)})
        return 1

