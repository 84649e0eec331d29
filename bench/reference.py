"""The one reference recomputation of candles from trades, and the comparisons made with it.

Deliberately simple (sort, group, fold) and independent of services/ohlcv and services/query: it uses
only the shared contract (services.common: trade order, window alignment, exact decimal rules: sums
in the exact context, vwap = quote_volume / volume half-even to 18 places), so a bug in the code under
test cannot hide in it. The benchmarks and the tests (tests/ohlcv, tests/query via bench.query_data,
tests/bench) all check against this module. Tested in tests/bench.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from services.common.decimals import add, divide, multiply
from services.common.schemas import TIMEFRAMES, Candle, Trade, trade_order_key, window_start

CANDLE_FIELDS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "trade_count",
    "vwap",
    "buy_volume",
    "sell_volume",
    "first_trade_ts",
    "last_trade_ts",
)
CandleKey = tuple[str, str, str, int]  # exchange, symbol, timeframe, window_start µs


@dataclass(frozen=True, slots=True)
class RefTrade:
    exchange: str
    symbol: str
    trade_id: str
    exchange_ts: int  # µs
    price: Decimal
    quantity: Decimal
    side: str
    quote_quantity: Decimal | None = None

    @property
    def quote(self) -> Decimal:
        return quote_of(self)


TradeLike = RefTrade | Trade  # what the recomputation reads: the same attributes in both


def quote_of(trade: TradeLike) -> Decimal:
    """The trade's quote quantity; price × quantity (half-even, 18 places) when it carries none."""
    quote = trade.quote_quantity
    return quote if quote is not None else multiply(trade.price, trade.quantity)


def _total(values: Iterable[Decimal]) -> Decimal:
    total = Decimal(0)
    for value in values:
        total = add(total, value)  # the exact context: no rounding at any magnitude of decimal(38,18)
    return total


def recompute_candles(
    trades: Iterable[TradeLike], timeframes: Iterable[str] = tuple(TIMEFRAMES)
) -> dict[CandleKey, dict[str, Any]]:
    """Every candle of every timeframe over a set of trades (no candle for an empty interval).

    Every trade counts: a caller whose input may repeat a trade removes the repeats first.
    """
    ordered = sorted(trades, key=lambda t: (t.exchange, t.symbol, trade_order_key(t.exchange_ts, t.trade_id)))
    out: dict[CandleKey, dict[str, Any]] = {}
    for timeframe in timeframes:
        groups: dict[CandleKey, list[TradeLike]] = defaultdict(list)
        for trade in ordered:
            groups[
                (trade.exchange, trade.symbol, timeframe, window_start(trade.exchange_ts, timeframe))
            ].append(trade)
        for key, members in groups.items():
            volume = _total(t.quantity for t in members)
            quote_volume = _total(quote_of(t) for t in members)
            out[key] = {
                "open": members[0].price,
                "high": max(t.price for t in members),
                "low": min(t.price for t in members),
                "close": members[-1].price,
                "volume": volume,
                "quote_volume": quote_volume,
                "trade_count": len(members),
                "vwap": divide(quote_volume, volume) if volume else Decimal(0),
                "buy_volume": _total(t.quantity for t in members if t.side == "BUY"),
                "sell_volume": _total(t.quantity for t in members if t.side == "SELL"),
                "first_trade_ts": members[0].exchange_ts,
                "last_trade_ts": members[-1].exchange_ts,
            }
    return out


def as_candle(key: CandleKey, fields: Mapping[str, Any], revision: int = 0) -> Candle:
    """A recomputed candle (a recompute_candles item) as a services.common Candle."""
    exchange, symbol, timeframe, start = key
    return Candle(
        exchange=exchange,
        symbol=symbol,
        timeframe=timeframe,
        window_start=start,
        window_end=start + TIMEFRAMES[timeframe],
        **{name: fields[name] for name in CANDLE_FIELDS},
        revision=revision,
    )


