"""Two workers, kill -9 of one mid-stream: market.crypto.trades (read_committed) holds exactly the
expected trades, each once, the DLQ exactly the expected dead letters, and market.crypto.gaps no
hole in any symbol's trade ids (every connection's ids are contiguous: a takeover must never show
stage 2 a connection's trades out of order)."""

from __future__ import annotations

from collections import Counter

from services.common.schemas import DeadLetter, Gap, Trade
from services.common.topics import GAPS, RAW_TOPICS, TRADES, TRADES_DLQ, TRADES_PARSED
from tests.kafka_helpers import committed_offsets, end_offsets, produce, wait_for
from tests.normalizer.frames import (
    BASE_US,
    binance_trade,
    coinbase_frame,
    coinbase_trade,
    kraken_frame,
    kraken_trade,
    raw_record,
)
from tests.normalizer.helpers import new_app_id, read_since, worker
from tests.processes import scrape

BINANCE = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "LTCUSDT"]
KRAKEN = ["BTC/USD", "ETH/USD"]
COINBASE = ["BTC-USD", "ETH-USD", "SOL-USD"]
IDS = 240


def _inputs(lo: int, hi: int) -> tuple[dict[str, list], set[tuple[str, str, str]], int]:
    """Trades with ids in [lo, hi): Binance hot-hot (two connections), Kraken 4-trade frames,
    Coinbase mixed-product envelopes; one bad element every 40 ids. → records, expected keys, DLQ count."""
    expected: set[tuple[str, str, str]] = set()
    bad = 0
    records: dict[str, list] = {"binance": [], "kraken": [], "coinbase": []}
    for tid in range(lo, hi):
        ts_ms = (BASE_US - 1_000_000) // 1000 + tid
        for symbol in BINANCE:
            frame = binance_trade(tid, "10.5", "0.25", ts_ms, maker=tid % 2 == 0, symbol=symbol)
            for conn in ("eo-b-replica1", "eo-b-replica2"):  # two feed replicas, hot-hot
                records["binance"].append(raw_record(f"{conn}-{symbol}", tid, frame))
            expected.add(("binance", symbol.replace("USDT", "/USDT"), str(tid)))
    for start in range(lo, hi, 4):
        for symbol in KRAKEN:
            trades = [
                kraken_trade(t, "67000.1", "0.001", "buy", BASE_US - 1_000_000 + t, symbol)
                for t in range(start, min(start + 4, hi))
            ]
            if start % 40 == 0:
                trades.append(kraken_trade(10**6 + start, "0", "1", "buy", BASE_US, symbol))  # bad_price
                bad += 1
            records["kraken"].append(raw_record(f"eo-k-{symbol}", start, kraken_frame(trades)))
            expected.update(("kraken", symbol, str(t)) for t in range(start, min(start + 4, hi)))
        events = [
            [
                coinbase_trade(f"{p}{t}", p, "99.5", "2", "SELL", BASE_US - 500_000 + t)
                for t in range(start, min(start + 4, hi))
            ]
            for p in COINBASE
        ]
        records["coinbase"].append(raw_record("eo-c", start, coinbase_frame(start, events)))
        expected.update(
            ("coinbase", p.replace("-", "/"), f"{p}{t}")
            for p in COINBASE
            for t in range(start, min(start + 4, hi))
        )
    return records, expected, bad


def _metric(url: str, name: str) -> float:
    total = 0.0
    try:
        text = scrape(url)
    except OSError:
        return -1.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _all_committed(bootstrap: str, group: str) -> bool:
    """The group's committed offsets reached the end of every raw and parsed partition.

    The parsed topic is written in transactions: its last offset is a commit/abort marker, which
    a consumer's committed offset never passes (hence end − 1 there)."""
    done = await committed_offsets(bootstrap, group)
    for topic in (*RAW_TOPICS.values(), TRADES_PARSED):
        markers = 1 if topic == TRADES_PARSED else 0
        for partition, end in (await end_offsets(bootstrap, topic)).items():
            if end > 0 and done.get((topic, partition), -1) < end - markers:
                return False
    return True


async def test_kill_9_of_one_of_two_workers_loses_and_duplicates_nothing(
    fresh_topics: str, k2_env: dict[str, str]
) -> None:
    bootstrap = fresh_topics
    app_id = new_app_id()
    settings = {
        "K2_NORMALIZER_BATCH_MAX": "40",
        "K2_NORMALIZER_SESSION_TIMEOUT_S": "6",
        "K2_NORMALIZER_TRANSACTION_TIMEOUT_MS": "8000",
    }
    a, url_a = worker(k2_env, app_id, "normalizer-a", **settings)
    b, url_b = worker(k2_env, app_id, "normalizer-b", **settings)
    with a, b:
        a.wait_http(url_a)
        b.wait_http(url_b)

        async def both_assigned() -> bool:  # else the first to join may do all the work alone
            return (
                _metric(url_a, "k2_normalizer_assigned_partitions") >= 1
                and _metric(url_b, "k2_normalizer_assigned_partitions") >= 1
            )

        await wait_for(both_assigned, timeout=60, message="both workers to own partitions")
        first, expected, bad = _inputs(1, IDS // 2)
        for exchange, records in first.items():
            await produce(bootstrap, RAW_TOPICS[exchange], records)

        async def both_busy() -> bool:  # mid-stream: both workers have committed transactions
            return (
                _metric(url_a, "k2_normalizer_transactions_total") >= 3
                and _metric(url_b, "k2_normalizer_transactions_total") >= 3
            )

        await wait_for(both_busy, timeout=90, message="both workers to commit transactions")
        a.kill()  # SIGKILL, mid-stream: open transactions are never committed
        second, expected2, bad2 = _inputs(IDS // 2, IDS)
        expected |= expected2
        bad += bad2
        for exchange, records in second.items():
            await produce(bootstrap, RAW_TOPICS[exchange], records)

        async def done() -> bool:
            assert b.running, b.output()[-3000:]
            return await _all_committed(bootstrap, app_id)

        await wait_for(done, timeout=150, interval=1.0, message="the survivor to consume everything")

        async def visible() -> bool:  # the killed worker's open transaction is aborted by timeout
            trades = await read_since(bootstrap, TRADES)
            return len(trades) >= len(expected)

        await wait_for(visible, timeout=60, interval=1.0, message="all trades visible")
    trades = [Trade.decode(r.value) for r in await read_since(bootstrap, TRADES)]
    counts = Counter(t.natural_key for t in trades)
    assert [k for k, n in counts.items() if n > 1] == []
    assert set(counts) == expected
    letters = [DeadLetter.decode(r.value) for r in await read_since(bootstrap, TRADES_DLQ)]
    assert len(letters) == bad and {d.reason for d in letters} == {"bad_price"}
    assert len({(d.source_topic, d.source_offset, d.element_index) for d in letters}) == bad
    gaps = [Gap.decode(r.value) for r in await read_since(bootstrap, GAPS)]
    assert [g for g in gaps if g.scope == "symbol"] == []  # (Coinbase sequence_num steps by 4 here)
