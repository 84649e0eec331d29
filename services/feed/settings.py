"""Settings of the feed (`K2_FEED_*`) and of its exchange simulator (`K2_FEED_SIMULATOR_*`)."""

from __future__ import annotations

from pydantic import Field

from services.common.instruments import EXCHANGES, Instrument, InstrumentList, default_instruments
from services.common.settings import K2Settings

LIVE_URLS: dict[str, str] = {
    "binance": "wss://stream.binance.com:9443/stream",
    "kraken": "wss://ws.kraken.com/v2",
    "coinbase": "wss://advanced-trade-ws.coinbase.com",
}
# Paths of each protocol on the local simulator.
SIMULATOR_PATHS: dict[str, str] = {
    "binance": "/binance/stream",
    "kraken": "/kraken/v2",
    "coinbase": "/coinbase",
}


class FeedSettings(K2Settings):
    """The feed service: which exchanges and symbols, where to connect, how to stay connected."""

    feed_exchanges: str = Field(
        ",".join(EXCHANGES), description="Comma-separated exchanges this process connects to."
    )
    feed_symbols: str = Field(
        "",
        description="Comma-separated `exchange:NATIVE` symbols (e.g. `binance:BTCUSDT,kraken:BTC/USD`); "
        "empty means every listed instrument of the selected exchanges.",
    )
    feed_simulator_url: str = Field(
        "ws://127.0.0.1:9110",
        description="Base URL of the exchange simulator (used when K2_FEED_SOURCE=simulator).",
    )
    feed_binance_url: str = Field("", description="Override of the Binance endpoint (any K2_FEED_SOURCE).")
    feed_kraken_url: str = Field("", description="Override of the Kraken endpoint (any K2_FEED_SOURCE).")
    feed_coinbase_url: str = Field("", description="Override of the Coinbase endpoint (any K2_FEED_SOURCE).")
    feed_symbols_per_connection: int = Field(
        200,
        description="At most this many symbols per WebSocket connection; more symbols open more connections.",
    )
    feed_stale_after_s: float = Field(
        30.0, description="Reconnect when no frame (heartbeats included) arrived for this many seconds."
    )
    feed_rotate_after_s: float = Field(
        23 * 3600.0,
        description="Reconnect proactively after this connection age (Binance closes connections at 24 h).",
    )
    feed_ping_interval_s: float = Field(20.0, description="WebSocket ping interval (seconds).")
    feed_ping_timeout_s: float = Field(20.0, description="WebSocket pong timeout (seconds).")
    feed_backoff_initial_s: float = Field(0.5, description="First reconnect delay (seconds).")
    feed_backoff_max_s: float = Field(
        30.0, description="Largest reconnect delay (seconds); retries never stop."
    )
    feed_max_message_bytes: int = Field(
        16 * 1024 * 1024,
        description="WebSocket frames above this close the connection (library limit); frames above the raw "
        "contract's 1 MiB but below this are counted and not published.",
    )
    feed_buffer_frames: int = Field(
        50_000,
        description="Frames buffered in memory while Kafka is slow or down; when full, sockets pause.",
    )
    feed_produce_timeout_ms: int = Field(
        120_000, description="How long the producer retries a batch before the feed re-sends it itself."
    )
    feed_simulator_host: str = Field("127.0.0.1", description="Interface the simulator listens on.")
    feed_simulator_port: int = Field(9110, description="Port of the simulator's WebSockets and /control.")
    feed_simulator_metrics_port: int = Field(
        0, description="Port of the simulator's own /metrics server; 0 means its default port (9105)."
    )
    feed_simulator_capture: str = Field(
        "", description="Capture file the simulator serves (re-timed to now); empty means a synthetic market."
    )
    feed_simulator_rate: float = Field(
        20.0, description="Synthetic market: average trades per second per exchange (bursts go higher)."
    )
    feed_simulator_seed: int = Field(7, description="Seed of the synthetic market's random walk.")

    def exchanges(self) -> list[str]:
        names = [name.strip() for name in self.feed_exchanges.split(",") if name.strip()]
        unknown = [name for name in names if name not in EXCHANGES]
        if unknown:
            raise ValueError(f"unknown exchange(s) in K2_FEED_EXCHANGES: {unknown}")
        return names

    def instruments(self) -> InstrumentList:
        return default_instruments(self.instruments_file)

    def symbols(self, exchange: str) -> list[Instrument]:
        """The instruments this process subscribes to on `exchange`."""
        wanted: list[str] = []
        for item in self.feed_symbols.split(","):
            item = item.strip()
            if not item:
                continue
            ex, sep, native = item.partition(":")
            if not sep:
                raise ValueError(f"K2_FEED_SYMBOLS item {item!r} is not exchange:NATIVE")
            if ex == exchange:
                wanted.append(native)
        if self.feed_symbols.strip() and not wanted:
            return []
        return self.instruments().select(exchange, wanted or None)

    def url(self, exchange: str) -> str:
        override = getattr(self, f"feed_{exchange}_url")
        if override:
            return override
        if self.feed_source == "live":
            return LIVE_URLS[exchange]
        return self.feed_simulator_url.rstrip("/") + SIMULATOR_PATHS[exchange]
