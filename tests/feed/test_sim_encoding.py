"""The simulator's fast paths give exactly what the plain versions give.

The synthetic market draws its random numbers written out and keeps amounts as fixed-point
integers; the wire encoders format those with integer arithmetic and cache the seconds of
RFC 3339 timestamps. Each is compared here with the straightforward Decimal / random.Random /
datetime version it replaces.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from services.common.instruments import EXCHANGES, default_instruments
from services.feed.simulator import wire
from services.feed.simulator.market import SimTrade, SyntheticMarket, fixed


def _plain_trades(market: SyntheticMarket, count: int, now_ns: int) -> list[tuple]:
    """The market's draws with the random.Random calls themselves and Decimal arithmetic."""
    rng, out = market.rng, []
    for walk in rng.choices(market.walks, [w.weight for w in market.walks], k=count):
        step = rng.choice((-1, 0, 0, 1)) * (1 + int(rng.expovariate(1.0)))
        walk.ticks = max(1, walk.ticks + step)
        lots = 1 + min(walk.lots_max, int(rng.expovariate(3.0 / walk.lots_max)))
        walk.next_id += 1
        price, qty = walk.ticks * walk.inst.price_tick, lots * walk.inst.qty_step
        out.append((walk.inst.native, price, qty, rng.random() < 0.5, walk.next_id, now_ns))
        now_ns += 1000
    return out


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_the_written_out_draws_are_the_random_calls(exchange: str) -> None:
    instruments = default_instruments().for_exchange(exchange)
    fast, plain = SyntheticMarket(instruments, 99), SyntheticMarket(instruments, 99)
    now = 1_795_089_600_000_000_000
    for count in (1, 7, 250, 3000, 0, 40):
        factor = fast.rate_factor(0.5), plain.rate_factor(0.5)
        assert factor[0] == factor[1]
        got = [(t.native, t.price, t.qty, t.taker_buy, t.trade_id, t.ts_ns) for t in fast.trades(count, now)]
        want = _plain_trades(plain, count, now)
        assert got == want
        # The same digits too (exponent included), not only equal values.
        assert [(str(g[1]), str(g[2])) for g in got] == [(str(w[1]), str(w[2])) for w in want]
        now += 10_000_000


def test_fixed_point_text_is_the_decimal_text() -> None:
    rng = random.Random(5)
    cases = [(0, 0), (1, 8), (5, 8), (123, 2), (10**20 + 7, 9), (1, 12), (999_999_999, 12), (-42, 3)]
    cases += [(rng.randrange(1, 10 ** rng.randrange(1, 16)), rng.randrange(0, 13)) for _ in range(3000)]
    for units, places in cases:
        value = Decimal(units).scaleb(-places)
        assert wire.plain(units, places) == format(value, "f"), (units, places)
        assert wire.fixed8(units, places) == f"{value:.8f}", (units, places)
        assert wire.json_number(units, places) == wire.number(value), (units, places)
        assert fixed(value) == (units, places)
    assert fixed(Decimal("0.50")) == (50, 2) and fixed(Decimal("1E+1")) == (10, 0)


def test_trade_frames_carry_plain_decimals_with_the_instrument_digits() -> None:
    trade = SimTrade.of("BTC-USD", Decimal("67000.10"), Decimal("5E-8"), True, 12, 1_795_089_600_000_000_000)
    coinbase = wire.coinbase_trades_events([trade])
    assert '"price":"67000.10","size":"0.00000005"' in coinbase  # Coinbase never sends "5E-8"
    kraken = wire.kraken_trades([trade])
    assert '"price":67000.1,"qty":0.00000005,' in kraken
    binance = wire.binance_trade(trade)
    assert '"p":"67000.10000000","q":"0.00000005"' in binance


def test_rfc3339_is_the_datetime_text() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        ns = rng.randrange(1_500_000_000 * 10**9, 2_500_000_000 * 10**9)
        seconds, frac = divmod(ns, 10**9)
        base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        for digits in (0, 3, 6, 9):
            want = base + "Z" if digits == 0 else f"{base}.{frac:09d}"[: len(base) + 1 + digits] + "Z"
            assert wire.rfc3339(ns, digits) == want
