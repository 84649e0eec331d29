"""End-to-end latency probes: read the output topics and the silver table as a user would.

- normalized: a trade's arrival on market.crypto.trades (read_committed) − its exchange_ts
  (and − its received_at);
- live candle: a 1m update's arrival on market.crypto.ohlcv.live − the candle's last_trade_ts;
- final candle: a 1m final candle's arrival on market.crypto.ohlcv − its window_end (the close
  delay, which includes the watermark grace) and − its last_trade_ts;
- visible in silver: the commit time of the first silver snapshot whose offsets (the lake writer
  keeps them in the snapshot summary, `k2.offsets`) cover the trade − its exchange_ts.
The probe runs in its own thread and event loop; start() at the beginning of the measured window.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import threading
import time
from collections import defaultdict
from typing import Any

from bench.common import summarize
from services.common.topics import OHLCV, OHLCV_LIVE, TRADES

SUMMARY_OFFSETS = "k2.offsets"  # the lake writer's snapshot-summary key (services/lakewriter/offsets.py)


def now_us() -> int:
    return time.time_ns() // 1000


class LatencyProbe:
    def __init__(self, bootstrap: str, catalog_factory: Any = None, timeframe: str = "1m") -> None:
        self.bootstrap = bootstrap
        self.catalog_factory = catalog_factory
        self.timeframe = timeframe
        self.normalized: list[float] = []  # seconds
        self.received_to_normalized: list[float] = []
        self.live: list[float] = []
        self.final_close_delay: list[float] = []
        self.final_from_last_trade: list[float] = []
        self.silver: list[float] = []
        # per TRADES partition: sorted offsets and their exchange_ts, not yet seen in silver
        self._pending: dict[int, list[tuple[int, int]]] = defaultdict(list)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._seen_snapshots: set[int] = set()
        self._history: dict[int, list[tuple[int, int]]] = defaultdict(list)  # (next offset, commit µs)
        self.errors: list[str] = []

    # -- life --------------------------------------------------------------------------------------

    def start(self) -> LatencyProbe:
        ready = threading.Event()
        self._threads.append(threading.Thread(target=self._run_consumer, args=(ready,), daemon=True))
        if self.catalog_factory is not None:
            self._threads.append(threading.Thread(target=self._run_silver, daemon=True))
        for thread in self._threads:
            thread.start()
        ready.wait(30)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def results(self) -> dict[str, Any]:
        return {
            "exchange_ts_to_normalized_s": summarize(self.normalized),
            "received_at_to_normalized_s": summarize(self.received_to_normalized),
            "exchange_ts_to_live_candle_s": summarize(self.live),
            "window_end_to_final_candle_s": summarize(self.final_close_delay),
            "last_trade_to_final_candle_s": summarize(self.final_from_last_trade),
            "exchange_ts_to_visible_in_silver_s": summarize(self.silver),
            "errors": self.errors[:5],
        }

    # -- topics ------------------------------------------------------------------------------------

    def _run_consumer(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._consume(ready))
        except Exception as exc:  # the probe must never take the benchmark down
            self.errors.append(f"consumer: {exc!r}")
            ready.set()

    async def _consume(self, ready: threading.Event) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            isolation_level="read_committed",
            auto_offset_reset="latest",
        )
        await consumer.start()
        try:
            tps = []
            for topic in (TRADES, OHLCV_LIVE, OHLCV):
                parts = consumer.partitions_for_topic(topic)
                if not parts:
                    await consumer._client.force_metadata_update()
                    parts = consumer.partitions_for_topic(topic) or set()
                tps.extend(TopicPartition(topic, p) for p in parts)
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            for tp in tps:
                await consumer.position(tp)
            ready.set()
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                arrival = now_us()
                for tp, records in batch.items():
                    for record in records:
                        self._observe(tp.topic, tp.partition, record.offset, record.value, arrival)
        finally:
            await consumer.stop()

    def _observe(self, topic: str, partition: int, offset: int, value: bytes, arrival: int) -> None:
        try:
            data = json.loads(value)
        except ValueError:
            return
        if topic == TRADES:
            self.normalized.append((arrival - int(data["exchange_ts"])) / 1e6)
            self.received_to_normalized.append((arrival - int(data["received_at"])) / 1e6)
            if self.catalog_factory is not None:
                with self._lock:
                    self._pending[partition].append((offset, int(data["exchange_ts"])))
        elif data.get("timeframe") == self.timeframe:
            if topic == OHLCV_LIVE:
                self.live.append((arrival - int(data["last_trade_ts"])) / 1e6)
            else:
                self.final_close_delay.append((arrival - int(data["window_end"])) / 1e6)
                self.final_from_last_trade.append((arrival - int(data["last_trade_ts"])) / 1e6)

    # -- silver ------------------------------------------------------------------------------------

    def _run_silver(self) -> None:
        catalog = None
        while not self._stop.wait(0.5):
            try:
                if catalog is None:
                    catalog = self.catalog_factory()
                table = catalog.load_table("market.silver_trades")
            except Exception:
                continue  # the table appears with the first commit
            try:
                self._scan_snapshots(table)
            except Exception as exc:
                self.errors.append(f"silver: {exc!r}")

    def _scan_snapshots(self, table: Any) -> None:
        fresh = [s for s in table.metadata.snapshots if s.snapshot_id not in self._seen_snapshots]
        for snapshot in sorted(fresh, key=lambda s: s.timestamp_ms):
            self._seen_snapshots.add(snapshot.snapshot_id)
            text = _summary_value(snapshot.summary, SUMMARY_OFFSETS)
            if not text:
                continue
            with contextlib.suppress(ValueError, KeyError):
                for partition, next_offset in json.loads(text).get(TRADES, {}).items():
                    history = self._history[int(partition)]
                    if not history or int(next_offset) > history[-1][0]:
                        history.append((int(next_offset), snapshot.timestamp_ms * 1000))
        self._release()

    def _release(self) -> None:
        """Each pending trade is visible from the first snapshot whose next offset is above its offset
        (a trade the probe reads after that snapshot was scanned still gets that snapshot's time)."""
        with self._lock:
            for partition, pending in self._pending.items():
                history = self._history.get(partition)
                if not history or not pending:
                    continue
                offsets = [next_offset for next_offset, _ in history]
                keep = []
                for offset, exchange_ts in pending:
                    index = bisect.bisect_right(offsets, offset)
                    if index < len(history):
                        self.silver.append((history[index][1] - exchange_ts) / 1e6)
                    else:
                        keep.append((offset, exchange_ts))
                pending[:] = keep


def _summary_value(summary: Any, key: str) -> str | None:
    """A snapshot-summary property (pyiceberg's Summary answers None for a missing key, a dict raises)."""
    if summary is None:
        return None
    try:
        return summary[key]
    except KeyError:
        return None
