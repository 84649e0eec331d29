"""The chaos run's mismatch arithmetic and the synthetic market's known truth."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from bench.chaos import count_mismatches
from bench.synthetic import SyntheticMarket, trades_of, write_capture


def clean_checks() -> dict:
    gold = {"1m": {"missing": 0, "extra": 0, "field_mismatches": 0, "rows_beyond_one_per_candle": 0}}
    return {
        "silver": {"missing": 0, "extra": 0, "duplicates": 0, "value_mismatches": 0},
        "gold": gold,
        "dlq": {"difference": 0},
        "lags": {"k2-normalizer": 0, "k2-ohlcv": 3, "k2-lakewriter": 0},
    }


def test_clean_run_counts_zero_and_each_fault_counts() -> None:
    assert count_mismatches(clean_checks()) == 0
    checks = clean_checks()
    checks["silver"]["duplicates"] = 2
    checks["gold"]["1m"]["field_mismatches"] = 1
    checks["dlq"]["difference"] = 1
    checks["lags"]["k2-ohlcv"] = 500
    assert count_mismatches(checks) == 5
    checks = clean_checks()
    del checks["lags"]["k2-lakewriter"]  # a group that never committed is lagging too
    assert count_mismatches(checks) == 1


def test_synthetic_market_is_seeded_and_ids_are_sequential(tmp_path: Path) -> None:
    frames_a = list(SyntheticMarket(seed=3).frames(1_700_000_000_000_000, 5, 200))
    frames_b = list(SyntheticMarket(seed=3).frames(1_700_000_000_000_000, 5, 200))
    assert [f.text for f in frames_a] == [f.text for f in frames_b]
    trades = trades_of(frames_a)
    assert len(trades) == 1000
    by_symbol: dict[tuple[str, str], list[int]] = {}
    for exchange, symbol, trade_id in trades:
        by_symbol.setdefault((exchange, symbol), []).append(int(trade_id))
    for ids in by_symbol.values():
        assert sorted(ids) == list(range(min(ids), min(ids) + len(ids)))  # no holes: no false gaps
    path = tmp_path / "c.jsonl.gz"
    write_capture(path, frames_a)
    with gzip.open(path, "rt") as text:
        lines = [json.loads(line) for line in text]
    assert [line["frame"] for line in lines] == [f.text for f in frames_a]
    assert all(set(line) == {"exchange", "received_at", "frame"} for line in lines)


def test_frames_parse_back_to_the_known_trades() -> None:
    market = SyntheticMarket(seed=5)
    frames = list(market.frames(1_700_000_000_000_000, 2, 100))
    kraken = next(f for f in frames if f.exchange == "kraken")
    data = json.loads(kraken.text, parse_float=str)
    assert [d["price"] for d in data["data"]] == [format(t.price, "f") for t in kraken.trades]
    coinbase = next(f for f in frames if f.exchange == "coinbase")
    payload = json.loads(coinbase.text)["events"][0]["trades"]
    # Coinbase sends the maker's side: the taker's is the opposite
    assert [t["side"] for t in payload] == [{"BUY": "SELL", "SELL": "BUY"}[t.side] for t in coinbase.trades]
    bad = market.bad_frames(1_700_000_000_000_000)
    assert sorted(r for f in bad for r in f.bad_reasons) == sorted(
        ["malformed_json", "bad_price", "bad_quantity", "unknown_symbol", "missing_field"]
    )
