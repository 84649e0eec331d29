"""The Iceberg side of the lake writer: ensure tables, commit batches with their Kafka offsets.

Importable on its own (no Kafka): other services' tests use `append_trades`, `upsert_candles`,
`append_dead_letters`, `append_raw` and `ensure_tables` to build real tables.

One commit = one Iceberg snapshot (gold: delete of the replaced candles + append, in one
transaction, so readers never see half a merge) whose summary holds the next Kafka offset of every
topic-partition it covers (see offsets.py). Before each attempt the table is refreshed and the
offsets it records are compared with what this writer expects; a partition that another replica
has already advanced is *fenced*: its rows are dropped from the commit and the caller re-reads it
from the table's offset. pyiceberg's own commit retry is disabled on our tables
(`commit.retry.num-retries=0`) so that every retry goes through this check.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual
from pyiceberg.table import Table
from pyiceberg.table.upsert_util import create_match_filter
from sqlalchemy.exc import IntegrityError, OperationalError

from services.common.instruments import EXCHANGES
from services.common.schemas import Candle, DeadLetter, Trade
from services.common.tables import NAMESPACE, SILVER_DLQ, SILVER_TRADES, TABLES, bronze_table, gold_table
from services.common.topics import OHLCV, RAW_TOPICS, TRADES, TRADES_DLQ
from services.lakewriter import metrics
from services.lakewriter.convert import (
    RawRecord,
    arrow_schema,
    candle_row,
    conform,
    dead_letter_row,
    latest_candles,
    raw_row,
    to_arrow_lenient,
    trade_row,
)
from services.lakewriter.faults import Faults
from services.lakewriter.offsets import TP, OffsetIndex, summary_properties

log = logging.getLogger(__name__)

TABLE_PROPERTIES = {
    "format-version": "2",
    "commit.retry.num-retries": "0",  # we retry ourselves, re-checking offsets (see module doc)
    "commit.manifest-merge.enabled": "true",  # keeps manifest lists short across many small commits
    "write.parquet.compression-codec": "zstd",
}
ARROW_TO_PARQUET = 8
UPSERT_TABLES = frozenset(name for name, spec in TABLES.items() if name.startswith("gold_"))
MISSING = object()


@dataclass
class Batch:
    """Rows for one table, grouped by the Kafka topic-partition they came from.

    rows are Python dicts (converted, and rejected one by one if not representable, at commit);
    chunks are Arrow tables already built for the table's contract columns (`convert.trades_table`).
    end: the next offset to consume per topic-partition once this batch is committed (may cover
    partitions without rows: an offsets-only advance). expected: the offsets this writer believes
    the table records now (None for a partition never committed); None disables fencing.
    """

    table: str
    rows: dict[TP, list[dict[str, Any]]] = field(default_factory=dict)
    end: dict[TP, int] = field(default_factory=dict)
    expected: dict[TP, int | None] | None = None
    chunks: dict[TP, list[pa.Table]] = field(default_factory=dict)

    @property
    def row_count(self) -> int:
        return sum(len(rows) for rows in self.rows.values()) + sum(
            chunk.num_rows for chunks in self.chunks.values() for chunk in chunks
        )


@dataclass
class CommitResult:
    table: str
    rows: int = 0
    files: int = 0
    bytes: int = 0
    snapshot_id: int | None = None
    attempts: int = 0
    seconds: float = 0.0
    offsets: dict[TP, int] = field(default_factory=dict)
    fenced: dict[TP, int | None] = field(default_factory=dict)  # partition → offset the table holds


class LakeWriter:
    """Commits batches to the lake's tables. Not thread-safe: call it from one thread at a time."""

    def __init__(
        self,
        catalog: Catalog,
        writer_id: str = "",
        retries: int = 20,
        target_file_bytes: int | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.catalog = catalog
        self.writer_id = writer_id
        self.retries = max(1, retries)
        self.target_file_bytes = target_file_bytes
        self.index = OffsetIndex()
        self.faults = faults or Faults()
        self._tables: dict[str, Table] = {}
        self._lock = threading.Lock()
        if self.faults:
            self._wrap_catalog_commit()

    def _wrap_catalog_commit(self) -> None:
        original = self.catalog.commit_table
        faults = self.faults

        def commit_table(*args: Any, **kwargs: Any) -> Any:
            faults.point("before_catalog_commit")
            response = original(*args, **kwargs)
            faults.point("after_catalog_commit")
            return response

        self.catalog.commit_table = commit_table  # type: ignore[method-assign]

    # -- tables -----------------------------------------------------------------------------------

    def properties(self) -> dict[str, str]:
        props = dict(TABLE_PROPERTIES)
        if self.target_file_bytes:
            # pyiceberg bins by in-memory Arrow bytes; Parquet+zstd of these tables is ~5-10x smaller.
            props["write.target-file-size-bytes"] = str(self.target_file_bytes * ARROW_TO_PARQUET)
        return props

    def ensure_tables(self, names: Iterable[str] | None = None) -> list[str]:
        """Create missing tables; add columns the contract gained since (no data rewrite). Idempotent."""
        try:
            self.catalog.create_namespace(NAMESPACE)
        except NamespaceAlreadyExistsError:
            pass
        except IntegrityError:
            # SqlCatalog checks, then inserts: a replica that inserted first in between makes ours a
            # unique violation (the driver's error, not NamespaceAlreadyExistsError).
            if not self.catalog.namespace_exists(NAMESPACE):
                raise
        done = []
        for name in names or TABLES:
            self._ensure(name)
            done.append(name)
        return done

    def _ensure(self, name: str) -> Table:
        spec = TABLES[name]
        props = self.properties()
        try:
            table = self.catalog.load_table(spec.identifier)
        except NoSuchTableError:
            try:
                table = self.catalog.create_table(
                    spec.identifier,
                    schema=spec.schema,
                    partition_spec=spec.partition_spec,
                    sort_order=spec.sort_order or _unsorted(),
                    properties=props,
                )
                log.info("created table %s", spec.identifier)
            except TableAlreadyExistsError:  # another replica was faster
                table = self.catalog.load_table(spec.identifier)
        table = self._evolve(table, spec.schema, props)
        self._tables[name] = table
        return table

    def _evolve(self, table: Table, schema: Any, props: dict[str, str]) -> Table:
        present = {f.name for f in table.schema().fields}
        missing = [f.name for f in schema.fields if f.name not in present]
        stale = {k: v for k, v in props.items() if k != "format-version" and table.properties.get(k) != v}
        for attempt in range(self.retries):
            try:
                if missing:
                    with table.update_schema() as update:
                        update.union_by_name(schema)
                    log.info("table %s: added column(s) %s (metadata only)", table.name(), missing)
                    missing = []
                if stale:
                    with table.transaction() as tx:
                        tx.set_properties(stale)
                    stale = {}
                return table
            except CommitFailedException:
                table = self._backoff_reload(table, attempt)
                present = {f.name for f in table.schema().fields}
                missing = [f.name for f in schema.fields if f.name not in present]
        raise CommitFailedException(f"could not evolve {table.name()}")

    def _backoff_reload(self, table: Table, attempt: int) -> Table:
        time.sleep(min(0.05 * 2**attempt, 1.0))
        return table.refresh()

    def table(self, name: str, refresh: bool = True) -> Table:
        table = self._tables.get(name)
        if table is None:
            return self._ensure(name)
        return table.refresh() if refresh else table

    def offsets(self, name: str) -> dict[TP, int]:
        """The offsets the table records now (refreshed from the catalog)."""
        return self.index.offsets(self.table(name))

    # -- commits ----------------------------------------------------------------------------------

    def commit(self, batch: Batch) -> CommitResult:
        """Commit one batch atomically with its offsets; retries conflicts after a refresh."""
        with self._lock:
            return self._commit(batch)

    def _commit(self, batch: Batch) -> CommitResult:
        started = time.monotonic()
        result = CommitResult(batch.table)
        self.faults.point("before_write")
        rows, chunks, end = dict(batch.rows), dict(batch.chunks), dict(batch.end)
        for attempt in range(self.retries):
            result.attempts = attempt + 1
            table = self.table(batch.table)
            if batch.expected is not None:
                recorded = self.index.offsets(table)
                for tp in list(end):
                    if recorded.get(tp) != batch.expected.get(tp):
                        result.fenced[tp] = recorded.get(tp)
                        dropped = len(rows.pop(tp, ())) + sum(c.num_rows for c in chunks.pop(tp, ()))
                        end.pop(tp)
                        metrics.FENCED.labels(batch.table).inc(dropped)
                        log.warning(
                            "%s: %s:%d is at %s in the table, expected %s: another writer owns it; "
                            "dropping %d buffered row(s)",
                            batch.table,
                            tp[0],
                            tp[1],
                            recorded.get(tp),
                            batch.expected.get(tp),
                            dropped,
                        )
            if not end:
                break
            try:
                snapshot = self._write(
                    table,
                    [row for part in rows.values() for row in part],
                    end,
                    [chunk for part in chunks.values() for chunk in part],
                )
            except (CommitFailedException, OperationalError) as exc:
                metrics.CONFLICTS.labels(batch.table).inc()
                if attempt + 1 >= self.retries:
                    raise
                metrics.RETRIES.labels(batch.table).inc()
                log.info("%s: commit conflict (%s), refreshing and retrying", batch.table, type(exc).__name__)
                self._backoff_reload(table, attempt)
                continue
            summary = snapshot.summary if snapshot is not None else None
            result.snapshot_id = snapshot.snapshot_id if snapshot is not None else None
            result.rows = int(summary["added-records"] or 0) if summary is not None else 0
            result.files = int(summary["added-data-files"] or 0) if summary is not None else 0
            result.bytes = int(summary["added-files-size"] or 0) if summary is not None else 0
            result.offsets = end
            metrics.ROWS.labels(batch.table).inc(
                sum(len(part) for part in rows.values())
                + sum(chunk.num_rows for part in chunks.values() for chunk in part)
            )
            metrics.BYTES.labels(batch.table).inc(result.bytes)
            metrics.FILES_PER_COMMIT.labels(batch.table).observe(result.files)
            metrics.SNAPSHOTS.labels(batch.table).set(len(self._tables[batch.table].metadata.snapshots))
            break
        result.seconds = time.monotonic() - started
        metrics.COMMIT_SECONDS.labels(batch.table).observe(result.seconds)
        return result

    def _write(
        self,
        table: Table,
        rows: Sequence[dict[str, Any]],
        end: Mapping[TP, int],
        chunks: Sequence[pa.Table] = (),
    ) -> Any:
        name = table.name()[-1]
        parts = []
        if rows or not chunks:
            parts.append(
                to_arrow_lenient(rows, table.schema(), reject=lambda row, exc: _reject(name, row, exc))
            )
        if chunks:
            target = arrow_schema(table.schema())
            parts.extend(conform(chunk, target) for chunk in chunks)
        data = parts[0] if len(parts) == 1 else pa.concat_tables(parts)
        props = summary_properties(end, self.writer_id)
        tx = table.transaction()
        if name in UPSERT_TABLES and data.num_rows:
            data, replaced = self._merge_plan(table, data)
            if replaced is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    tx.delete(create_match_filter(replaced, _key_columns(table)), snapshot_properties=props)
        tx.append(data, snapshot_properties=props)
        committed = tx.commit_transaction()
        self._tables[name] = committed
        return committed.current_snapshot()

    def _merge_plan(self, table: Table, data: pa.Table) -> tuple[pa.Table, pa.Table | None]:
        """Which incoming candles to write, and which keys must be deleted first (None: none).

        A candle the table already holds with a HIGHER revision is not overwritten (a replayed older
        revision must not win); equal or higher revisions replace the stored row."""
        if table.current_snapshot() is None:
            return data, None
        keys = _key_columns(table)
        starts = data.column("window_start")
        low, high = pc.min(starts).as_py(), pc.max(starts).as_py()
        existing = table.scan(
            row_filter=And(
                GreaterThanOrEqual("window_start", low.isoformat()),
                LessThanOrEqual("window_start", high.isoformat()),
            ),
            selected_fields=(*keys, "revision"),
        ).to_arrow()
        if existing.num_rows == 0:
            return data, None
        stored = existing.group_by(keys).aggregate([("revision", "max")])
        joined = data.append_column("_row", pa.array(range(data.num_rows), pa.int64())).join(
            stored, keys=keys, join_type="left outer"
        )
        stale = pc.fill_null(pc.less(joined.column("revision"), joined.column("revision_max")), False)
        drop = set(joined.filter(stale).column("_row").to_pylist())
        if drop:
            data = data.filter(pa.array([i not in drop for i in range(data.num_rows)]))
        matched = data.select(keys).join(stored.select(keys), keys=keys, join_type="inner")
        return data, (matched if matched.num_rows else None)


def _key_columns(table: Table) -> list[str]:
    schema = table.schema()
    return [schema.find_field(field_id).name for field_id in schema.identifier_field_ids]


def _reject(table: str, row: dict[str, Any], exc: Exception) -> None:
    metrics.REJECTED.labels(table, "not_representable").inc()
    log.warning("%s: row not representable, skipped: %s (%r)", table, exc, row)


def _unsorted() -> Any:
    from pyiceberg.table.sorting import UNSORTED_SORT_ORDER

    return UNSORTED_SORT_ORDER


# -- convenience API (tests, tools, other services' fixtures) ---------------------------------------


def _tp_offsets(offsets: Mapping[int, int] | None, topic: str) -> dict[TP, int]:
    return {(topic, int(p)): int(o) for p, o in (offsets or {}).items()}


def ensure_tables(catalog: Catalog, names: Iterable[str] | None = None) -> list[str]:
    """Create (or evolve) the lake's tables in `catalog`."""
    return LakeWriter(catalog).ensure_tables(names)


def _commit(
    catalog: Catalog, table: str, rows: list[dict[str, Any]], topic: str, offsets: Mapping[int, int] | None
) -> CommitResult:
    writer = LakeWriter(catalog)
    writer.ensure_tables([table])
    end = _tp_offsets(offsets, topic)
    if not end:  # no lineage given: commit without recording offsets
        return _commit_plain(writer, table, rows)
    return writer.commit(Batch(table, rows={next(iter(end)): rows}, end=end))


def _commit_plain(writer: LakeWriter, table: str, rows: list[dict[str, Any]]) -> CommitResult:
    t = writer.table(table)
    snapshot = writer._write(t, rows, {})
    summary = snapshot.summary if snapshot is not None else None
    return CommitResult(
        table,
        rows=int(summary["added-records"] or 0) if summary else 0,
        snapshot_id=snapshot.snapshot_id if snapshot else None,
        attempts=1,
    )


def append_trades(
    catalog: Catalog, trades: Iterable[Trade], offsets: Mapping[int, int] | None = None, topic: str = TRADES
) -> CommitResult:
    """Append trades to silver_trades in one snapshot; offsets = {partition: next offset} of `topic`."""
    return _commit(catalog, SILVER_TRADES, [trade_row(t) for t in trades], topic, offsets)


def append_dead_letters(
    catalog: Catalog,
    dead: Iterable[DeadLetter | tuple[DeadLetter, int, int]],
    offsets: Mapping[int, int] | None = None,
    topic: str = TRADES_DLQ,
) -> CommitResult:
    """Append dead letters (optionally with their own DLQ partition/offset) to silver_dlq."""
    rows = [dead_letter_row(*item) if isinstance(item, tuple) else dead_letter_row(item) for item in dead]
    return _commit(catalog, SILVER_DLQ, rows, topic, offsets)


def upsert_candles(
    catalog: Catalog, candles: Iterable[Candle], offsets: Mapping[int, int] | None = None, topic: str = OHLCV
) -> list[CommitResult]:
    """Write candles to gold_ohlcv_<tf>: one row per candle, the latest revision wins (one commit/table)."""
    by_tf: dict[str, list[dict[str, Any]]] = {}
    for candle in latest_candles(candles):
        by_tf.setdefault(candle.timeframe, []).append(candle_row(candle))
    return [_commit(catalog, gold_table(tf), rows, topic, offsets) for tf, rows in sorted(by_tf.items())]


def append_raw(
    catalog: Catalog, exchange: str, records: Iterable[RawRecord], offsets: Mapping[int, int] | None = None
) -> CommitResult:
    """Append raw-topic records (frames byte-exact) to bronze_<exchange>_trades."""
    if exchange not in EXCHANGES:
        raise ValueError(f"unknown exchange {exchange!r}")
    return _commit(
        catalog, bronze_table(exchange), [raw_row(r) for r in records], RAW_TOPICS[exchange], offsets
    )
