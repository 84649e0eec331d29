"""The pure candle engine (no broker): aggregation, event-time closing, late trades, idempotence, state."""

from __future__ import annotations

import random

from bench.reference import reference_candles
from services.ohlcv.candles import CandleState
from services.ohlcv.engine import EngineConfig, PartitionState
from tests.ohlcv.helpers import random_trades, trade

MIN = 60_000_000
CONFIG = EngineConfig(grace_us=2_000_000, idle_timeout=1.0, horizon_us=3_600_000_000, live_interval=0.25)


def run(state: PartitionState) -> dict[str, object]:
    """Close what is due and 'publish' every pending final; return the latest revision per key."""
    out: dict[str, object] = {}
    state.close_due()
    for candle, revision, version in state.finals_due():
        out[candle.key] = candle.to_candle(revision)
        state.mark_published(candle, revision, version)
    return out


def test_random_input_in_any_order_equals_the_recomputation() -> None:
    rng = random.Random(3)
    base = 1_700_000_000_000_000 - 1_700_000_000_000_000 % (86_400_000_000)
    trades = random_trades(rng, 3000, base, 3 * 3600 * 1_000_000)
    rng.shuffle(trades)  # arbitrary lateness: many trades become late, every one must land somewhere
    config = EngineConfig(grace_us=2_000_000, idle_timeout=1.0, horizon_us=86_400_000_000, live_interval=0.25)
    state = PartitionState(0, config, 0.0)
    published: dict[str, object] = {}
    for offset, t in enumerate(trades):
        state.apply(t, offset, 0.0)
        if offset % 97 == 0:
            published.update(run(state))
    state.advance_idle(base + 10 * 86_400_000_000, 100.0)  # everything closes
    published.update(run(state))
    expected = reference_candles(trades)
    assert set(published) == set(expected)
    for key, candle in expected.items():
        got = published[key]
        assert same(got, candle), (key, got, candle)


def same(a: object, b: object) -> bool:
    da, db = a.to_dict(), b.to_dict()  # type: ignore[attr-defined]
    da.pop("revision")
    db.pop("revision")
    return da == db


def test_out_of_order_within_grace_is_not_late_and_late_trade_revises() -> None:
    state = PartitionState(0, CONFIG, 0.0)
    trades = [
        trade(2, 30 * 1_000_000, "10", "1"),
        trade(4, 61_000_000, "12", "1"),
        trade(3, 59_000_000, "9", "1", "SELL"),
    ]  # 59 s arrives after 61 s: watermark 59 s < 60 s
    for offset, t in enumerate(trades):
        state.apply(t, offset, 0.0)
    assert run(state) == {}
    state.apply(trade(5, 62_000_000, "13", "1"), 3, 0.0)  # watermark 60 s: the first minute closes
    finals = run(state)
    key = "binance:BTC/USDT:1m:0"
    assert list(finals) == [key]
    assert finals[key].close == 9 and finals[key].revision == 0 and finals[key].trade_count == 2
    state.apply(trade(1, 1_000_000, "20", "2"), 4, 0.0)  # late: revision 1
    finals = run(state)
    assert finals[key].revision == 1 and finals[key].open == 20 and finals[key].high == 20
    assert finals[key].trade_count == 3


def test_redelivered_trades_are_skipped_per_candle() -> None:
    state = PartitionState(0, CONFIG, 0.0)
    t = trade(1, 5_000_000, "10", "1")
    assert state.apply(t, 7, 0.0)
    assert not state.apply(t, 7, 0.0)  # the same offset again after a restart
    assert state.candles["binance:BTC/USDT:1m:0"].count == 1


def test_state_round_trip_through_the_changelog_encoding() -> None:
    state = PartitionState(2, CONFIG, 0.0)
    for offset, t in enumerate(random_trades(random.Random(1), 200, 0, 10 * MIN)):
        state.apply(t, offset, 0.0)
    run(state)
    restored = PartitionState(2, CONFIG, 0.0)
    restored.load(state.drain_persist())
    assert restored.event_max == state.event_max and restored.watermark == state.watermark
    assert set(restored.candles) == set(state.candles)
    for key, candle in state.candles.items():
        again = restored.candles[key]
        assert again.to_candle(candle.revision) == candle.to_candle(candle.revision)
        assert (again.last_offset, again.closed, again.pending) == (
            candle.last_offset,
            candle.closed,
            candle.pending,
        )
    assert CandleState.decode(state.candles[key].encode()).encode() == state.candles[key].encode()


def test_idle_partition_follows_wall_clock_and_purges_by_event_time() -> None:
    config = EngineConfig(grace_us=2_000_000, idle_timeout=1.0, horizon_us=10 * MIN, live_interval=0.25)
    state = PartitionState(0, config, 0.0)
    state.apply(trade(1, 5_000_000, "10", "1"), 0, 0.0)
    state.advance_idle(120 * 1_000_000, 0.5)  # not idle yet
    assert run(state) == {}
    state.advance_idle(120 * 1_000_000, 1.5)  # idle: watermark = wall clock − grace = 118 s
    assert list(run(state)) == ["binance:BTC/USDT:1m:0"]
    assert state.purge() == 0  # the event-time watermark has not passed the horizon
    state.apply(trade(2, 30 * MIN, "11", "1"), 1, 2.0)
    run(state)
    assert state.purge() >= 1 and "binance:BTC/USDT:1m:0" not in state.candles
    assert not state.apply(trade(3, 6_000_000, "12", "1"), 2, 2.0) or True
    assert "binance:BTC/USDT:1m:0" not in state.candles  # beyond the horizon: counted, not applied
    tombstones = [key for key, value in state.drain_persist() if value is None]
    assert "binance:BTC/USDT:1m:0" in tombstones


def test_live_updates_are_throttled_per_candle() -> None:
    state = PartitionState(0, CONFIG, 0.0)
    state.apply(trade(1, 5_000_000, "10", "1"), 0, 0.0)
    assert len(state.live_due(1.0)) == 6  # one per timeframe
    state.apply(trade(2, 6_000_000, "10", "1"), 1, 1.1)
    assert state.live_due(1.1) == []  # within the interval
    assert len(state.live_due(1.3)) == 6
