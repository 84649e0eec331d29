"""A seeded synthetic market for the benchmarks: trades with known truth, rendered as exchange frames.

The chaos run and the peer benchmark need inputs whose expected output is known exactly: this
module makes trades (random walk on each instrument's tick/lot grid, sequential trade ids per
symbol), renders them as the frames Binance, Kraken v2 and Coinbase send (see the design notes),
and renders deliberately bad frames with the dead-letter reason each must produce.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from bench.reference import RefTrade
from services.common.instruments import Instrument, default_instruments


@dataclass(frozen=True, slots=True)
class Frame:
    exchange: str
    received_at_ns: int
    text: str
    trades: tuple[RefTrade, ...] = ()
    bad_reasons: tuple[str, ...] = ()  # dead-letter reasons this frame must produce, one per bad element


def _dec(value: Decimal) -> str:
    return format(value, "f")


def _iso(ts_us: int, digits: int) -> str:
    dt = datetime.fromtimestamp(ts_us // 1_000_000, tz=UTC)
    frac = f"{ts_us % 1_000_000:06d}"
    if digits == 9:
        frac += "000"
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + frac + "Z"


class SyntheticMarket:
    """Trades for every instrument of the bundled list, `rate` trades/s of event time, seeded."""

    def __init__(
        self,
        seed: int = 7,
        exchanges: tuple[str, ...] = ("binance", "kraken", "coinbase"),
        symbols_per_exchange: int = 4,
    ) -> None:
        self.rng = random.Random(seed)
        instruments = default_instruments()
        self.instruments: list[Instrument] = []
        for exchange in exchanges:
            self.instruments.extend(instruments.for_exchange(exchange)[:symbols_per_exchange])
        self.prices = {(i.exchange, i.native): i.ref_price for i in self.instruments}
        self.next_id = {(i.exchange, i.native): 1_000_000 for i in self.instruments}
        self.coinbase_seq = 0

    def trade(self, inst: Instrument, ts_us: int) -> tuple[RefTrade, int]:
        key = (inst.exchange, inst.native)
        ticks = self.rng.choice((-2, -1, -1, 0, 0, 0, 1, 1, 2))
        price = max(self.prices[key] + ticks * inst.price_tick, inst.price_tick)
        self.prices[key] = price
        steps = self.rng.randint(1, 5000)
        quantity = inst.qty_step * steps
        trade_id = self.next_id[key]
        self.next_id[key] += 1
        side = "BUY" if self.rng.random() < 0.5 else "SELL"
        if inst.exchange == "binance":
            ts_us -= ts_us % 1000  # Binance stamps milliseconds
        return RefTrade(inst.exchange, inst.symbol, str(trade_id), ts_us, price, quantity, side), trade_id

    def frames(self, start_us: int, seconds: float, rate: float, delay_us: int = 2000) -> Iterator[Frame]:
        """Frames carrying `rate` trades/s for `seconds` of event time from start_us (Kraken and
        Coinbase frames carry 1-3 trades each, as they do live)."""
        total = int(seconds * rate)
        step = 1_000_000 / rate
        ts = float(start_us)
        produced = 0
        while produced < total:
            inst = self.rng.choice(self.instruments)
            n = 1 if inst.exchange == "binance" else min(self.rng.randint(1, 3), total - produced)
            trades = []
            for _ in range(n):
                trades.append(self.trade(inst, int(ts)))
                ts += step
            produced += n
            yield self.render(inst, trades, int(ts) + delay_us)

    def render(self, inst: Instrument, trades: list[tuple[RefTrade, int]], received_us: int) -> Frame:
        refs = tuple(t for t, _ in trades)
        if inst.exchange == "binance":
            ((t, tid),) = trades
            ms = t.exchange_ts // 1000
            text = json.dumps(
                {
                    "stream": f"{inst.native.lower()}@trade",
                    "data": {
                        "e": "trade",
                        "E": ms,
                        "s": inst.native,
                        "t": tid,
                        "p": _dec(t.price),
                        "q": _dec(t.quantity),
                        "T": ms,
                        "m": t.side == "SELL",
                        "M": True,
                    },
                },
                separators=(",", ":"),
            )
        elif inst.exchange == "kraken":
            data = [
                f'{{"symbol":"{inst.native}","side":"{t.side.lower()}","price":{_dec(t.price)},'
                f'"qty":{_dec(t.quantity)},"ord_type":"market","trade_id":{tid},'
                f'"timestamp":"{_iso(t.exchange_ts, 6)}"}}'
                for t, tid in trades
            ]
            text = '{"channel":"trade","type":"update","data":[' + ",".join(data) + "]}"
        else:
            self.coinbase_seq += 1
            maker = {"BUY": "SELL", "SELL": "BUY"}
            text = json.dumps(
                {
                    "channel": "market_trades",
                    "client_id": "",
                    "timestamp": _iso(received_us, 9),
                    "sequence_num": self.coinbase_seq,
                    "events": [
                        {
                            "type": "update",
                            "trades": [
                                {
                                    "trade_id": str(tid),
                                    "product_id": inst.native,
                                    "price": _dec(t.price),
                                    "size": _dec(t.quantity),
                                    "side": maker[t.side],
                                    "time": _iso(t.exchange_ts, 6),
                                }
                                for t, tid in trades
                            ],
                        }
                    ],
                },
                separators=(",", ":"),
            )
        return Frame(inst.exchange, received_us * 1000, text, refs)

    def bad_frames(self, received_us: int) -> list[Frame]:
        """One frame per dead-letter rule we inject, each producing exactly one dead letter."""
        binance = next(i for i in self.instruments if i.exchange == "binance")
        ms = received_us // 1000
        good = {
            "e": "trade",
            "E": ms,
            "s": binance.native,
            "t": 1,
            "p": "1.5",
            "q": "2",
            "T": ms,
            "m": False,
            "M": True,
        }

        def bframe(data: dict) -> str:
            return json.dumps(
                {"stream": f"{binance.native.lower()}@trade", "data": data}, separators=(",", ":")
            )

        cases = [
            ('{"stream":"btcusdt@trade","data":{"e":"trade","p":"1', "malformed_json"),
            (bframe({**good, "p": "-5"}), "bad_price"),
            (bframe({**good, "q": "0"}), "bad_quantity"),
            (bframe({**good, "s": "NOPEUSDT"}), "unknown_symbol"),
            (bframe({k: v for k, v in good.items() if k != "p"}), "missing_field"),
        ]
        return [Frame("binance", received_us * 1000, text, (), (reason,)) for text, reason in cases]


def write_capture(path: Path, frames: list[Frame]) -> None:
    """The feed's capture format: one {"exchange", "received_at" (ns), "frame"} per line, gzip."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt") as out:
        for frame in frames:
            out.write(
                json.dumps(
                    {"exchange": frame.exchange, "received_at": frame.received_at_ns, "frame": frame.text}
                )
                + "\n"
            )


def trades_of(frames: list[Frame]) -> dict[tuple[str, str, str], RefTrade]:
    """The expected silver content: every trade of every frame, by natural key (duplicates collapse)."""
    out: dict[tuple[str, str, str], RefTrade] = {}
    for frame in frames:
        for t in frame.trades:
            out[(t.exchange, t.symbol, t.trade_id)] = t
    return out


def total_quantity(trades: list[RefTrade]) -> Decimal:
    return sum((t.quantity for t in trades), Decimal(0))
