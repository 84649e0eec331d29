"""Regenerate `demo.jsonl.gz` byte for byte: `python -m services.feed.captures.make_demo [OUT]`.

The demo capture is what the simulator would serve and `record` would write, built with the
simulator's own market model (services.feed.simulator.market) and frame encoders
(services.feed.simulator.wire) on a virtual clock instead of the wall clock, so the same seed
gives the same bytes on every machine. Three minutes, three exchanges, three symbols each:

- Binance combined stream: one trade per frame.
- Kraken v2: status, one subscribe ack per symbol, snapshots, multi-trade updates, heartbeats.
- Coinbase: two subscriptions confirmations, a snapshot, multi-product market_trades envelopes,
  heartbeats; one sequence_num series per connection across every channel.
- At 60 s, 4 malformed frames per exchange (see README: "Demo capture").
- At 90 s, one trade frame per exchange delivered twice (same bytes).
- At 120 s, the Kraken connection drops and reconnects 3 s later: a K2 disconnect marker, a new
  connection id, a fresh status/ack/snapshot (the snapshot repeats trades already seen).
"""

from __future__ import annotations

import random
import re
import sys
from collections import defaultdict, deque
from datetime import UTC, datetime
from pathlib import Path

from services.common.instruments import default_instruments
from services.common.raw import KIND_MARKER, DisconnectMarker
from services.feed.capture import encode_line, open_capture
from services.feed.records import RawRecord
from services.feed.simulator import wire
from services.feed.simulator.market import SimTrade, SyntheticMarket
from services.feed.simulator.server import malformed_frames

OUT = Path(__file__).with_name("demo.jsonl.gz")
SEED = 20261119
START_NS = int(datetime(2026, 11, 19, 12, 0, tzinfo=UTC).timestamp()) * 1_000_000_000
DURATION_S = 180
TICK_NS = 10_000_000
RATE = 6.0  # trades per second per exchange, before bursts
# Kraken and Coinbase batch trades into a frame every 100 / 250 ms (several trades, several products).
BATCH_TICKS = {"binance": 1, "kraken": 10, "coinbase": 25}
SYMBOLS = {
    "binance": ["BTCUSDT", "ETHUSDT", "SOLUSDT"],
    "kraken": ["BTC/USD", "ETH/USD", "SOL/USD"],
    "coinbase": ["BTC-USD", "ETH-USD", "SOL-USD"],
}
MALFORMED_AT_S, DUPLICATE_AT_S, KRAKEN_DROP_AT_S, KRAKEN_DOWN_S = 60, 90, 120, 3


class _Conn:
    def __init__(self, exchange: str, number: int) -> None:
        self.exchange = exchange
        self.id = f"{exchange}-demo{number:08d}"
        self.seq = 0
        self.cb_seq = 0
        self.last_ns = 0


