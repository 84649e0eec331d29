"""Crafted frames in the exact exchange formats of design.md, and raw-topic records around them."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from services.common.raw import KIND_MARKER, DisconnectMarker, RawHeaders
from services.common.topics import RAW_TOPICS

BASE_NS = 1_795_651_200_000_000_000  # 2026-11-26T00:00:00Z
BASE_US = BASE_NS // 1000


def iso(us: int, digits: int = 6) -> str:
    """RFC3339 with `digits` fractional digits (9 → ns, padded with 789 beyond the µs)."""
    dt = datetime.fromtimestamp(us // 1_000_000, tz=UTC)
    frac = f"{us % 1_000_000:06d}"
    frac = (frac + "789")[:digits] if digits > 6 else frac[:digits]
    return dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if digits else "") + "Z"


def binance_trade(
    tid: int,
    price: str = "67000.10",
    qty: str = "0.00120000",
    ts_ms: int | None = None,
    maker: object = True,
    symbol: str = "BTCUSDT",
    **override: object,
) -> bytes:
    ts_ms = BASE_US // 1000 if ts_ms is None else ts_ms
    data = {
        "e": "trade",
        "E": ts_ms + 1,
        "s": symbol,
        "t": tid,
        "p": price,
        "q": qty,
        "T": ts_ms,
        "m": maker,
        "M": True,
    }
    data.update(override)
    for key, value in list(data.items()):
        if value is _DROP:
            del data[key]
    return json.dumps({"stream": f"{symbol.lower()}@trade", "data": data}).encode()


_DROP = object()
DROP = _DROP


class Quoted(str):
    """A Kraken price/qty that should appear as a JSON string (a wrong type), not a JSON number."""


def kraken_frame(trades: list[dict[str, object]], kind: str = "update") -> bytes:
    """Kraken v2 trade frame; price/qty given as plain text are written as raw JSON numbers."""
    parts = []
    for trade in trades:
        items = []
        for key, value in trade.items():
            raw_number = key in ("price", "qty") and isinstance(value, str) and not isinstance(value, Quoted)
            items.append(f'"{key}":' + (value if raw_number else json.dumps(value)))
        parts.append("{" + ",".join(items) + "}")
    return ('{"channel":"trade","type":"' + kind + '","data":[' + ",".join(parts) + "]}").encode()


def kraken_trade(
    tid: int,
    price: str = "67000.1",
    qty: str = "0.00012345",
    side: str = "buy",
    ts_us: int | None = None,
    symbol: str = "BTC/USD",
) -> dict[str, object]:
    return {
        "symbol": symbol,
        "side": side,
        "price": price,
        "qty": qty,
        "ord_type": "market",
        "trade_id": tid,
        "timestamp": iso(BASE_US if ts_us is None else ts_us),
    }


def coinbase_trade(
    tid: str,
    product: str = "BTC-USD",
    price: str = "67000.01",
    size: str = "0.5",
    side: str = "BUY",
    ts_us: int | None = None,
) -> dict[str, object]:
    return {
        "trade_id": tid,
        "product_id": product,
        "price": price,
        "size": size,
        "side": side,
        "time": iso(BASE_US if ts_us is None else ts_us, 9),
    }


def coinbase_frame(seq: int, events: list[list[dict[str, object]]], kind: str = "update") -> bytes:
    return json.dumps(
        {
            "channel": "market_trades",
            "client_id": "",
            "timestamp": iso(BASE_US, 9),
            "sequence_num": seq,
            "events": [{"type": kind, "trades": trades} for trades in events],
        }
    ).encode()


BINANCE_ACK = b'{"result":null,"id":1}'
KRAKEN_CONTROL = [
    b'{"method":"subscribe","result":{"channel":"trade","symbol":"BTC/USD","snapshot":true},'
    b'"success":true,"time_in":"2026-11-26T00:00:00.000000Z","time_out":"2026-11-26T00:00:00.000100Z"}',
    b'{"channel":"status","type":"update","data":[{"version":"2.0.9","system":"online","api_version":"v2",'
    b'"connection_id":123,"system_status":"online"}]}',
    b'{"channel":"heartbeat"}',
]


def coinbase_control(seq: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "channel": "subscriptions",
                "client_id": "",
                "timestamp": iso(BASE_US, 9),
                "sequence_num": seq,
                "events": [{"subscriptions": {"market_trades": ["BTC-USD"]}}],
            }
        ).encode(),
        json.dumps(
            {
                "channel": "heartbeats",
                "client_id": "",
                "timestamp": iso(BASE_US, 9),
                "sequence_num": seq + 1,
                "events": [{"current_time": "x", "heartbeat_counter": 1}],
            }
        ).encode(),
    ]


Record = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]


def raw_record(connection: str, seq: int, frame: bytes, received_ns: int = BASE_NS) -> Record:
    return (connection.encode(), frame, RawHeaders(received_ns, connection, seq).to_kafka())


def marker_record(exchange: str, lost: str, new: str, seq: int, down_from_ns: int, down_to_ns: int) -> Record:
    marker = DisconnectMarker(exchange, lost, new, down_from_ns, down_to_ns, "test", ())
    return (new.encode(), marker.encode(), RawHeaders(down_to_ns, new, seq, KIND_MARKER).to_kafka())


def topic(exchange: str) -> str:
    return RAW_TOPICS[exchange]
