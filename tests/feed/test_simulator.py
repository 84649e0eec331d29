"""The simulator speaks each protocol like the exchange: handshakes, acks, heartbeats, frame shapes."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import websockets

from services.common.instruments import default_instruments
from services.feed.simulator import wire
from services.feed.simulator.server import Simulator
from tests.feed.conftest import DEMO_CAPTURE


async def _collect(ws, until, limit: int = 5000) -> list[str]:
    frames: list[str] = []
    async with asyncio.timeout(30):
        while not until(frames) and len(frames) < limit:
            frames.append(await ws.recv())
    return frames


async def test_coinbase_sequence_numbers_are_continuous_across_channels(sim: Simulator) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{sim.port}/coinbase") as ws:
        await ws.send(
            json.dumps(
                {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channel": "market_trades"}
            )
        )
        await ws.send(json.dumps({"type": "subscribe", "channel": "heartbeats"}))

        def enough(frames: list[str]) -> bool:
            return sum('"channel":"heartbeats"' in f for f in frames) >= 2 and len(frames) >= 20

        frames = [json.loads(f) for f in await _collect(ws, enough)]
    assert [f["sequence_num"] for f in frames] == list(range(len(frames)))
    assert frames[0]["channel"] == "subscriptions"
    assert frames[0]["events"][0]["subscriptions"] == {"market_trades": ["BTC-USD", "ETH-USD"]}
    assert {f["channel"] for f in frames} == {"subscriptions", "market_trades", "heartbeats"}
    trades = [t for f in frames if f["channel"] == "market_trades" for e in f["events"] for t in e["trades"]]
    assert trades and {t["product_id"] for t in trades} <= {"BTC-USD", "ETH-USD"}
    assert {t["side"] for t in trades} <= {"BUY", "SELL"}


async def test_kraken_status_acks_heartbeats_and_exact_trades(sim: Simulator) -> None:
    instruments = default_instruments()
    async with websockets.connect(f"ws://127.0.0.1:{sim.port}/kraken/v2") as ws:
        await ws.send(
            json.dumps(
                {"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD", "NOPE/USD"]}}
            )
        )

        def enough(frames: list[str]) -> bool:
            return '{"channel":"heartbeat"}' in frames and sum('"type":"update"' in f for f in frames) >= 5

        raw = await _collect(ws, enough)
    frames = [json.loads(f, parse_float=Decimal) for f in raw]
    assert frames[0]["channel"] == "status" and frames[0]["data"][0]["system"] == "online"
    acks = [f for f in frames if f.get("method") == "subscribe"]
    assert [(a["success"], a.get("result", {}).get("symbol", a.get("symbol"))) for a in acks] == [
        (True, "BTC/USD"),
        (False, "NOPE/USD"),
    ]
    trades = [t for f in frames if f.get("channel") == "trade" for t in f["data"]]
    tick, step = (
        instruments.require("kraken", "BTC/USD").price_tick,
        instruments.require("kraken", "BTC/USD").qty_step,
    )
    for trade in trades:
        assert trade["symbol"] == "BTC/USD" and trade["side"] in ("buy", "sell")
        assert isinstance(trade["price"], Decimal | int) and Decimal(trade["price"]) % tick == 0
        assert Decimal(trade["qty"]) % step == 0 and Decimal(trade["qty"]) > 0
    ids = [t["trade_id"] for t in trades if isinstance(t["trade_id"], int)]
    assert ids == sorted(ids)


async def test_binance_raw_stream_subscribe_ack_and_maker_flag(sim: Simulator) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{sim.port}/binance/ws") as ws:
        await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 7}))
        frames = await _collect(ws, lambda frames: len(frames) >= 8)
    assert frames[0] == '{"result":null,"id":7}'
    trades = [json.loads(f) for f in frames[1:]]
    assert {t["e"] for t in trades} == {"trade"} and {t["s"] for t in trades} == {"ETHUSDT"}
    assert {type(t["m"]) for t in trades} == {bool} and all(isinstance(t["p"], str) for t in trades)


async def test_serving_a_capture_retimes_it_to_now() -> None:
    simulator = Simulator(default_instruments(), capture=str(DEMO_CAPTURE), speed=5.0)
    await simulator.start("127.0.0.1", 0)
    try:
        async with websockets.connect(
            f"ws://127.0.0.1:{simulator.port}/binance/stream?streams=btcusdt@trade"
        ) as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
        async with websockets.connect(f"ws://127.0.0.1:{simulator.port}/coinbase") as ws:
            await ws.send(
                json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"})
            )
            envelopes = [
                json.loads(f)
                for f in await _collect(ws, lambda frames: sum('"market_trades"' in f for f in frames) >= 4)
            ]
    finally:
        await simulator.stop()
    now_ms = time.time() * 1000
    assert abs(frame["data"]["T"] - now_ms) < 60_000  # the capture is from 2026-11-19, re-timed to now
    assert frame["data"]["E"] - frame["data"]["T"] == 1  # everything else is kept
    assert [e["sequence_num"] for e in envelopes] == list(range(len(envelopes)))


def test_retime_moves_every_timestamp_and_keeps_every_other_byte() -> None:
    frame = (
        '{"channel":"market_trades","client_id":"","timestamp":"2026-11-19T12:00:00.123456789Z",'
        '"sequence_num":5,"events":[{"type":"update","trades":[{"trade_id":"9","price":"1.10",'
        '"time":"2026-11-19T12:00:00.5Z"}]}]}'
    )
    shifted = wire.retime(frame, 86_400_000_000_000 + 999)  # one day (and sub-ms noise, dropped)
    assert shifted == frame.replace("2026-11-19", "2026-11-20")
    binance = '{"e":"trade","E":1795089600001,"T":1795089600000,"p":"1.00000000"}'
    expected = '{"e":"trade","E":1795089600003,"T":1795089600002,"p":"1.00000000"}'
    assert wire.retime(binance, 2_000_000) == expected


def test_record_headers_are_the_raw_contract() -> None:
    from services.common.raw import RawHeaders
    from services.feed.records import RawRecord

    record = RawRecord("kraken", b"{}", 1_795_089_600_000_000_123, "kraken-0123456789ab", 42, "marker")
    assert (
        record.headers()
        == RawHeaders(1_795_089_600_000_000_123, "kraken-0123456789ab", 42, "marker").to_kafka()
    )
    assert RawHeaders.from_kafka(record.headers()) == RawHeaders(
        1_795_089_600_000_000_123, "kraken-0123456789ab", 42, "marker"
    )
