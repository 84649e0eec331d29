"""The fast paths (parsers/fast.py) give exactly what the exchanges' parsers give, on every frame."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.normalizer.parsers import fast, parse_frame, parse_generic
from services.normalizer.parsers.common import TradeBuilder
from tests.normalizer.capture import capture
from tests.normalizer.frames import BASE_US, coinbase_trade
from tests.normalizer.test_property import BASE_MS, INSTRUMENTS, LINEAGE, frames, json_scalars

DELETE = object()


def _same(exchange: str, frame: bytes) -> None:
    answer = parse_frame(exchange, frame, BASE_US, LINEAGE, INSTRUMENTS)
    assert answer == parse_generic(exchange, frame, BASE_US, LINEAGE, INSTRUMENTS)


def _binance(tid: int = 7, **data: Any) -> dict[str, Any]:
    trade = {
        "e": "trade",
        "E": BASE_MS,
        "s": "BTCUSDT",
        "t": tid,
        "p": "67000.10",
        "q": "0.0012",
        "T": BASE_MS,
    }
    return {"stream": "btcusdt@trade", "data": {**trade, "m": True, "M": True, **data}}


def _coinbase(*trades: dict[str, Any], seq: int = 5) -> dict[str, Any]:
    events = [{"type": "update", "trades": list(trades)}]
    return {
        "channel": "market_trades",
        "client_id": "",
        "timestamp": "x",
        "sequence_num": seq,
        "events": events,
    }


def test_usual_frames_take_the_fast_path_and_agree() -> None:
    binance = json.dumps(_binance()).encode()
    coinbase = json.dumps(_coinbase(coinbase_trade("1"), coinbase_trade("2", product="ETH-USD"))).encode()
    for exchange, frame, fast_path in (
        ("binance", binance, fast.binance),
        ("coinbase", coinbase, fast.coinbase),
    ):
        builder = TradeBuilder(exchange, INSTRUMENTS, BASE_US, LINEAGE)
        answer = fast_path(frame, builder)
        assert answer is not None and len(answer.trades) == (1 if exchange == "binance" else 2)
        assert answer == parse_generic(exchange, frame, BASE_US, LINEAGE, INSTRUMENTS)


def test_the_capture_agrees() -> None:
    for exchange, records in capture().items():
        for _key, frame, _headers in records:
            _same(exchange, frame)


BINANCE_EDGES = [
    b'{"stream":"\xff","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":%d,"m":true}}',
    b'{"stream":"\\ud800","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":%d,"m":true}}',
    b'{"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":1,"t":"1","p":"1","q":"1","T":%d,"m":true}}',
    b'{"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":"1","t":1,"p":"1","q":"1","T":%d,"m":true}}',
    b'{"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":1.0,"p":"1","q":"1","T":%d,"m":true}}',
    b'{"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":1e3,"p":"1","q":"1","T":%d,"m":true}}',
    b'{"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":123456789012345678901234,"p":"1","q":"1","T":%d,"m":1}}',
    b'{"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":123456789012345678901234,"p":"1","q":"1","T":%d,"m":true}}',
    b'{"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":9223372036854775813,"p":"1","q":"1","T":%d,"m":true}}',
    b'{"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":-1,"p":"1","q":"1","T":%d,"m":false}}',
    b'{"stream":"x","id":1,"result":null,"data":{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":%d,"m":true}}',
    b'{"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":%d,"m":true}} x',
    b'\xef\xbb\xbf{"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":%d,"m":true}}',
    b' {"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":%d,"m":true}}\n',
    b'{"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":1,"p":"1","q":"1","T":%d,"m":true},"data":{}}',
    b'{"stream":"x","data":{"e":"trade","s":"BTCUSDT","t":1,"p":" 1","q":"1E+2","T":%d,"m":true}}',
]


@pytest.mark.parametrize("frame", BINANCE_EDGES)
def test_binance_edge_frames_agree(frame: bytes) -> None:
    _same("binance", frame.replace(b"%d", str(BASE_MS).encode()))


COINBASE_EDGES: list[list[tuple[tuple[Any, ...], Any]]] = [
    [(("type",), "error")],
    [(("channel",), "subscriptions")],
    [(("channel",), "heartbeats")],
    [(("events", 0, "trades", 0, "trade_id"), "")],
    [(("events", 0, "trades", 0, "side"), "buy")],
    [(("events", 0, "trades", 0, "time"), "2026-11-26 00:00:00")],
    [(("events", 0, "trades", 0, "price"), 1.5)],
    [(("events", 0, "trades", 0, "x"), [1]), (("events", 0, "x"), {"y": 1})],  # extras: still fast
    [(("sequence_num",), True)],
    [(("sequence_num",), "5")],
    [(("sequence_num",), 1.0)],
    [(("sequence_num",), 2**63 + 5)],
    [(("sequence_num",), DELETE)],
    [(("events",), [])],
    [(("events", 0, "trades"), [])],
    [(("events", 0, "trades"), None)],
    [(("events", 0, "trades", 1), 7)],
]


@pytest.mark.parametrize("mutations", COINBASE_EDGES)
def test_coinbase_edge_frames_agree(mutations: list[tuple[tuple[Any, ...], Any]]) -> None:
    frame = _coinbase(coinbase_trade("1"), coinbase_trade("2", product="ETH-USD"))
    _same("coinbase", _mutated(frame, mutations))


def _mutated(frame: dict[str, Any], mutations: list[tuple[tuple[Any, ...], Any]]) -> bytes:
    """`frame` with values replaced (or deleted) at paths, and keys added at the top level."""
    for path, value in mutations:
        target: Any = frame
        for step in path[:-1]:
            if isinstance(target, list):
                target = target[step] if isinstance(step, int) and step < len(target) else None
            else:
                target = target.get(step) if isinstance(target, dict) else None
            if target is None:
                break
        else:
            last = path[-1]
            if isinstance(target, dict):
                if value is DELETE:
                    target.pop(last, None)
                else:
                    target[last] = value
            elif isinstance(target, list) and isinstance(last, int) and last < len(target):
                target[last] = None if value is DELETE else value
    return json.dumps(frame).encode()


VALUES = st.one_of(json_scalars, st.just(DELETE), st.integers(BASE_MS - 10**8, BASE_MS + 10**8))
TOP_KEYS = ["id", "result", "error", "type", "method", "client_id", "timestamp", "stream", "channel", "x"]
BINANCE_PATHS = [("data", k) for k in ("e", "s", "t", "p", "q", "T", "m", "M")] + [(k,) for k in TOP_KEYS]
COINBASE_PATHS = [
    ("events", 0, "trades", 0, k) for k in ("trade_id", "product_id", "price", "size", "side", "time", "x")
] + [("events", 0, "trades", 1), ("events", 0, "trades"), ("events", 1), ("sequence_num",)]
COINBASE_PATHS += [(k,) for k in TOP_KEYS]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(BINANCE_PATHS), VALUES), max_size=3))
def test_mutated_binance_frames_agree(mutations: list[tuple[tuple[Any, ...], Any]]) -> None:
    _same("binance", _mutated(_binance(), mutations))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(COINBASE_PATHS), VALUES), max_size=3))
def test_mutated_coinbase_frames_agree(mutations: list[tuple[tuple[Any, ...], Any]]) -> None:
    frame = _coinbase(coinbase_trade("1"), coinbase_trade("2", product="ETH-USD"))
    _same("coinbase", _mutated(frame, mutations))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exchange=st.sampled_from(["binance", "kraken", "coinbase"]), frame=frames)
def test_random_frames_agree(exchange: str, frame: bytes) -> None:
    _same(exchange, frame)
