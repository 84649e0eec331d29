"""The simulator's WebSocket server: one port, a path per exchange, an HTTP control endpoint.

Paths: `/binance/stream?streams=btcusdt@trade/...` (combined stream, or SUBSCRIBE messages),
`/binance/ws` (raw stream, SUBSCRIBE messages), `/kraken/v2`, `/coinbase`; `/metrics`;
`/control/<fault>?exchange=..` (any method): `disconnect[&mode=close|abort]`, `stall?seconds=`,
`duplicate?count=`, `malformed?count=`, `oversize?bytes=`, `rate?value=`, and `state`.
Each exchange has one hub that makes (or replays) the market; every connection renders the
hub's trades in its own protocol, for its own subscriptions, with its own sequence numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from prometheus_client import generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from services.common.instruments import EXCHANGES, Instrument
from services.common.raw import KIND_FRAME
from services.feed.capture import read_capture
from services.feed.simulator import metrics, wire
from services.feed.simulator.market import SimTrade, SyntheticMarket

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 200_000  # queued items per connection before it counts as a slow client
HEARTBEAT_S = 1.0
CATCH_UP_S = 0.5  # the most market time one synthetic tick makes up for after a scheduling delay


@dataclass(eq=False)
class SimConnection:
    ws: ServerConnection
    exchange: str
    path: str
    combined: bool = True
    symbols: set[str] = field(default_factory=set)
    received: list[str] = field(default_factory=list)  # every text message the client sent
    sequence: int = 0
    sent_frames: int = 0
    stalled_until: float = 0.0
    duplicate_left: int = 0
    heartbeats: bool = False
    sent: list[str] | None = None  # every frame sent, when the simulator keeps them (tests)
    outbox: asyncio.Queue = field(default_factory=asyncio.Queue)
    heartbeat_task: asyncio.Task | None = None

    def offer(self, item: tuple) -> bool:
        if self.outbox.qsize() >= OUTBOX_LIMIT:
            return False
        self.outbox.put_nowait(item)
        return True


class Hub:
    """The market of one exchange and the connections that watch it."""

    def __init__(self, exchange: str, instruments: list[Instrument]) -> None:
        self.exchange = exchange
        self.instruments = {inst.native: inst for inst in instruments}
        self.connections: set[SimConnection] = set()
        self.recent: dict[str, deque[SimTrade]] = defaultdict(lambda: deque(maxlen=20))
        self.rate = 0.0
        self.trades_made = 0

    def broadcast(self, item: tuple) -> None:
        for conn in list(self.connections):
            if not conn.offer(item):
                metrics.SLOW_CLIENTS.labels(self.exchange).inc()
                log.warning("%s: closing a connection that reads too slowly", self.exchange)
                self.connections.discard(conn)
                asyncio.get_running_loop().create_task(conn.ws.close(1008, "slow consumer"))

    async def run_synthetic(self, market: SyntheticMarket, rate: float, tick: float = 0.01) -> None:
        self.rate = rate
        carry = 0.0
        last = time.monotonic()
        max_dt = max(4 * tick, CATCH_UP_S)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            # At most max_dt's worth at once: a simulator that was not scheduled for a moment catches
            # up, an overloaded one trades slower instead of spiralling into ever larger batches
            # (the delivered rate is what it really sent).
            dt, last = min(now - last, max_dt), now
            if not self.connections:
                carry = 0.0
                continue
            expected = self.rate * dt * market.rate_factor(dt) + carry
            count = int(expected)
            carry = expected - count
            if not count:
                continue
            trades = market.trades(count, time.time_ns())
            self.trades_made += count
            for trade in trades:
                self.recent[trade.native].append(trade)
            self.broadcast(("trades", trades))

    async def run_capture(
        self, frames: list[tuple[int, str]], start_mono: float, first_ns: int, shift_ns: int, speed: float
    ) -> None:
        for received_at, text in frames:
            due = start_mono + (received_at - first_ns) / 1e9 / speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.broadcast(("capture", wire.retime(text, shift_ns)))
        log.info("%s: the capture is over (%d frames); heartbeats go on", self.exchange, len(frames))


class Simulator:
    def __init__(
        self,
        instruments: Iterable[Instrument],
        seed: int = 7,
        rate: float = 20.0,
        capture: str | None = None,
        speed: float = 1.0,
        keep_sent: bool = False,
        bursts: bool = True,
    ) -> None:
        by_exchange: dict[str, list[Instrument]] = defaultdict(list)
        for inst in instruments:
            by_exchange[inst.exchange].append(inst)
        self.hubs = {exchange: Hub(exchange, by_exchange.get(exchange, [])) for exchange in EXCHANGES}
        self.seed, self.rate, self.capture, self.speed = seed, rate, capture, speed
        self.keep_sent, self.bursts = keep_sent, bursts
        self.history: dict[str, list[SimConnection]] = defaultdict(list)  # every connection, in order
        self.started_mono = time.monotonic()
        self._tasks: list[asyncio.Task] = []
        self._server: Server | None = None
        self._kraken_ids = 0
        self.port = 0

    # -- life ------------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            max_size=1024 * 1024,
            ping_interval=20,
            ping_timeout=20,
            compression=None,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        if self.capture:
            self._start_capture(self.capture)
        else:
            for index, hub in enumerate(self.hubs.values()):
                market = SyntheticMarket(
                    list(hub.instruments.values()), self.seed * 1000 + index, self.bursts
                )
                tick = {"binance": 0.01, "kraken": 0.05, "coinbase": 0.1}[hub.exchange]  # batching
                self._tasks.append(asyncio.create_task(hub.run_synthetic(market, self.rate, tick)))
        log.info(
            "simulator on ws://%s:%d (%s)",
            host,
            self.port,
            f"capture {self.capture}" if self.capture else f"synthetic, {self.rate}/s per exchange",
        )
        return self.port

    def _start_capture(self, path: str) -> None:
        frames: dict[str, list[tuple[int, str]]] = defaultdict(list)
        first_ns = None
        for record in read_capture(path):
            first_ns = record.received_at_ns if first_ns is None else min(first_ns, record.received_at_ns)
            if record.kind != KIND_FRAME:
                continue
            text = record.value.decode()
            if wire.capture_frame_role(record.exchange, text) == "data":
                frames[record.exchange].append((record.received_at_ns, text))
        if first_ns is None:
            return
        start_mono, shift_ns = time.monotonic(), time.time_ns() - first_ns
        for exchange, items in frames.items():
            self._tasks.append(
                asyncio.create_task(
                    self.hubs[exchange].run_capture(items, start_mono, first_ns, shift_ns, self.speed)
                )
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # -- HTTP: control and metrics ---------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        params = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        if parts.path == "/metrics":
            return connection.respond(HTTPStatus.OK, generate_latest().decode())
        if parts.path in ("/health", "/"):
            return connection.respond(HTTPStatus.OK, "ok\n")
        if parts.path.startswith("/control/"):
            try:
                result = self.control(parts.path.removeprefix("/control/"), params)
            except (KeyError, ValueError) as exc:
                return connection.respond(HTTPStatus.BAD_REQUEST, f"{exc}\n")
            return connection.respond(HTTPStatus.OK, json.dumps(result) + "\n")
        if self._route(parts.path) is None:
            return connection.respond(HTTPStatus.NOT_FOUND, "unknown path\n")
        return None

    @staticmethod
    def _route(path: str) -> str | None:
        for exchange in EXCHANGES:
            if path == f"/{exchange}" or path.startswith(f"/{exchange}/"):
                return exchange
        return None

    def control(self, command: str, params: dict[str, str]) -> dict:
        exchanges = [params["exchange"]] if params.get("exchange") else list(EXCHANGES)
        for exchange in exchanges:
            if exchange not in self.hubs:
                raise ValueError(f"unknown exchange {exchange!r}")
        conns = [conn for ex in exchanges for conn in self.hubs[ex].connections]
        if command == "state":
            return {
                "connections": [
                    {
                        "exchange": c.exchange,
                        "path": c.path,
                        "symbols": sorted(c.symbols),
                        "received": c.received,
                        "sent_frames": c.sent_frames,
                        "sequence": c.sequence,
                    }
                    for c in conns
                ],
                "trades_made": {ex: hub.trades_made for ex, hub in self.hubs.items()},
            }
        for exchange in exchanges:
            metrics.FAULTS.labels(command, exchange).inc()
        if command == "disconnect":
            abort = params.get("mode", "close") == "abort"
            for conn in conns:
                if abort and conn.ws.transport is not None:
                    conn.ws.transport.abort()
                else:
                    asyncio.get_running_loop().create_task(conn.ws.close(1001, "going away"))
        elif command == "stall":
            until = time.monotonic() + float(params.get("seconds", "10"))
            for conn in conns:
                conn.stalled_until = until
        elif command == "duplicate":
            for conn in conns:
                conn.duplicate_left += int(params.get("count", "1"))
        elif command == "malformed":
            for conn in conns:
                for text in malformed_frames(conn.exchange, int(params.get("count", "4"))):
                    conn.offer(("raw", text))
        elif command == "oversize":
            size = int(params.get("bytes", str(1024 * 1024 + 4096)))
            for conn in conns:
                conn.offer(("raw", '{"channel":"padding","data":"' + "x" * size + '"}'))
        elif command == "rate":
            for exchange in exchanges:
                self.hubs[exchange].rate = float(params["value"])
        else:
            raise ValueError(f"unknown control command {command!r}")
        return {"ok": True, "command": command, "exchanges": exchanges, "connections": len(conns)}

    # -- WebSocket connections -------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        parts = urlsplit(ws.request.path)
        exchange = self._route(parts.path)
        if exchange is None:
            await ws.close(1008, "unknown path")
            return
        hub = self.hubs[exchange]
        conn = SimConnection(
            ws,
            exchange,
            ws.request.path,
            combined=not parts.path.endswith("/ws"),
            sent=[] if self.keep_sent else None,
        )
        self.history[exchange].append(conn)
        if exchange == "binance":
            streams = parse_qs(parts.query).get("streams", [""])[-1]
            conn.symbols.update(self._binance_symbols(hub, [s for s in streams.split("/") if s]))
        elif exchange == "kraken":
            self._kraken_ids += 1
            conn.offer(("text", wire.kraken_status(self._kraken_ids)))
        hub.connections.add(conn)
        metrics.CONNECTIONS.labels(exchange).inc()
        sender = asyncio.create_task(self._sender(conn))
        try:
            async for message in ws:
                if isinstance(message, str):
                    conn.received.append(message)
                    self._on_message(hub, conn, message)
        except ConnectionClosed:
            pass
        finally:
            hub.connections.discard(conn)
            metrics.CONNECTIONS.labels(exchange).dec()
            sender.cancel()
            if conn.heartbeat_task is not None:
                conn.heartbeat_task.cancel()

    @staticmethod
    def _binance_symbols(hub: Hub, streams: list[str]) -> list[str]:
        natives = []
        for stream in streams:
            name, _, kind = stream.partition("@")
            if kind == "trade" and name.upper() in hub.instruments:
                natives.append(name.upper())
        return natives

    def _on_message(self, hub: Hub, conn: SimConnection, message: str) -> None:
        try:
            request = json.loads(message)
        except json.JSONDecodeError:
            request = None
        if not isinstance(request, dict):
            conn.offer(("text", '{"error":"invalid JSON"}'))
            return
        now = time.time_ns()
        if conn.exchange == "binance":
            method, params = request.get("method"), request.get("params") or []
            natives = self._binance_symbols(hub, [str(p) for p in params])
            if method == "SUBSCRIBE":
                conn.symbols.update(natives)
            elif method == "UNSUBSCRIBE":
                conn.symbols.difference_update(natives)
            elif method == "LIST_SUBSCRIPTIONS":
                listing = [f"{s.lower()}@trade" for s in sorted(conn.symbols)]
                conn.offer(("text", json.dumps({"result": listing, "id": request.get("id")})))
                return
            else:
                conn.offer(
                    (
                        "text",
                        json.dumps({"error": {"code": 2, "msg": "Invalid request"}, "id": request.get("id")}),
                    )
                )
                return
            conn.offer(("text", wire.binance_ack(request.get("id"))))
        elif conn.exchange == "kraken":
            self._kraken_request(hub, conn, request, now)
        else:
            self._coinbase_request(hub, conn, request)

    def _kraken_request(self, hub: Hub, conn: SimConnection, request: dict, now: int) -> None:
        method, req_id = request.get("method"), request.get("req_id")
        if method == "ping":
            body = {"method": "pong", "time_in": wire.rfc3339(now), "time_out": wire.rfc3339(time.time_ns())}
            if req_id is not None:
                body["req_id"] = req_id
            conn.offer(("text", json.dumps(body, separators=(",", ":"))))
            return
        params = request.get("params") or {}
        if method != "subscribe" or params.get("channel") != "trade":
            conn.offer(
                (
                    "text",
                    json.dumps(
                        {
                            "error": "Unsupported request",
                            "method": method,
                            "success": False,
                            "time_in": wire.rfc3339(now),
                            "time_out": wire.rfc3339(time.time_ns()),
                        }
                    ),
                )
            )
            return
        for symbol in params.get("symbol") or []:
            ok = symbol in hub.instruments
            conn.offer(("text", wire.kraken_ack(str(symbol), ok, now, time.time_ns(), req_id)))
            if ok:
                conn.symbols.add(symbol)
                if params.get("snapshot", True) and hub.recent[symbol]:
                    conn.offer(("text", wire.kraken_trades(list(hub.recent[symbol]), "snapshot")))
        if conn.symbols and conn.heartbeat_task is None:
            conn.heartbeat_task = asyncio.create_task(self._heartbeats(conn))

    def _coinbase_request(self, hub: Hub, conn: SimConnection, request: dict) -> None:
        channel, products = request.get("channel"), [str(p) for p in request.get("product_ids") or []]
        if request.get("type") != "subscribe" or channel not in ("market_trades", "heartbeats"):
            conn.offer(("text", json.dumps({"type": "error", "message": "Failure to subscribe"})))
            return
        if channel == "heartbeats":
            conn.heartbeats = True
            if conn.heartbeat_task is None:
                conn.heartbeat_task = asyncio.create_task(self._heartbeats(conn))
        else:
            unknown = [p for p in products if p not in hub.instruments]
            if unknown:
                message = f"Failure to subscribe: {unknown}"
                conn.offer(("text", json.dumps({"type": "error", "message": message})))
                return
            conn.symbols.update(products)
        subs: dict[str, list[str]] = {}
        if conn.symbols:
            subs["market_trades"] = sorted(conn.symbols)
        if conn.heartbeats:
            subs["heartbeats"] = ["heartbeats"]
        conn.offer(("cb", "subscriptions", wire.coinbase_subscriptions_events(subs)))
        if channel == "market_trades":
            snapshot = [t for p in products for t in hub.recent[p]]
            conn.offer(("cb", "market_trades", wire.coinbase_trades_events(snapshot, "snapshot")))

    async def _heartbeats(self, conn: SimConnection) -> None:
        counter = 0
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            counter += 1
            if conn.exchange == "kraken":
                conn.offer(("text", wire.KRAKEN_HEARTBEAT))
            else:
                events = wire.coinbase_heartbeat_events(
                    time.time_ns(), counter, time.monotonic() - self.started_mono
                )
                conn.offer(("cb", "heartbeats", events))

    # -- rendering and sending -------------------------------------------------------------------

    def _render(self, conn: SimConnection, item: tuple) -> tuple[list[str], int, bool]:
        """(frames, trades in them, are they market data)."""
        kind = item[0]
        if kind == "raw" and conn.exchange == "coinbase" and '"sequence_num":' in item[1][:120]:
            text = wire.renumber(item[1], conn.sequence)  # a bad trade still takes its sequence number
            conn.sequence += 1
            return [text], 0, False
        if kind == "text" or kind == "raw":
            return [item[1]], 0, False  # injected faults are not market data: never duplicated
        if kind == "cb":
            text = wire.coinbase_envelope(item[1], conn.sequence, time.time_ns(), item[2])
            conn.sequence += 1
            return [text], 0, False
        if kind == "capture":
            text = item[1]
            if conn.exchange == "coinbase" and text.startswith('{"channel"'):
                text = wire.renumber(text, conn.sequence)
                conn.sequence += 1
            return [text], 0, True
        trades = [t for t in item[1] if t.native in conn.symbols]
        if not trades:
            return [], 0, True
        if conn.exchange == "binance":
            return [wire.binance_trade(t, conn.combined) for t in trades], len(trades), True
        if conn.exchange == "kraken":
            by_symbol: dict[str, list[SimTrade]] = defaultdict(list)
            for trade in trades:
                by_symbol[trade.native].append(trade)
            return [wire.kraken_trades(group) for group in by_symbol.values()], len(trades), True
        frames = []
        for start in range(0, len(trades), 500):
            events = wire.coinbase_trades_events(trades[start : start + 500])
            frames.append(wire.coinbase_envelope("market_trades", conn.sequence, time.time_ns(), events))
            conn.sequence += 1
        return frames, len(trades), True

    async def _sender(self, conn: SimConnection) -> None:
        frames_metric = metrics.FRAMES.labels(conn.exchange)
        trades_metric = metrics.TRADES.labels(conn.exchange)
        try:
            while True:
                item = await conn.outbox.get()
                if conn.stalled_until > time.monotonic():
                    await asyncio.sleep(conn.stalled_until - time.monotonic())
                frames, trades, data = self._render(conn, item)
                if not frames:
                    continue
                if data and conn.duplicate_left > 0:
                    doubled = []
                    for text in frames:
                        doubled.append(text)
                        if conn.duplicate_left > 0:
                            conn.duplicate_left -= 1
                            doubled.append(text)
                    frames = doubled
                await send_frames(conn.ws, frames)
                conn.sent_frames += len(frames)
                if conn.sent is not None:
                    conn.sent.extend(frames)
                frames_metric.inc(len(frames))
                if trades:
                    trades_metric.inc(trades)
        except ConnectionClosed:
            pass


async def send_frames(ws: ServerConnection, frames: list[str]) -> None:
    """Send text frames, each its own WebSocket message, with one socket write for all of them.

    `ws.send` writes every message to the socket on its own (a syscall per Binance trade); here the
    frames are serialized by the connection's protocol and written at once, inside the same
    `send_context` (state checks, error handling, flow control) that `ws.send` uses.
    """
    if len(frames) == 1:
        await ws.send(frames[0])
        return
    async with ws.send_context():
        protocol = ws.protocol
        for text in frames:
            protocol.send_text(text.encode())
        chunks = protocol.data_to_send()
        if all(chunks):
            ws.transport.write(b"".join(chunks))
        else:  # an empty chunk is an end-of-stream marker (closing): as ws.send_data handles it
            for chunk in chunks:
                if chunk:
                    ws.transport.write(chunk)
                elif ws.transport.can_write_eof():
                    ws.transport.write_eof()
                else:
                    ws.transport.close()


def malformed_frames(exchange: str, count: int) -> list[str]:
    """Bad input for the DLQ: not JSON, truncated JSON, and well-formed frames with bad fields."""
    now = time.time_ns()
    ms = now // 1_000_000
    bad_trade = SimTrade.of("BTCUSDT", Decimal("1"), Decimal("1"), True, 1, now)
    kinds = {
        "binance": [
            "this is not json",
            '{"stream":"btcusdt@trade","data":{"e":"trade","E":1',
            f'{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{ms},"s":"BTCUSDT","t":1,"p":"abc",'
            f'"q":"0.1","T":{ms},"m":true,"M":true}}}}',
            f'{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{ms},"s":"BTCUSDT","t":2,"p":"100.0",'
            f'"q":"-1","T":{ms},"m":true,"M":true}}}}',
        ],
        "kraken": [
            "<html>502 Bad Gateway</html>",
            '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD"',
            '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":"NaN",'
            f'"qty":1,"ord_type":"market","trade_id":1,"timestamp":"{wire.rfc3339(now)}"}}]}}',
            '{"channel":"trade","type":"update","data":[{"symbol":"NOPE/USD","side":"buy","price":1.5,'
            f'"qty":1,"ord_type":"market","trade_id":1,"timestamp":"{wire.rfc3339(now)}"}}]}}',
        ],
        "coinbase": [
            "\x00\x01 garbage",
            '{"channel":"market_trades","client_id":"","timestamp":"',
            wire.coinbase_envelope(
                "market_trades",
                0,
                now,
                wire.coinbase_trades_events(
                    [SimTrade.of("BTC-USD", Decimal("1"), Decimal("0"), True, 1, now)]
                ).replace('"size":"0"', '"size":"zero"'),
            ),
            wire.coinbase_envelope(
                "market_trades",
                0,
                now,
                wire.coinbase_trades_events([bad_trade]).replace(
                    '"product_id":"BTCUSDT"', '"product_id":"NOPE-USD"'
                ),
            ),
        ],
    }[exchange]
    return [kinds[i % len(kinds)] for i in range(count)]
