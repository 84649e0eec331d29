"""Event-time candle state of one partition of market.crypto.trades (pure logic, no I/O).

Watermarks (µs): `event_watermark` = highest exchange_ts applied − grace; `watermark` = the
effective one, max(event_watermark, wall clock − grace once the partition has been idle). A window
closes when its end <= watermark. Closed candles stay until end + horizon <= event_watermark, so the
purge follows the data's own time: a paused replay whose windows closed early by the wall clock still
revises them when its trades resume, instead of finding them purged.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import orjson

from services.common.schemas import TIMEFRAMES, Trade, trade_order_key
from services.ohlcv import metrics
from services.ohlcv.candles import CandleState, OrderKey

log = logging.getLogger(__name__)

WATERMARK_KEY = "~wm"
_TF_ITEMS = tuple(TIMEFRAMES.items())
MINUTE_US = TIMEFRAMES["1m"]  # every longer timeframe is a multiple: one 1m window lies in one window of each


@dataclass(frozen=True, slots=True)
class EngineConfig:
    grace_us: int
    idle_timeout: float  # seconds (monotonic clock)
    horizon_us: int
    live_interval: float  # seconds


class PartitionState:
    """Open and recently closed candles of one source partition, and its watermarks."""

    def __init__(self, partition: int, config: EngineConfig, now_mono: float) -> None:
        self.partition = partition
        self.config = config
        self.candles: dict[str, CandleState] = {}
        self.event_max: int | None = None  # highest exchange_ts applied
        self.watermark: int | None = None  # effective watermark
        self.last_trade_mono = now_mono
        self.last_offset = -1  # highest source offset seen (consumer lag)
        self._open_heap: list[tuple[int, str]] = []  # (window end, key) of open candles
        self._closed_heap: list[tuple[int, str]] = []  # (window end, key) of closed candles
        self.pending: set[str] = set()  # closed candles whose content is not published yet
        self.live_dirty: set[str] = set()  # open candles changed since their last live update
        self.live_next_due: float | None = None  # when the next of them may be sent (by live_due)
        self.persist_dirty: set[str] = set()  # candles to write to the changelog
        self.tombstones: set[str] = set()
        self.watermark_dirty = False
        # per symbol: (1m window start, its six candles, any closed, their keys) of the latest trade
        self._recent: dict[str, tuple[int, list[CandleState], bool, list[str]]] = {}

    # -- loading -------------------------------------------------------------------------------
    def load(self, items: Iterable[tuple[str, bytes]]) -> None:
        """Rebuild from the changelog-backed table: (key without the partition prefix, value)."""
        for key, value in items:
            if key == WATERMARK_KEY:
                self.event_max, self.watermark = orjson.loads(value)
                continue
            candle = CandleState.decode(value)
            self.candles[key] = candle
            if candle.closed:
                heapq.heappush(self._closed_heap, (candle.end, key))
                if candle.pending:
                    self.pending.add(key)
            else:
                heapq.heappush(self._open_heap, (candle.end, key))

    @property
    def event_watermark(self) -> int | None:
        return None if self.event_max is None else self.event_max - self.config.grace_us

    # -- trades --------------------------------------------------------------------------------
    def apply(self, trade: Trade, offset: int, now_mono: float) -> bool:
        """Apply one trade to its six candles; False when it was already applied (a re-delivery)."""
        if offset > self.last_offset:
            self.last_offset = offset
        self.last_trade_mono = now_mono
        ts = trade.exchange_ts
        order = trade_order_key(ts, trade.trade_id)
        prefix = f"{trade.exchange}:{trade.symbol}:"
        minute = ts - ts % MINUTE_US
        cached = self._recent.get(prefix)
        if (
            cached is not None
            and cached[0] == minute
            and not cached[2]
            and not any(c.closed for c in cached[1])
        ):
            # hot path: same 1m window as this symbol's previous trade, so the same six open candles
            applied = False
            for candle in cached[1]:
                if offset > candle.last_offset:
                    candle.apply(trade, order, offset)
                    applied = True
            self.live_dirty.update(cached[3])
            self.persist_dirty.update(cached[3])
            self._advance(ts)
            return applied
        applied = self._apply_general(trade, offset, order, prefix)
        self._advance(ts)
        return applied

    def _apply_general(self, trade: Trade, offset: int, order: OrderKey, prefix: str) -> bool:
        ts = trade.exchange_ts
        watermark = self.watermark
        applied = False
        candles = self.candles
        touched: list[CandleState] = []
        any_closed = False
        for timeframe, length in _TF_ITEMS:
            start = ts - ts % length
            key = f"{prefix}{timeframe}:{start}"
            candle = candles.get(key)
            if candle is None:
                end = start + length
                candle = CandleState(trade.exchange, trade.symbol, timeframe, start)
                if watermark is not None and end <= watermark:
                    event_wm = self.event_watermark
                    if event_wm is not None and end + self.config.horizon_us <= event_wm:
                        metrics.LATE_TRADES.labels(timeframe, "beyond_horizon").inc()
                        if not applied:  # once per trade, at its shortest affected timeframe
                            log.warning(
                                "trade %s %s %s for %s window %d is beyond the correction horizon; "
                                "not applied",
                                trade.exchange,
                                trade.symbol,
                                trade.trade_id,
                                timeframe,
                                start,
                            )
                        applied = True  # not a duplicate: counted as late
                        any_closed = True
                        continue
                    candle.closed = True
                    heapq.heappush(self._closed_heap, (end, key))
                else:
                    heapq.heappush(self._open_heap, (end, key))
                candles[key] = candle
            touched.append(candle)
            if candle.closed:
                any_closed = True
            if offset <= candle.last_offset:
                continue  # already in this candle: re-delivered after a restart
            if candle.closed:
                metrics.LATE_TRADES.labels(timeframe, "revised").inc()
                candle.pending = True
                self.pending.add(key)
            else:
                self.live_dirty.add(key)
            candle.apply(trade, order, offset)
            self.persist_dirty.add(key)
            applied = True
        if len(touched) == len(_TF_ITEMS):
            self._recent[prefix] = (ts - ts % MINUTE_US, touched, any_closed, [c.key for c in touched])
        else:
            self._recent.pop(prefix, None)
        return applied

    def _advance(self, ts: int) -> None:
        if self.event_max is None or ts > self.event_max:
            self.event_max = ts
            new_wm = ts - self.config.grace_us
            if self.watermark is None or new_wm > self.watermark:
                self.watermark = new_wm
            self.watermark_dirty = True

    # -- time ----------------------------------------------------------------------------------
    def advance_idle(self, now_us: int, now_mono: float) -> None:
        """An idle partition's watermark follows the wall clock (only once it has seen a trade)."""
        if self.event_max is None or now_mono - self.last_trade_mono < self.config.idle_timeout:
            return
        wall_wm = now_us - self.config.grace_us
        if self.watermark is None or wall_wm > self.watermark:
            self.watermark = wall_wm
            self.watermark_dirty = True

    def close_due(self) -> None:
        """Close every open candle whose window end <= watermark (it becomes pending publication)."""
        watermark = self.watermark
        if watermark is None:
            return
        heap = self._open_heap
        while heap and heap[0][0] <= watermark:
            end, key = heapq.heappop(heap)
            candle = self.candles.get(key)
            if candle is None or candle.closed:
                continue
            candle.closed = True
            candle.pending = True
            self.pending.add(key)
            self.live_dirty.discard(key)
            self.persist_dirty.add(key)
            heapq.heappush(self._closed_heap, (end, key))

    def finals_due(self) -> list[tuple[CandleState, int, int]]:
        """(candle, revision to publish, version published) for every pending closed candle."""
        return [(c, c.revision + 1, c.version) for c in (self.candles[k] for k in self.pending)]

    def mark_published(self, candle: CandleState, revision: int, version: int) -> None:
        key = candle.key
        if self.candles.get(key) is not candle:
            return  # dropped meanwhile (rebalance)
        candle.revision = max(candle.revision, revision)
        if candle.version == version:
            candle.pending = False
            self.pending.discard(key)
        self.persist_dirty.add(key)

    def purge(self) -> int:
        """Forget closed, published candles past the correction horizon (event time); returns how many."""
        event_wm = self.event_watermark
        if event_wm is None:
            return 0
        limit = event_wm - self.config.horizon_us
        heap = self._closed_heap
        purged = 0
        while heap and heap[0][0] <= limit:
            key = heap[0][1]
            candle = self.candles.get(key)
            if candle is not None and candle.pending:
                break  # publish first
            heapq.heappop(heap)
            if candle is not None:
                self._recent.clear()
                del self.candles[key]
                self.persist_dirty.discard(key)
                self.tombstones.add(key)
                purged += 1
        return purged

    def live_due(self, now_mono: float, force: bool = False) -> list[CandleState]:
        """Open candles changed since their last live update and allowed to send one now."""
        self.live_next_due = None
        if not self.live_dirty:
            return []
        interval = self.config.live_interval
        due = []
        for key in list(self.live_dirty):
            candle = self.candles.get(key)
            if candle is None or candle.closed:
                self.live_dirty.discard(key)
            elif force or now_mono - candle.live_sent >= interval:
                candle.live_sent = now_mono
                self.live_dirty.discard(key)
                due.append(candle)
            elif self.live_next_due is None or candle.live_sent + interval < self.live_next_due:
                self.live_next_due = candle.live_sent + interval
        return due

    # -- persistence ---------------------------------------------------------------------------
    def drain_persist(self) -> Iterator[tuple[str, bytes | None]]:
        """Changelog writes owed: the watermark first, then candles, then tombstones of purged ones."""
        if self.watermark_dirty:
            self.watermark_dirty = False
            yield WATERMARK_KEY, orjson.dumps([self.event_max, self.watermark])
        dirty, self.persist_dirty = self.persist_dirty, set()
        for key in dirty:
            candle = self.candles.get(key)
            if candle is not None:
                yield key, candle.encode()
        tombs, self.tombstones = self.tombstones, set()
        for key in tombs:
            yield key, None

    def counts(self) -> tuple[int, int]:
        closed = sum(1 for c in self.candles.values() if c.closed)
        return len(self.candles) - closed, closed
