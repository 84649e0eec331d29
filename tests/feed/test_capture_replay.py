"""The capture format, `record`, `replay` (byte-for-byte through Kafka) and the bundled demo capture."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
from collections import defaultdict
from pathlib import Path

from services.common.metrics import free_port
from services.common.raw import RawHeaders
from services.common.topics import RAW_TOPICS
from services.feed.capture import encode_line, read_capture
from services.feed.captures import make_demo
from services.feed.records import RawRecord
from services.feed.simulator.server import Simulator
from tests.feed.conftest import DEMO_CAPTURE
from tests.kafka_helpers import read_topic
from tests.processes import ServiceProcess


def _lines_by_connection(lines: list[str]) -> dict[tuple[str, str], list[str]]:
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for line in lines:
        data = json.loads(line)
        grouped[(data["exchange"], data["connection_id"])].append(line)
    return grouped


def test_demo_capture_is_small_complete_and_regenerates_byte_for_byte(tmp_path: Path) -> None:
    assert DEMO_CAPTURE.stat().st_size < 3 * 1024 * 1024
    regenerated = tmp_path / "demo.jsonl.gz"
    make_demo.main([str(regenerated)])
    assert regenerated.read_bytes() == DEMO_CAPTURE.read_bytes()
    records = list(read_capture(DEMO_CAPTURE))
    span_s = (records[-1].received_at_ns - records[0].received_at_ns) / 1e9
    assert 120 < span_s < 600
    needed = [
        ("kraken", "frame", b'{"channel":"status"'),
        ("kraken", "frame", b'{"channel":"heartbeat"}'),
        ("kraken", "frame", b'{"method":"subscribe"'),
        ("kraken", "marker", b'{"type":"k2.disconnect"'),
        ("kraken", "frame", b'{"channel":"trade","type":"snapshot"'),
        ("coinbase", "frame", b'{"channel":"subscriptions"'),
        ("coinbase", "frame", b'{"channel":"heartbeats"'),
        ("coinbase", "frame", b'{"channel":"market_trades"'),
        ("binance", "frame", b'{"stream":"btcusdt@trade"'),
        ("binance", "frame", b"this is not json"),
        ("kraken", "frame", b"<html>"),
    ]
    for exchange, kind, prefix in needed:
        found = any(r.exchange == exchange and r.kind == kind and r.value.startswith(prefix) for r in records)
        assert found, (exchange, prefix)
    assert any(r.exchange == "kraken" and r.value.count(b'"trade_id"') > 1 for r in records)
    assert any(
        r.exchange == "coinbase" and b'"BTC-USD"' in r.value and b'"ETH-USD"' in r.value for r in records
    )
    # Coinbase: one sequence series per connection, across every channel; one frame arrives twice.
    coinbase = [r.value for r in records if r.exchange == "coinbase"]
    repeated = [v for previous, v in itertools.pairwise(coinbase) if v == previous]
    assert len(repeated) == 1
    seqs = [
        json.loads(v)["sequence_num"]
        for previous, v in itertools.pairwise([b"", *coinbase])
        if v != previous and v.startswith(b'{"channel"') and v.endswith(b"}")
    ]
    assert seqs == list(range(len(seqs)))


async def test_replay_through_kafka_reproduces_the_capture_byte_for_byte(
    fresh_topics: str, k2_env: dict[str, str]
) -> None:
    env = {**k2_env, "K2_METRICS_PORT": str(free_port())}
    replay = ServiceProcess("services.feed", ["replay", str(DEMO_CAPTURE), "--max"], env=env, name="replay")
    replay.start()
    assert replay.proc is not None
    code = await asyncio.to_thread(replay.proc.wait, 120)
    assert code == 0, replay.output()[-3000:]
    read_back: list[str] = []
    for exchange, topic in RAW_TOPICS.items():
        for record in await read_topic(fresh_topics, topic, timeout=30):
            headers = RawHeaders.from_kafka(record.headers)
            assert record.key == headers.connection_id.encode()
            read_back.append(
                encode_line(
                    RawRecord(
                        exchange,
                        record.value,
                        headers.received_at_ns,
                        headers.connection_id,
                        headers.seq,
                        headers.kind,
                    )
                )
            )
    with gzip.open(DEMO_CAPTURE, "rt", encoding="utf-8") as handle:
        original = handle.readlines()
    assert len(read_back) == len(original)
    # Kafka orders per key (connection): compare each connection's records, in order, as text.
    assert _lines_by_connection(read_back) == _lines_by_connection(original)


async def test_record_writes_exactly_what_the_exchanges_sent(
    sim: Simulator, tmp_path: Path, k2_env: dict[str, str]
) -> None:
    out = tmp_path / "capture.jsonl.gz"
    env = {
        **k2_env,
        "K2_METRICS_PORT": str(free_port()),
        "K2_FEED_SOURCE": "simulator",
        "K2_FEED_SIMULATOR_URL": f"ws://127.0.0.1:{sim.port}",
        "K2_FEED_SYMBOLS": "binance:BTCUSDT,kraken:BTC/USD,kraken:ETH/USD,coinbase:BTC-USD,coinbase:SOL-USD",
    }
    recorder = ServiceProcess("services.feed", ["record", str(out), "--seconds", "3"], env=env, name="record")
    recorder.start()
    assert recorder.proc is not None
    code = await asyncio.to_thread(recorder.proc.wait, 60)
    assert code == 0, recorder.output()[-3000:]
    records = list(read_capture(out))
    by_exchange: dict[str, list[RawRecord]] = defaultdict(list)
    for record in records:
        by_exchange[record.exchange].append(record)
    assert set(by_exchange) == {"binance", "kraken", "coinbase"}
    for exchange, mine in by_exchange.items():
        assert len({r.connection_id for r in mine}) == 1
        assert [r.seq for r in mine] == list(range(1, len(mine) + 1))
        sent = sim.history[exchange][0].sent or []
        assert [r.value.decode() for r in mine] == sent[: len(mine)]
    assert (
        sim.history["coinbase"][0].received[0]
        == '{"type": "subscribe", "product_ids": ["BTC-USD", "SOL-USD"], "channel": "market_trades"}'
    )
