"""What differs between the exchanges on the wire: the URL, the subscribe messages, counting trades.

The feed does not parse frames (the normalizer does): it only needs to open a connection,
subscribe, and count trades for its metrics, which a byte count of the trade-id field gives
without decoding the JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


@dataclass(frozen=True, slots=True)
class Protocol:
    exchange: str

    def url(self, base: str, natives: list[str]) -> str:
        """The URL to connect to for these symbols."""
        if self.exchange != "binance":
            return base
        # Combined stream: the symbols are in the URL, frames come as {"stream":..,"data":..}.
        streams = "/".join(f"{native.lower()}@trade" for native in natives)
        parts = urlsplit(base)
        query = f"streams={streams}" + (f"&{parts.query}" if parts.query else "")
        return urlunsplit((parts.scheme, parts.netloc, parts.path or "/stream", query, ""))

    def subscribe_messages(self, natives: list[str]) -> list[str]:
        """Text messages to send right after the connection opens (exactly as sent)."""
        if self.exchange == "kraken":
            return [json.dumps({"method": "subscribe", "params": {"channel": "trade", "symbol": natives}})]
        if self.exchange == "coinbase":
            return [
                json.dumps({"type": "subscribe", "product_ids": natives, "channel": "market_trades"}),
                json.dumps({"type": "subscribe", "product_ids": natives, "channel": "heartbeats"}),
            ]
        return []  # binance: the combined-stream URL subscribes

    def count_trades(self, frame: bytes) -> int:
        if self.exchange == "binance":
            return 1 if b'"e":"trade"' in frame else 0
        if self.exchange == "kraken":
            return frame.count(b'"trade_id"') if frame.startswith(b'{"channel":"trade"') else 0
        return frame.count(b'"trade_id"') if b'"market_trades"' in frame else 0


PROTOCOLS: dict[str, Protocol] = {name: Protocol(name) for name in ("binance", "kraken", "coinbase")}
