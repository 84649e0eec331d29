"""Bronze keeps frames byte-exact; gold shows one row per candle, its latest revision; dead letters land."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from services.common.catalog import open_catalog
from services.common.raw import KIND_MARKER, DisconnectMarker, RawHeaders
from services.common.schemas import Candle, DeadLetter
from services.common.settings import K2Settings
from services.common.tables import SILVER_DLQ, bronze_table, gold_table
from services.common.topics import OHLCV, RAW_TOPICS, TRADES_DLQ
from tests.kafka_helpers import produce, read_topic, wait_for
from tests.lakewriter.helpers import BASE_US, EPOCH, count, rows, writer_process

MINUTE = 60_000_000


def _candle(i: int, timeframe: str, revision: int) -> Candle:
    start = BASE_US - BASE_US % MINUTE + i * (MINUTE if timeframe == "1m" else 5 * MINUTE)
    price = Decimal(f"100.{i:02d}{revision}000000000000001")
    return Candle(
        "binance",
        "BTC/USDT",
        timeframe,
        start,
        start + MINUTE,
        price,
        price + 1,
        price - 1,
        price + revision,
        Decimal("1.5") * (revision + 1),
        Decimal("150.25"),
        3 + revision,
        price,
        Decimal("1"),
        Decimal("0.5"),
        start + 1,
        start + 2,
        revision,
    )


def _candle_records(candles: list[Candle]) -> list[tuple[bytes, bytes, None]]:
    return [(c.key.encode(), c.encode(), None) for c in candles]


def _latest_on_topic(records: list[Any]) -> dict[tuple[str, str, int], Candle]:
    latest: dict[tuple[str, str, int], Candle] = {}
    for record in records:
        c = Candle.decode(record.value)
        key = (c.symbol, c.timeframe, c.window_start)
        if key not in latest or c.revision >= latest[key].revision:
            latest[key] = c
    return latest


def _us(value: datetime) -> int:
    from datetime import timedelta

    return (value - EPOCH) // timedelta(microseconds=1)


async def test_bronze_gold_and_dlq(topics: str, k2_env: dict[str, str]) -> None:
    raw_topic = RAW_TOPICS["kraken"]
    frames = [
        b'{"channel":"heartbeat"}',
        '{"channel":"trade","price":67000.1,"sym":"BTC/USD \u00e9"}'.encode(),
        b"\xff\xfe not utf-8 \xc3\x28",
        b"",
        b'{"truncated":',
    ]
    raw = [
        (b"conn-1", frame, RawHeaders(1_764_000_000_123_456_789 + i, "conn-1", i + 1).to_kafka())
        for i, frame in enumerate(frames)
    ]
    marker = DisconnectMarker("kraken", "conn-0", "conn-1", 1, 2, "test")
    raw.append(
        (
            b"conn-1",
            marker.encode(),
            RawHeaders(1_764_000_000_999_000_000, "conn-1", 0, KIND_MARKER).to_kafka(),
        )
    )
    await produce(topics, raw_topic, raw)
    await produce(
        topics,
        OHLCV,
        _candle_records(
            [_candle(i, "1m", 0) for i in range(20)]
            + [_candle(i, "1m", 1) for i in range(5)]
            + [_candle(i, "5m", 0) for i in range(4)]
        ),
    )
    dead = [
        DeadLetter(raw_topic, 0, i, "kraken", BASE_US + i, "malformed_json", "truncated", '{"truncated":', -1)
        for i in range(3)
    ]
    await produce(topics, TRADES_DLQ, [(b"kraken", d.encode(), None) for d in dead])

    catalog = open_catalog(K2Settings(data_dir=k2_env["K2_DATA_DIR"]))
    bronze = bronze_table("kraken")
    with writer_process(k2_env, TOPICS="raw,ohlcv,dlq", GROUP_ID="lw-bgd") as proc:
        proc.wait_http(proc.metrics_url, timeout=120)
        await wait_for(
            lambda: (
                count(catalog, gold_table("1m")) >= 20
                and count(catalog, SILVER_DLQ) >= 3
                and count(catalog, bronze) >= len(raw)
                and count(catalog, gold_table("5m")) >= 4
            ),
            timeout=120,
            message="bronze, gold and dlq rows",
        )
        # Revisions arriving after the first commit replace the visible rows in one commit.
        await produce(topics, OHLCV, _candle_records([_candle(i, "1m", 2) for i in range(3)]))
        await wait_for(
            lambda: sum(r["revision"] == 2 for r in rows(catalog, gold_table("1m"))) >= 3,
            timeout=120,
            message="revision 2 visible",
        )

    # Bronze: every frame byte-exact, headers mapped.
    got = sorted(rows(catalog, bronze), key=lambda r: r["kafka_offset"])
    on_topic = await read_topic(topics, raw_topic)
    assert len(got) == len(on_topic)
    by_offset = {(r.partition, r.offset): r for r in on_topic}
    for row in got:
        record = by_offset[(row["kafka_partition"], row["kafka_offset"])]
        stored = row["frame_bytes"] if row["frame_bytes"] is not None else row["frame"].encode()
        assert stored == record.value
        headers = RawHeaders.from_kafka(record.headers)
        assert (row["received_at_ns"], row["connection_id"], row["frame_seq"], row["kind"]) == (
            headers.received_at_ns,
            headers.connection_id,
            headers.seq,
            headers.kind,
        )
        assert _us(row["received_at"]) == headers.received_at_ns // 1000
    assert sum(r["frame_bytes"] is not None for r in got) == 1
    assert any(r["kind"] == KIND_MARKER for r in got)

    # Gold: one row per candle, equal to the latest revision on the topic.
    latest = _latest_on_topic(await read_topic(topics, OHLCV))
    for timeframe in ("1m", "5m"):
        gold = rows(catalog, gold_table(timeframe))
        keys = [(r["symbol"], timeframe, _us(r["window_start"])) for r in gold]
        assert len(keys) == len(set(keys)), f"duplicate candles in {timeframe}"
        want = {k: c for k, c in latest.items() if k[1] == timeframe}
        assert set(keys) == set(want)
        for r, key in zip(gold, keys, strict=True):
            c = want[key]
            assert (r["revision"], r["close"], r["volume"], r["trade_count"]) == (
                c.revision,
                c.close,
                c.volume,
                c.trade_count,
            )

    # DLQ: rows with their reason and the DLQ record's own lineage.
    dlq = rows(catalog, SILVER_DLQ)
    assert len(dlq) == len(await read_topic(topics, TRADES_DLQ))
    assert {r["reason"] for r in dlq} == {"malformed_json"} and all(r["kafka_offset"] >= 0 for r in dlq)
