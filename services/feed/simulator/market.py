"""A synthetic market: a random walk per instrument on its tick grid, lot-sized quantities, bursts.

Prices and quantities are kept as fixed-point integers (units of the tick / lot's own decimal
places) so that the hot path makes no Decimal and the wire encoders format them with integer
arithmetic; `SimTrade.price`/`.qty` give the exact Decimal when one is wanted.
"""

from __future__ import annotations

import random
from bisect import bisect
from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate
from math import log

from services.common.instruments import Instrument

_STEPS = (-1, 0, 0, 1)  # rng.choice((-1, 0, 0, 1))


def fixed(value: Decimal) -> tuple[int, int]:
    """(units, places) with value == units × 10^-places, keeping the decimal's own exponent."""
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise ValueError(f"not a finite decimal: {value}")
    units = 0
    for digit in digits:
        units = units * 10 + digit
    if sign:
        units = -units
    if exponent > 0:
        return units * 10**exponent, 0
    return units, -exponent


@dataclass(slots=True)
class SimTrade:
    native: str
    price_units: int  # price = price_units × 10^-price_places
    price_places: int
    qty_units: int  # qty = qty_units × 10^-qty_places
    qty_places: int
    taker_buy: bool
    trade_id: int
    ts_ns: int

    @classmethod
    def of(
        cls, native: str, price: Decimal, qty: Decimal, taker_buy: bool, trade_id: int, ts_ns: int
    ) -> SimTrade:
        return cls(native, *fixed(price), *fixed(qty), taker_buy, trade_id, ts_ns)

    @property
    def price(self) -> Decimal:
        return Decimal(self.price_units).scaleb(-self.price_places)

    @property
    def qty(self) -> Decimal:
        return Decimal(self.qty_units).scaleb(-self.qty_places)


class _Walk:
    __slots__ = (
        "inst",
        "lambd",
        "lots_max",
        "native",
        "next_id",
        "price_coef",
        "price_places",
        "qty_coef",
        "qty_places",
        "ticks",
        "weight",
    )

    def __init__(self, inst: Instrument, rng: random.Random, weight: float) -> None:
        self.inst = inst
        self.native = inst.native
        self.ticks = int(inst.ref_price / inst.price_tick)
        self.next_id = rng.randrange(10_000_000, 90_000_000)
        # About 50 quote units to about 50,000 per trade, in whole lots.
        self.lots_max = max(1, int(Decimal(5000) / inst.ref_price / inst.qty_step))
        self.lambd = 3.0 / self.lots_max  # expovariate's rate for the lot count
        self.weight = weight
        # price = ticks × price_tick = (ticks × price_coef) × 10^-price_places; the same for lots.
        self.price_coef, self.price_places = fixed(inst.price_tick)
        self.qty_coef, self.qty_places = fixed(inst.qty_step)


class SyntheticMarket:
    """Trades for the instruments of one exchange; deterministic for a seed and a call sequence."""

    def __init__(self, instruments: list[Instrument], seed: int, bursts: bool = True) -> None:
        self.rng = random.Random(seed)
        self.bursts = bursts
        # Zipf-like activity: the first listed instrument trades most.
        self.walks = [_Walk(inst, self.rng, 1.0 / (rank + 1)) for rank, inst in enumerate(instruments)]
        self._weights = [walk.weight for walk in self.walks]
        self._cum_weights = list(accumulate(self._weights))
        self.burst_left = 0.0

    def rate_factor(self, dt: float) -> float:
        """1 normally; 5-20 during a burst (a burst starts about once a minute and lasts 0.5-3 s)."""
        if not self.bursts:
            return 1.0
        if self.burst_left > 0:
            self.burst_left -= dt
            return self._burst_factor
        if self.rng.random() < dt / 60.0:
            self.burst_left = self.rng.uniform(0.5, 3.0)
            self._burst_factor = self.rng.uniform(5.0, 20.0)
        return 1.0

    _burst_factor = 1.0

    def trades(self, count: int, now_ns: int) -> list[SimTrade]:
        """`count` trades a microsecond apart from now_ns.

        The draws are those of `rng.choices(walks, weights)`, `rng.choice((-1, 0, 0, 1))`,
        `rng.expovariate(...)` and `rng.random()`, written out (same calls on the generator, same
        float expressions, so the same trades for a seed; tests compare with the plain version):
        this loop is the simulator's hottest.
        """
        if count <= 0 or not self.walks:
            return []
        rng = self.rng
        random_, getrandbits = rng.random, rng.getrandbits
        walks, cum_weights = self.walks, self._cum_weights
        total = cum_weights[-1] + 0.0
        hi = len(walks) - 1
        chosen = [walks[bisect(cum_weights, random_() * total, 0, hi)] for _ in range(count)]
        out = []
        append = out.append
        for walk in chosen:
            r = getrandbits(3)  # rng.choice of 4: _randbelow(4)
            while r >= 4:
                r = getrandbits(3)
            step = _STEPS[r] * (1 + int(-log(1.0 - random_()) / 1.0))
            ticks = walk.ticks + step
            walk.ticks = ticks = ticks if ticks > 1 else 1
            lots = 1 + min(walk.lots_max, int(-log(1.0 - random_()) / walk.lambd))
            walk.next_id += 1
            append(
                SimTrade(
                    walk.native,
                    ticks * walk.price_coef,
                    walk.price_places,
                    lots * walk.qty_coef,
                    walk.qty_places,
                    random_() < 0.5,
                    walk.next_id,
                    now_ns,
                )
            )
            now_ns += 1000  # a microsecond apart: distinct, ordered timestamps
        return out
