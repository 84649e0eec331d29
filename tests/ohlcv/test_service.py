"""The OHLCV worker as a real process against the real broker: event time, late trades, idle closes,
replay, kill -9 and two workers. Every test compares the final candles with the recomputation."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from decimal import Decimal

from bench.reference import reference_candles
from services.common.schemas import TIMEFRAMES, Candle, Trade
from tests.kafka_helpers import wait_for
from tests.ohlcv.helpers import (
    final_candles,
    live_candles,
    metric_value,
    produce_trades,
    random_trades,
    trade,
    worker,
)
from tests.processes import ServiceProcess, scrape

MINUTE = 60_000_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def _closed(trades: list[Trade], watermark_us: int) -> dict[str, Candle]:
    """The reference candles whose window has closed at this watermark."""
    return {k: c for k, c in reference_candles(trades).items() if c.window_end <= watermark_us}


def _mismatches(expected: dict[str, Candle], got: dict[str, Candle]) -> list[str]:
    out = []
    for key, candle in expected.items():
        have = got.get(key)
        if have is None:
            out.append(f"{key}: missing")
            continue
        a, b = candle.to_dict(), have.to_dict()
        a.pop("revision")
        b.pop("revision")
        if a != b:
            out.append(f"{key}: expected {a} got {b}")
    out.extend(f"{key}: unexpected" for key in got if key not in expected)
    return out


async def _wait_finals(
    bootstrap: str,
    expected: dict[str, Candle],
    proc: ServiceProcess,
    timeout: float = 60,
    keep: Callable[[str], bool] | None = None,
) -> dict[str, Candle]:
    """Wait until the latest revisions equal `expected` (all its keys, and no other key kept by `keep`)."""
    state: dict[str, object] = {}

    async def equal() -> bool:
        assert proc.running, proc.output()[-3000:]
        got = await final_candles(bootstrap)
        if keep is not None:
            got = {k: v for k, v in got.items() if keep(k)}
        state["got"], state["diff"] = got, _mismatches(expected, got)
        return not state["diff"]

    try:
        await wait_for(equal, timeout=timeout, interval=0.5, message="final candles == recomputation")
    except AssertionError:
        raise AssertionError(f"{state.get('diff', [])[:5]}\n{proc.output()[-2000:]}") from None
    return state["got"]  # type: ignore[return-value]


async def test_out_of_order_within_grace_then_late_trade_revises(
    fresh_topics: str, k2_env: dict[str, str]
) -> None:
    bootstrap = fresh_topics
    base = (int(time.time() * 1e6) // DAY - 3) * DAY + 5 * HOUR
    one_minute = lambda key: key.split(":")[2] == "1m"  # noqa: E731 - only 1m windows close here
    # event time only: no wall-clock closing however slowly the machine delivers the batch
    proc, url = worker(k2_env, idle_timeout_seconds="600")
    with proc:
        proc.wait_http(url)
        # 1m window [base, base+60s): trades arrive out of order, all within the 2 s grace of the window end
        batch = [
            trade(10, base + 30_000_000, "100.5", "1"),
            trade(12, base + 59_500_000, "101", "2", "SELL"),
            trade(11, base + 59_000_000, "99", "0.5"),
            trade(13, base + 61_000_000, "102", "1"),
            trade(14, base + 59_900_000, "98.25", "0.25", "SELL"),  # watermark base+59s: not late
            trade(16, base + 59_900_000, "97", "1"),
            trade(15, base + 62_500_000, "103", "1"),
        ]  # watermark base+60.5s: the first minute closes
        await produce_trades(bootstrap, batch)
        expected = {k: c for k, c in reference_candles(batch).items() if c.window_end <= base + 60_500_000}
        assert list(expected) == [f"binance:BTC/USDT:1m:{base}"]
        finals = await _wait_finals(bootstrap, expected, proc, keep=one_minute)
        first = finals[f"binance:BTC/USDT:1m:{base}"]
        assert first.revision == 0, "out-of-order trades within the grace were treated as late"
        assert (first.open, first.close, first.trade_count) == (Decimal("100.5"), Decimal("97"), 5)
        assert metric_value(scrape(url), "k2_ohlcv_late_trades_total") == 0
        assert not any(k.split(":")[2] != "1m" for k in await final_candles(bootstrap))

        # A late trade for the closed window: a new revision, equal to the recomputation of all trades.
        late = trade(9, base + 10_000_000, "150", "3", "SELL")
        await produce_trades(bootstrap, [late])
        expected = {k: c for k, c in reference_candles([*batch, late]).items() if k == first.key}
        finals = await _wait_finals(bootstrap, expected, proc, keep=one_minute)
        assert finals[first.key].revision == 1
        assert finals[first.key].open == late.price and finals[first.key].high == late.price
        text = scrape(url)
        assert metric_value(text, "k2_ohlcv_late_trades_total", outcome="revised") >= 1
        assert metric_value(text, "k2_ohlcv_candles_out_total", kind="revision") >= 1
        assert metric_value(text, "k2_ohlcv_trades_in_total") == len(batch) + 1
        live = await live_candles(bootstrap)
        assert live and all(c.revision == -1 for c in live)


async def test_idle_symbol_closes_by_wall_clock(fresh_topics: str, k2_env: dict[str, str]) -> None:
    bootstrap = fresh_topics
    proc, url = worker(k2_env)
    with proc:
        proc.wait_http(url)
        now = int(time.time() * 1e6)
        ts = now - now % MINUTE - 30_000_000  # the previous minute: its window ended, no later trade follows
        lone = trade(1, ts, "42000", "0.1", symbol="BTC/USDT")
        await produce_trades(bootstrap, [lone])
        expected = {k: c for k, c in reference_candles([lone]).items() if c.timeframe == "1m"}
        finals = await _wait_finals(bootstrap, expected, proc, keep=lambda key: key.split(":")[2] == "1m")
        assert finals[f"binance:BTC/USDT:1m:{ts - ts % MINUTE}"].revision == 0
        # the lone trade's 1d window has not ended: no final candle for it, only live updates
        assert not any(k.split(":")[2] == "1d" for k in await final_candles(bootstrap))
        assert any(c.timeframe == "1d" for c in await live_candles(bootstrap))
        text = scrape(url)
        assert metric_value(text, "k2_ohlcv_watermark_lag_seconds") > 0
        assert "k2_ohlcv_consumer_lag_records{" in text


async def test_replay_of_last_week_at_full_speed(fresh_topics: str, k2_env: dict[str, str]) -> None:
    bootstrap = fresh_topics
    rng = random.Random(7)
    start = (int(time.time() * 1e6) // DAY - 7) * DAY + 22 * HOUR  # spans midnight: two 1d windows
    symbols = [
        ("binance", "BTC/USDT"),
        ("kraken", "ETH/USD"),
        ("coinbase", "SOL/USD"),
        ("binance", "ETH/USDT"),
    ]
    trades = sorted(random_trades(rng, 4000, start, 4 * HOUR, symbols), key=lambda t: t.exchange_ts)
    # a little disorder, well inside the grace, as exchanges deliver it
    for i in range(0, len(trades) - 1, 7):
        trades[i], trades[i + 1] = trades[i + 1], trades[i]
    proc, url = worker(k2_env)
    with proc:
        proc.wait_http(url)
        await produce_trades(bootstrap, trades)
        await _wait_finals(bootstrap, reference_candles(trades), proc, timeout=90)
        assert metric_value(scrape(url), "k2_ohlcv_trades_in_total") == len(trades)


async def test_kill_9_mid_window_and_restart(fresh_topics: str, k2_env: dict[str, str]) -> None:
    bootstrap = fresh_topics
    rng = random.Random(11)
    start = (int(time.time() * 1e6) // DAY - 2) * DAY + 3 * HOUR
    symbols = [("binance", "BTC/USDT"), ("kraken", "ETH/USD"), ("coinbase", "SOL/USD")]
    trades = sorted(random_trades(rng, 3000, start, 20 * MINUTE, symbols), key=lambda t: t.exchange_ts)
    first, second = trades[:2000], trades[2000:]
    app_id = f"k2-ohlcv-kill-{rng.randrange(10**6)}"
    # no wall-clock closing in this test: windows close by event time only
    proc, url = worker(k2_env, app_id=app_id, idle_timeout_seconds="600")
    proc.start()
    try:
        proc.wait_http(url)
        await produce_trades(bootstrap, first)
        await wait_for(
            lambda: metric_value(scrape(url), "k2_ohlcv_trades_in_total") >= 1500,
            timeout=60,
            message="the worker to be mid-way",
        )
        proc.kill()  # kill -9 while windows are open and offsets partly committed
    finally:
        proc.stop()
    # closers: one trade per symbol a day and a half later closes every window of the test data
    closer_ts = start + DAY + 12 * HOUR
    closers = [
        trade(900_000 + i, closer_ts, "1", "1", exchange=e, symbol=s) for i, (e, s) in enumerate(symbols)
    ]
    restarted, url2 = worker(k2_env, app_id=app_id, name="ohlcv-restarted", idle_timeout_seconds="600")
    with restarted:
        restarted.wait_http(url2)
        await produce_trades(bootstrap, second + closers)
        watermark = closer_ts - 2_000_000
        expected = _closed(trades, watermark)
        await _wait_finals(
            bootstrap,
            expected,
            restarted,
            timeout=90,
            keep=lambda key: int(key.rsplit(":", 1)[1]) < start + DAY,
        )
        text = scrape(url2)
    assert all(c.window_start < start + DAY for c in expected.values())
    assert metric_value(text, "k2_ohlcv_trades_in_total") >= len(second)


async def test_two_workers_share_partitions(fresh_topics: str, k2_env: dict[str, str]) -> None:
    bootstrap = fresh_topics
    rng = random.Random(5)
    start = (int(time.time() * 1e6) // DAY - 1) * DAY + 8 * HOUR
    symbols = [
        (e, s)
        for e in ("binance", "kraken", "coinbase")
        for s in ("BTC/USD", "ETH/USD", "SOL/USD", "XRP/USD")
    ]
    first = random_trades(rng, 1500, start, 30 * MINUTE, symbols)
    second = random_trades(rng, 1500, start, 30 * MINUTE, symbols, first_id=10_000)
    app_id = f"k2-ohlcv-pair-{rng.randrange(10**6)}"
    one, url1 = worker(k2_env, app_id=app_id, name="ohlcv-1")
    two, url2 = worker(k2_env, app_id=app_id, name="ohlcv-2")
    with one:
        one.wait_http(url1)
        await produce_trades(bootstrap, first)
        await _wait_finals(bootstrap, reference_candles(first), one)
        with two:
            two.wait_http(url2)
            # the rebalance hands some partitions (and their state) to the second worker
            await wait_for(
                lambda: metric_value(scrape(url2), "k2_ohlcv_state_candles") > 0,
                timeout=60,
                message="the second worker to take over partitions with their state",
            )
            await produce_trades(bootstrap, second)
            await _wait_finals(bootstrap, reference_candles(first + second), two, timeout=90)
            in1 = metric_value(scrape(url1), "k2_ohlcv_trades_in_total")
            in2 = metric_value(scrape(url2), "k2_ohlcv_trades_in_total")
    assert in2 > 0 and in1 > len(first), (in1, in2)
    assert in1 + in2 >= len(first) + len(second)
    assert TIMEFRAMES
