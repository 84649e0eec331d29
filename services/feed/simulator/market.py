"""A synthetic market: a random walk per instrument on its tick grid, lot-sized quantities, bursts."""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal

from services.common.instruments import Instrument


@dataclass(slots=True)
class SimTrade:
    native: str
    price: Decimal
    qty: Decimal
    taker_buy: bool
    trade_id: int
    ts_ns: int


class _Walk:
    __slots__ = ("inst", "lots_max", "next_id", "ticks", "weight")

    def __init__(self, inst: Instrument, rng: random.Random, weight: float) -> None:
        self.inst = inst
        self.ticks = int(inst.ref_price / inst.price_tick)
        self.next_id = rng.randrange(10_000_000, 90_000_000)
        # About 50 quote units to about 50,000 per trade, in whole lots.
        self.lots_max = max(1, int(Decimal(5000) / inst.ref_price / inst.qty_step))
        self.weight = weight


class SyntheticMarket:
    """Trades for the instruments of one exchange; deterministic for a seed and a call sequence."""

    def __init__(self, instruments: list[Instrument], seed: int, bursts: bool = True) -> None:
        self.rng = random.Random(seed)
        self.bursts = bursts
        # Zipf-like activity: the first listed instrument trades most.
        self.walks = [_Walk(inst, self.rng, 1.0 / (rank + 1)) for rank, inst in enumerate(instruments)]
        self._weights = [walk.weight for walk in self.walks]
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
        if count <= 0 or not self.walks:
            return []
        rng = self.rng
        out = []
        for walk in rng.choices(self.walks, self._weights, k=count):
            step = rng.choice((-1, 0, 0, 1)) * (1 + int(rng.expovariate(1.0)))
            walk.ticks = max(1, walk.ticks + step)
            lots = 1 + min(walk.lots_max, int(rng.expovariate(3.0 / walk.lots_max)))
            inst = walk.inst
            walk.next_id += 1
            out.append(
                SimTrade(
                    inst.native,
                    walk.ticks * inst.price_tick,
                    lots * inst.qty_step,
                    rng.random() < 0.5,
                    walk.next_id,
                    now_ns,
                )
            )
            now_ns += 1000  # a microsecond apart: distinct, ordered timestamps
        return out