def reference_candles(
    trades: Iterable[Trade], timeframes: Iterable[str] = tuple(TIMEFRAMES), revision: int = 0
) -> dict[str, Candle]:
    """Every candle of the SET of trades, keyed by Candle.key: a trade repeated (same natural key)
    counts once, as the platform's exactly-once output must count it."""
    unique = {t.natural_key: t for t in trades}
    out: dict[str, Candle] = {}
    for key, fields in recompute_candles(unique.values(), timeframes).items():
        candle = as_candle(key, fields, revision)
        out[candle.key] = candle
    return out


def compare_exact(
    expected: Mapping[CandleKey, Mapping[str, Any]],
    actual: Mapping[CandleKey, Mapping[str, Any]],
    fields: Iterable[str] = CANDLE_FIELDS,
    limit: int = 20,
) -> dict[str, Any]:
    """Candle-by-candle, field-by-field equality (Decimals compared by value)."""
    fields = tuple(fields)
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    mismatches: list[dict[str, Any]] = []
    field_mismatches = 0
    for key, want in expected.items():
        got = actual.get(key)
        if got is None:
            continue
        for name in fields:
            if _norm(want.get(name)) != _norm(got.get(name)):
                field_mismatches += 1
                if len(mismatches) < limit:
                    mismatches.append(
                        {
                            "candle": key,
                            "field": name,
                            "expected": str(want.get(name)),
                            "actual": str(got.get(name)),
                        }
                    )
    return {
        "expected": len(expected),
        "actual": len(actual),
        "missing": len(missing),
        "extra": len(extra),
        "field_mismatches": field_mismatches,
        "examples": mismatches,
        "missing_examples": [list(k) for k in missing[:5]],
        "extra_examples": [list(k) for k in extra[:5]],
    }


def _norm(value: Any) -> Any:
    if isinstance(value, Decimal):
        return value.normalize() if value else Decimal(0)
    if isinstance(value, str):
        try:
            return Decimal(value).normalize()
        except ArithmeticError:
            return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return value


def compare_with_float_peer(
    ours: Mapping[CandleKey, Mapping[str, Any]], peer: Mapping[CandleKey, Mapping[str, Any]]
) -> dict[str, Any]:
    """Compare K2's exact candles with a peer's float candles over the windows both emitted.

    Per field: `exact` when Decimal(repr(float)) equals our Decimal, `close` when the relative
    difference is < 1e-9 (float rounding of sums), otherwise a real mismatch.
    """
    fields = ("open", "high", "low", "close", "volume", "trade_count")
    common = [k for k in ours if k in peer]
    counts = {name: {"exact": 0, "float_rounding": 0, "mismatch": 0} for name in fields}
    examples: list[dict[str, Any]] = []
    for key in common:
        for name in fields:
            want = Decimal(str(ours[key][name]))
            raw = peer[key].get(name)
            got = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(str(raw))
            if got == want:
                counts[name]["exact"] += 1
            elif want != 0 and abs((got - want) / want) < Decimal("1e-9"):
                counts[name]["float_rounding"] += 1
            else:
                counts[name]["mismatch"] += 1
                if len(examples) < 10:
                    examples.append({"candle": list(key), "field": name, "k2": str(want), "peer": str(raw)})
    equal_candles = sum(1 for k in common if all(_peer_equal(ours[k][n], peer[k].get(n)) for n in fields))
    return {
        "k2_candles": len(ours),
        "peer_candles": len(peer),
        "compared": len(common),
        "only_k2": len([k for k in ours if k not in peer]),
        "only_peer": len([k for k in peer if k not in ours]),
        "candles_exactly_equal": equal_candles,
        "per_field": counts,
        "mismatch_examples": examples,
    }


def _peer_equal(want: Any, raw: Any) -> bool:
    got = Decimal(repr(raw)) if isinstance(raw, float) else Decimal(str(raw))
    return got == Decimal(str(want))
