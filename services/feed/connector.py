"""One WebSocket connection slot to one exchange for a fixed set of symbols, kept alive forever.

Each (re)connection gets a fresh connection id `<exchange>-<uuid4 hex12>`, unique across
processes and restarts, and numbers its text frames from 1 (`seq`). A frame over the raw
contract's 1 MiB still takes its number but is only counted and logged, so the hole in `seq`
shows downstream where it was. After a reconnect the first record of the new connection is a
DisconnectMarker stating since when the slot had no (working) connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from dataclasses import dataclass, field

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from services.common.raw import KIND_MARKER, MAX_FRAME_BYTES, DisconnectMarker
from services.feed import metrics
from services.feed.protocols import PROTOCOLS
from services.feed.records import RawRecord, Sink

log = logging.getLogger(__name__)

STATES = ("connecting", "subscribed", "paused", "backoff")


def new_connection_id(exchange: str) -> str:
    return f"{exchange}-{uuid.uuid4().hex[:12]}"


@dataclass
class ConnectorOptions:
    stale_after_s: float = 30.0
    rotate_after_s: float = 23 * 3600.0
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_message_bytes: int = 16 * 1024 * 1024
    open_timeout_s: float = 10.0


@dataclass
class _Lost:
    connection_id: str
    down_from_ns: int
    reason: str


@dataclass
class Connector:
    exchange: str
    slot: str  # stable name of this connection slot (metrics label), e.g. "binance-0"
    base_url: str
    natives: list[str]
    sink: Sink
    options: ConnectorOptions = field(default_factory=ConnectorOptions)

    def __post_init__(self) -> None:
        self.protocol = PROTOCOLS[self.exchange]
        self.url = self.protocol.url(self.base_url, self.natives)
        self.connection_id = ""
        self.connections = 0  # successful connections so far
        self._stop = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._close_reason = ""
        self._last_frame_mono = time.monotonic()
        self._paused = False
        self._last_frame_ns = 0
        self._frames = metrics.FRAMES.labels(self.exchange, self.slot)
        self._bytes = metrics.BYTES.labels(self.exchange, self.slot)
        self._trades = metrics.TRADES.labels(self.exchange)
        self._age = metrics.LAST_FRAME_AGE.labels(self.exchange, self.slot)

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        self._close("stop")

    def force_reconnect(self, reason: str = "forced") -> None:
        self._close(reason)

    async def run(self) -> None:
        attempt = 0
        lost: _Lost | None = None
        while not self._stop.is_set():
            connection_id = new_connection_id(self.exchange)
            self._set_state("connecting")
            opened = False
            opened_ns = 0
            self._last_frame_ns = 0
            reason = "closed"
            try:
                async with websockets.connect(
                    self.url,
                    max_size=self.options.max_message_bytes,
                    open_timeout=self.options.open_timeout_s,
                    ping_interval=self.options.ping_interval_s,
                    ping_timeout=self.options.ping_timeout_s,
                    close_timeout=2,
                    max_queue=64,
                ) as ws:
                    self._ws, self._close_reason = ws, ""
                    for message in self.protocol.subscribe_messages(self.natives):
                        await ws.send(message)
                    opened, opened_ns = True, time.time_ns()
                    self.connection_id = connection_id
                    self.connections += 1
                    self._set_state("subscribed")
                    log.info(
                        "%s connected as %s (%d symbols) to %s",
                        self.slot,
                        connection_id,
                        len(self.natives),
                        self.url,
                    )
                    if lost is not None:
                        await self._publish_marker(lost, connection_id, opened_ns)
                        lost = None
                    await self._read(ws, connection_id)
                    reason = self._close_reason or "closed"
            except ConnectionClosed as exc:
                reason = self._close_reason or f"closed_{exc.rcvd.code if exc.rcvd else 'abnormal'}"
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                reason = self._close_reason or ("connect_failed" if not opened else "error")
                log.warning("%s: %s (%r)", self.slot, reason, exc)
            except Exception:  # never let one slot's surprise end the process
                reason = "error"
                log.exception("%s: unexpected error", self.slot)
            finally:
                self._ws = None
                last_frame_ns = self._last_frame_ns
            if self._stop.is_set():
                break
            if opened:
                down_from = last_frame_ns or opened_ns
                if lost is None:
                    lost = _Lost(connection_id, down_from, reason)
                metrics.RECONNECTS.labels(self.exchange, reason).inc()
                log.warning("%s: connection %s ended (%s); reconnecting", self.slot, connection_id, reason)
                attempt = 0 if last_frame_ns else attempt + 1
            else:
                attempt += 1
            if reason != "rotate":
                await self._backoff(attempt)
        self._set_state(None)

    async def _backoff(self, attempt: int) -> None:
        delay = min(self.options.backoff_max_s, self.options.backoff_initial_s * 2 ** min(attempt, 16))
        delay *= random.uniform(0.5, 1.0)  # jitter: replicas do not reconnect in lockstep
        self._set_state("backoff")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)

    # -- reading ---------------------------------------------------------------------------------

    async def _read(self, ws: ClientConnection, connection_id: str) -> None:
        """Publish every text frame until the connection ends."""
        watchdog = asyncio.create_task(self._watchdog(ws))
        seq = 0
        exchange, sink = self.exchange, self.sink
        count_trades = self.protocol.count_trades
        try:
            async for message in ws:
                received_ns = time.time_ns()
                self._last_frame_mono = time.monotonic()
                if not isinstance(message, str):
                    metrics.BINARY.labels(exchange).inc()
                    log.warning("%s: binary frame of %d bytes ignored", self.slot, len(message))
                    continue
                data = message.encode()
                seq += 1
                self._last_frame_ns = received_ns
                self._frames.inc()
                self._bytes.inc(len(data))
                if len(data) > MAX_FRAME_BYTES:
                    metrics.OVERSIZED.labels(exchange).inc()
                    log.error(
                        "%s: frame seq %d of %s is %d bytes (> %d): counted, not published: %.200s",
                        self.slot,
                        seq,
                        connection_id,
                        len(data),
                        MAX_FRAME_BYTES,
                        message,
                    )
                    continue
                trades = count_trades(data)
                if trades:
                    self._trades.inc(trades)
                if sink.full():
                    metrics.BACKPRESSURE.labels(exchange).inc()
                    self._paused = True
                    self._set_state("paused")
                    await sink.publish(RawRecord(exchange, data, received_ns, connection_id, seq))
                    self._paused = False
                    self._last_frame_mono = time.monotonic()
                    self._set_state("subscribed")
                else:
                    await sink.publish(RawRecord(exchange, data, received_ns, connection_id, seq))
        finally:
            watchdog.cancel()

    async def _watchdog(self, ws: ClientConnection) -> None:
        """Close a connection that went quiet or reached its rotation age."""
        started = time.monotonic()
        self._last_frame_mono = started
        tick = max(0.05, min(1.0, self.options.stale_after_s / 4))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            age = now - self._last_frame_mono
            self._age.set(age)
            if self._paused:
                continue  # we stopped reading ourselves: not the exchange's fault
            if age > self.options.stale_after_s:
                log.warning("%s: no frame for %.1fs", self.slot, age)
                self._close("stale", ws)
                return
            if now - started > self.options.rotate_after_s:
                log.info("%s: rotating the connection after %.0fs", self.slot, now - started)
                self._close("rotate", ws)
                return

    def _close(self, reason: str, ws: ClientConnection | None = None) -> None:
        ws = ws or self._ws
        if ws is not None:
            self._close_reason = self._close_reason or reason
            asyncio.get_running_loop().create_task(ws.close())

    async def _publish_marker(self, lost: _Lost, connection_id: str, down_to_ns: int) -> None:
        marker = DisconnectMarker(
            exchange=self.exchange,
            connection_id=lost.connection_id,
            new_connection_id=connection_id,
            down_from_ns=lost.down_from_ns,
            down_to_ns=down_to_ns,
            reason=lost.reason,
            symbols=tuple(self.natives),
        )
        await self.sink.publish(
            RawRecord(self.exchange, marker.encode(), down_to_ns, connection_id, 0, kind=KIND_MARKER)
        )
        metrics.MARKERS.labels(self.exchange).inc()

    def _set_state(self, state: str | None) -> None:
        for name in STATES:
            metrics.CONNECTION_STATE.labels(self.exchange, self.slot, name).set(1 if name == state else 0)
