"""The reference recomputation the chaos run checks gold against, and the candle comparisons."""

from __future__ import annotations

from decimal import Decimal

from bench.reference import (
    RefTrade,
    compare_exact,
    compare_with_float_peer,
    recompute_candles,
    reference_candles,
)
from services.common.decimals import multiply
from services.common.schemas import Trade

MIN = 60_000_000
D = Decimal


def trade(
    trade_id: str, ts: int, price: str, qty: str, side: str = "BUY", symbol: str = "BTC/USDT"
) -> RefTrade:
    return RefTrade("binance", symbol, trade_id, ts, D(price), D(qty), side)


def test_one_candle_by_trade_order_not_arrival_order() -> None:
    trades = [
        trade("3", 30, "101", "1", "SELL"),
        trade("1", 10, "100", "2"),
        trade("2", 10, "99", "0.5"),
        trade("10", 30, "102", "1"),
    ]
    candles = recompute_candles(trades, ["1m"])
    candle = candles[("binance", "BTC/USDT", "1m", 0)]
    # open: earliest (exchange_ts, trade_id) = (10, "1"); close: (30, "10") — numeric ids compare as numbers
    assert candle["open"] == D("100")
    assert candle["close"] == D("102")
    assert candle["high"] == D("102") and candle["low"] == D("99")
    assert candle["volume"] == D("4.5")
    assert candle["quote_volume"] == D("200") + D("49.5") + D("101") + D("102")
    assert candle["trade_count"] == 4
    assert candle["buy_volume"] == D("3.5") and candle["sell_volume"] == D("1")
    assert candle["vwap"] == (candle["quote_volume"] / candle["volume"]).quantize(D(1).scaleb(-18))
    assert candle["first_trade_ts"] == 10 and candle["last_trade_ts"] == 30


def test_windows_align_to_the_epoch_and_skip_empty_intervals() -> None:
    trades = [trade("1", MIN - 1, "1", "1"), trade("2", MIN, "2", "1"), trade("3", 3 * MIN + 5, "3", "1")]
    candles = recompute_candles(trades, ["1m", "5m"])
    starts_1m = sorted(k[3] for k in candles if k[2] == "1m")
    assert starts_1m == [0, MIN, 3 * MIN]  # no candle for the empty minute 2
    assert [k[3] for k in candles if k[2] == "5m"] == [0]
    assert candles[("binance", "BTC/USDT", "5m", 0)]["trade_count"] == 3


def test_sums_are_exact_beyond_the_default_28_digit_context() -> None:
    # 20 integer + 18 fractional digits: Python's default context would round these sums.
    big = "12345678901234567890.123456789012345678"
    candle = recompute_candles([trade("1", 1, "1", big), trade("2", 2, "1", big)], ["1m"])[
        ("binance", "BTC/USDT", "1m", 0)
    ]
    assert candle["volume"] == D("24691357802469135780.246913578024691356")
    assert candle["vwap"] == D(1)


def _silver(trade_id: str, ts: int, price: str, qty: str, side: str) -> Trade:
    return Trade(
        exchange="binance",
        symbol="BTC/USDT",
        exchange_symbol="BTCUSDT",
        trade_id=trade_id,
        exchange_ts=ts,
        received_at=ts,
        price=D(price),
        quantity=D(qty),
        quote_quantity=multiply(D(price), D(qty)),
        side=side,
        source_topic="t",
        source_partition=0,
        source_offset=int(trade_id),
    )


def test_reference_candles_count_a_repeated_trade_once_and_build_candles() -> None:
    first, second = _silver("1", 10, "100", "2", "BUY"), _silver("2", MIN + 5, "3", "0.7", "SELL")
    candles = reference_candles([first, second, first], ["1m", "1h"], revision=2)
    assert sorted(candles) == [
        "binance:BTC/USDT:1h:0",
        "binance:BTC/USDT:1m:0",
        f"binance:BTC/USDT:1m:{MIN}",
    ]
    hour = candles["binance:BTC/USDT:1h:0"]
    assert (hour.trade_count, hour.volume, hour.quote_volume) == (2, D("2.7"), D("202.1"))
    assert hour.vwap == D("74.851851851851851852")  # 202.1 / 2.7 half-even to 18 places
    assert (hour.open, hour.close, hour.buy_volume, hour.sell_volume) == (D(100), D(3), D(2), D("0.7"))
    assert (hour.window_end, hour.first_trade_ts, hour.last_trade_ts) == (3600 * 10**6, 10, MIN + 5)
    assert {c.revision for c in candles.values()} == {2}


def test_compare_exact_finds_missing_extra_and_field_differences() -> None:
    base = recompute_candles([trade("1", 10, "100", "1"), trade("2", MIN + 1, "101", "1")], ["1m"])
    same = {k: dict(v) for k, v in base.items()}
    assert compare_exact(base, same)["field_mismatches"] == 0
    # the same value with other trailing zeros is equal (decimal(38,18) round trip)
    same[("binance", "BTC/USDT", "1m", 0)]["open"] = D("100.000000000000000000")
    assert compare_exact(base, same)["field_mismatches"] == 0
    wrong = {k: dict(v) for k, v in base.items()}
    wrong[("binance", "BTC/USDT", "1m", 0)]["volume"] = D("2")
    del wrong[("binance", "BTC/USDT", "1m", MIN)]
    wrong[("binance", "ETH/USDT", "1m", 0)] = {}
    result = compare_exact(base, wrong)
    assert (result["field_mismatches"], result["missing"], result["extra"]) == (1, 1, 1)


def test_float_peer_comparison_separates_rounding_from_mismatch() -> None:
    ours = {
        ("binance", "BTC/USDT", "1m", 0): {
            "open": D("0.1"),
            "high": D("0.3"),
            "low": D("0.1"),
            "close": D("0.2"),
            "volume": D("0.3"),
            "trade_count": 3,
        }
    }
    peer = {
        ("binance", "BTC/USDT", "1m", 0): {
            "open": 0.1,
            "high": 0.3,
            "low": 0.1,
            "close": 0.25,
            "volume": 0.1 + 0.2,
            "trade_count": 3,
        }
    }
    result = compare_with_float_peer(ours, peer)
    fields = result["per_field"]
    assert fields["open"]["exact"] == 1
    assert fields["volume"]["float_rounding"] == 1  # 0.30000000000000004
    assert fields["close"]["mismatch"] == 1
    assert result["candles_exactly_equal"] == 0