class DemoBuilder:
    def __init__(self) -> None:
        self.rng = random.Random(SEED)
        instruments = default_instruments()
        self.markets = {
            ex: SyntheticMarket([instruments.require(ex, n) for n in natives], SEED + i)
            for i, (ex, natives) in enumerate(SYMBOLS.items())
        }
        self.recent: dict[str, deque[SimTrade]] = defaultdict(lambda: deque(maxlen=10))
        self.records: list[RawRecord] = []
        self.conns = {ex: _Conn(ex, 1) for ex in SYMBOLS}
        self.carry = dict.fromkeys(SYMBOLS, 0.0)
        self.duplicated: set[str] = set()
        self.pending: dict[str, list[SimTrade]] = {ex: [] for ex in SYMBOLS}

    def emit(self, conn: _Conn, at_ns: int, text: str, kind: str = "frame", seq: int | None = None) -> None:
        # Network delay 0.2-20 ms, never reordering a connection's frames.
        received = max(at_ns + self.rng.randrange(200_000, 20_000_000), conn.last_ns + 1000)
        conn.last_ns = received
        if seq is None:
            conn.seq += 1
            seq = conn.seq
        self.records.append(RawRecord(conn.exchange, text.encode(), received, conn.id, seq, kind))

    def coinbase(self, conn: _Conn, at_ns: int, channel: str, events: str) -> None:
        self.emit(conn, at_ns, wire.coinbase_envelope(channel, conn.cb_seq, at_ns, events))
        conn.cb_seq += 1

    def handshake(self, exchange: str, at_ns: int) -> None:
        conn = self.conns[exchange]
        natives = SYMBOLS[exchange]
        if exchange == "kraken":
            self.emit(conn, at_ns, wire.kraken_status(1000 + int(conn.id[-2:])))
            for symbol in natives:
                self.emit(conn, at_ns, wire.kraken_ack(symbol, True, at_ns, at_ns + 40_000))
                if self.recent[symbol]:
                    self.emit(conn, at_ns, wire.kraken_trades(list(self.recent[symbol]), "snapshot"))
        elif exchange == "coinbase":
            self.coinbase(
                conn, at_ns, "subscriptions", wire.coinbase_subscriptions_events({"market_trades": natives})
            )
            snapshot = [t for p in natives for t in self.recent[p]]
            self.coinbase(conn, at_ns, "market_trades", wire.coinbase_trades_events(snapshot, "snapshot"))
            self.coinbase(
                conn,
                at_ns,
                "subscriptions",
                wire.coinbase_subscriptions_events({"market_trades": natives, "heartbeats": ["heartbeats"]}),
            )

    def trades(self, exchange: str, at_ns: int, dt: float) -> list[SimTrade]:
        market = self.markets[exchange]
        expected = RATE * dt * market.rate_factor(dt) + self.carry[exchange]
        count = int(expected)
        self.carry[exchange] = expected - count
        made = market.trades(count, at_ns)
        for trade in made:
            self.recent[trade.native].append(trade)
        return made

    def frames_for(self, exchange: str, trades: list[SimTrade], at_ns: int) -> list[str]:
        if exchange == "binance":
            return [wire.binance_trade(t) for t in trades]
        if exchange == "kraken":
            groups: dict[str, list[SimTrade]] = defaultdict(list)
            for trade in trades:
                groups[trade.native].append(trade)
            return [wire.kraken_trades(group) for group in groups.values()]
        return [wire.coinbase_trades_events(trades)]  # events only: the envelope takes the sequence

    def build(self) -> list[RawRecord]:
        # Some history first, so the first snapshots are not empty.
        for exchange in SYMBOLS:
            for _ in range(20):
                self.trades(exchange, START_NS - 10 * 1_000_000_000, 0.5)
        for exchange in SYMBOLS:
            self.handshake(exchange, START_NS)
        kraken_down_until = None
        for tick in range(1, DURATION_S * 1_000_000_000 // TICK_NS + 1):
            now = START_NS + tick * TICK_NS
            elapsed_ns = tick * TICK_NS
            second_boundary = elapsed_ns % 1_000_000_000 == 0
            for exchange in SYMBOLS:
                conn = self.conns[exchange]
                self.pending[exchange].extend(self.trades(exchange, now, TICK_NS / 1e9))
                made = []
                if tick % BATCH_TICKS[exchange] == 0:
                    made, self.pending[exchange] = self.pending[exchange], []
                if exchange == "kraken" and kraken_down_until is not None:
                    if now < kraken_down_until:
                        continue  # the connection is down: these trades are lost to us
                    self._reconnect_kraken(now)
                    kraken_down_until = None
                if made:
                    due = elapsed_ns >= DUPLICATE_AT_S * 1_000_000_000
                    duplicate = due and exchange not in self.duplicated
                    for text in self.frames_for(exchange, made, now):
                        if exchange == "coinbase":
                            frame = wire.coinbase_envelope("market_trades", conn.cb_seq, now, text)
                            conn.cb_seq += 1
                        else:
                            frame = text
                        self.emit(conn, now, frame)
                        if duplicate:
                            self.emit(conn, now, frame)
                            self.duplicated.add(exchange)
                            duplicate = False
                if elapsed_ns == MALFORMED_AT_S * 1_000_000_000:
                    for text in malformed_frames(exchange, 4):
                        if exchange == "coinbase" and '"sequence_num":' in text[:120]:
                            text = wire.renumber(text, conn.cb_seq)
                            conn.cb_seq += 1
                        self.emit(conn, now, _restamp(text, now))
                if second_boundary:
                    counter = elapsed_ns // 1_000_000_000
                    if exchange == "kraken":
                        self.emit(conn, now, wire.KRAKEN_HEARTBEAT)
                    elif exchange == "coinbase":
                        self.coinbase(
                            conn,
                            now,
                            "heartbeats",
                            wire.coinbase_heartbeat_events(now, counter, 3600.0 + counter),
                        )
            if elapsed_ns == KRAKEN_DROP_AT_S * 1_000_000_000:
                kraken_down_until = now + KRAKEN_DOWN_S * 1_000_000_000
                self.kraken_lost = (self.conns["kraken"].id, self.conns["kraken"].last_ns)
        self.records.sort(key=lambda r: r.received_at_ns)  # stable: per-connection order holds
        return self.records

    def _reconnect_kraken(self, now: int) -> None:
        lost_id, last_ns = self.kraken_lost
        conn = self.conns["kraken"] = _Conn("kraken", 2)
        conn.last_ns = now
        marker = DisconnectMarker(
            "kraken", lost_id, conn.id, last_ns, now, "closed_abnormal", tuple(SYMBOLS["kraken"])
        )
        self.records.append(RawRecord("kraken", marker.encode(), now, conn.id, 0, KIND_MARKER))
        self.handshake("kraken", now)


def _restamp(text: str, now_ns: int) -> str:
    """malformed_frames stamps the wall clock; the demo stamps its virtual clock."""
    ms = now_ns // 1_000_000
    text = re.sub(r'"([ET])":\d{13}', lambda m: f'"{m.group(1)}":{ms}', text)
    return re.sub(r'"(timestamp|time)":"[^"]*Z"', lambda m: f'"{m.group(1)}":"{wire.rfc3339(now_ns)}"', text)


def main(argv: list[str] | None = None) -> int:
    out = Path((argv or sys.argv[1:] or [str(OUT)])[0])
    records = DemoBuilder().build()
    with open_capture(out, "wt") as handle:
        for record in records:
            handle.write(encode_line(record))
    trades = sum(r.value.count(b'"trade_id"') for r in records)
    print(f"wrote {len(records)} records ({trades} trade entries) to {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
