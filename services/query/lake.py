"""The lake as the query service sees it: pinned Iceberg snapshots, their data files, one DuckDB.

pyiceberg reads the catalog and plans a snapshot's data files (cached per (table, snapshot id):
a snapshot never changes, so the plan never goes stale; a new snapshot is a new key). DuckDB
reads those Parquet files with `read_parquet` — one connection for the process, one cursor per
query. Table metadata is re-read from the catalog in the background every `query_refresh_s`,
so a request never waits for the catalog and the lake writer's commits never block readers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import duckdb
from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.types import (
    BinaryType,
    DecimalType,
    IntegerType,
    LongType,
    StringType,
    TimestamptzType,
)
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.common.catalog import open_catalog
from services.common.tables import NAMESPACE, SILVER_TRADES, TABLES, gold_table
from services.query import metrics
from services.query.settings import QuerySettings
from services.query.singleflight import SingleFlight

log = logging.getLogger(__name__)
T = TypeVar("T")

# The time column of each table a request may bound (used to prune files by their column stats).
TIME_COLUMN: dict[str, str] = {
    SILVER_TRADES: "exchange_ts",
    **{gold_table(tf): "window_start" for tf in ("1m", "5m", "15m", "30m", "1h", "1d")},
}
_DUCK_TYPES = {
    BinaryType: "BLOB",
    StringType: "VARCHAR",
    LongType: "BIGINT",
    IntegerType: "INTEGER",
    TimestamptzType: "TIMESTAMPTZ",
}


class QueryTimeout(Exception):
    """A query ran longer than query_timeout_s and was interrupted."""


class UnknownSnapshot(LookupError):
    """as_of names a snapshot id the table does not have."""


@dataclass(frozen=True, slots=True)
class DataFile:
    path: str
    lower_us: int | None  # bounds of the table's time column in this file, µs
    upper_us: int | None


@dataclass(frozen=True, slots=True)
class Pinned:
    """One table at one snapshot: what every query of a request reads."""

    table: str
    snapshot_id: int | None  # None: the table does not exist yet or has no snapshot
    files: tuple[DataFile, ...]

    def source(self, lo_us: int | None = None, hi_us: int | None = None) -> tuple[list[str], bool]:
        """Files that may hold rows with time column in [lo, hi); bool = whether any file exists."""
        out = [
            f.path
            for f in self.files
            if not (
                (hi_us is not None and f.lower_us is not None and f.lower_us >= hi_us)
                or (lo_us is not None and f.upper_us is not None and f.upper_us < lo_us)
            )
        ]
        return out, bool(out)


class LRU:
    """A small thread-safe LRU bounded by a total size."""

    def __init__(self, max_size: int, name: str) -> None:
        self.max_size = max_size
        self.name = name
        self._data: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                metrics.CACHE_MISSES.labels(self.name).inc()
                return None
            self._data.move_to_end(key)
        metrics.CACHE_HITS.labels(self.name).inc()
        return item[0]

    def peek(self, key: Any) -> Any | None:
        """get() without counting a miss (a miss here is retried through get())."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            self._data.move_to_end(key)
        metrics.CACHE_HITS.labels(self.name).inc()
        return item[0]

    def put(self, key: Any, value: Any, size: int) -> None:
        if size > self.max_size:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._size -= old[1]
            self._data[key] = (value, size)
            self._size += size
            while self._size > self.max_size:
                _, (_, dropped) = self._data.popitem(last=False)
                self._size -= dropped


def configure_s3(con: duckdb.DuckDBPyConnection, settings: QuerySettings) -> None:
    """Let DuckDB read s3:// data files with the catalog's endpoint and keys (a warehouse on S3/MinIO).

    httpfs comes from the pinned duckdb-extension-httpfs wheel and is loaded from its path: extension
    downloads are off (autoinstall) and would need the internet."""
    import duckdb_extension_httpfs

    found = sorted(Path(duckdb_extension_httpfs.__file__).parent.glob("extensions/*/httpfs.duckdb_extension"))
    if not found:
        raise RuntimeError("duckdb-extension-httpfs holds no httpfs.duckdb_extension")
    con.execute(f"LOAD '{_sql_text(str(found[-1]))}'")
    options = {"TYPE": "s3", "REGION": settings.s3_region, "URL_STYLE": "path"}
    if settings.s3_access_key_id:
        options |= {"KEY_ID": settings.s3_access_key_id, "SECRET": settings.s3_secret_access_key}
    if settings.s3_endpoint:
        endpoint = urlparse(settings.s3_endpoint)
        options |= {"ENDPOINT": endpoint.netloc or endpoint.path}
        use_ssl = "true" if endpoint.scheme == "https" else "false"
    else:
        use_ssl = "true"
    body = ", ".join(f"{key} '{_sql_text(value)}'" for key, value in options.items())
    con.execute(f"CREATE OR REPLACE SECRET k2_warehouse ({body}, USE_SSL {use_ssl})")


def _sql_text(value: str) -> str:
    return value.replace("'", "''")


def _file_path(location: str) -> str:
    return location[len("file://") :] if location.startswith("file://") else location


class Lake:
    """Catalog + DuckDB for one process."""

    def __init__(self, settings: QuerySettings, catalog: Catalog | None = None) -> None:
        self.settings = settings
        self.catalog = catalog or open_catalog(settings)
        self.con = duckdb.connect(
            config={
                "autoinstall_known_extensions": False,
                "autoload_known_extensions": False,
                "threads": settings.query_duckdb_threads,
            }
        )
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET parquet_metadata_cache = true")
        if settings.s3_endpoint or settings.resolved_warehouse.startswith(("s3://", "s3a://")):
            configure_s3(self.con, settings)
        self.executor = ThreadPoolExecutor(settings.query_workers, thread_name_prefix="duckdb")
        self._tables: dict[str, Table] = {}
        self._tables_lock = threading.Lock()
        self.plans = LRU(4096, "plan")
        self.results = LRU(settings.query_cache_bytes, "result")
        # Whole responses of deterministic requests by (path, raw query string, snapshot id), served by
        # services.query.hotpath without FastAPI; the bodies are the same bytes objects as in `results`.
        self.responses = LRU(settings.query_cache_bytes, "result")
        self.current_ids: dict[str, int | None] = {}  # table → current snapshot id (set by refresh)
        self.flights = SingleFlight()  # concurrent misses of one key run one query
        self.last_refresh_ok: float = 0.0
        self.last_refresh_error: str | None = None

    # ---- metadata -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read every table's metadata (blocking; run in a thread) and plan its current snapshot."""
        found: dict[str, Table] = {}
        try:
            locations = self._metadata_locations()
            for name in TABLES:
                current = self.table(name)
                if locations is not None:
                    location = locations.get(name)
                    if location is None:
                        continue
                    if current is not None and current.metadata_location == location:
                        found[name] = current  # unchanged: no metadata file to read
                        continue
                try:
                    found[name] = self.catalog.load_table(f"{NAMESPACE}.{name}")
                except NoSuchTableError:
                    continue
        except Exception as exc:  # catalog unreachable: keep serving what we have, /ready says so
            self.last_refresh_error = f"{type(exc).__name__}: {exc}"
            log.warning("catalog refresh failed: %s", self.last_refresh_error)
            return
        current = {}
        for name, table in found.items():
            snap = table.current_snapshot()
            current[name] = None if snap is None else snap.snapshot_id
        with self._tables_lock:
            self._tables = found
            self.current_ids = current
        self.last_refresh_ok = time.monotonic()
        self.last_refresh_error = None
        for name, table in found.items():
            snap = table.current_snapshot()
            if snap is not None and name in TIME_COLUMN:
                self._files(name, table, snap.snapshot_id)

    def _metadata_locations(self) -> dict[str, str] | None:
        """SQL catalog: every table's metadata location in one query (None for other catalog kinds)."""
        if not isinstance(self.catalog, SqlCatalog):
            return None
        with Session(self.catalog.engine) as session:
            rows = session.execute(
                select(IcebergTables.table_name, IcebergTables.metadata_location).where(
                    IcebergTables.catalog_name == self.catalog.name,
                    IcebergTables.table_namespace == NAMESPACE,
                )
            ).all()
        return {name: location for name, location in rows if location}

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.refresh)
            await asyncio.sleep(self.settings.query_refresh_s)

    def table(self, name: str) -> Table | None:
        with self._tables_lock:
            return self._tables.get(name)

    def snapshots(self, name: str) -> list[Snapshot] | None:
        table = self.table(name)
        return None if table is None else list(table.snapshots())

    def resolve(self, name: str, as_of: int | datetime | None = None) -> Snapshot | None:
        """The snapshot a request reads: current, a snapshot id, or the one current at a time."""
        table = self.table(name)
        if table is None:
            if isinstance(as_of, int):
                raise UnknownSnapshot(f"table {name} has no snapshot {as_of}")
            return None
        if as_of is None:
            return table.current_snapshot()
        if isinstance(as_of, int):
            snap = table.snapshot_by_id(as_of)
            if snap is None:
                raise UnknownSnapshot(f"table {name} has no snapshot {as_of}")
            return snap
        return table.snapshot_as_of_timestamp(int(as_of.timestamp() * 1000))

    def pin_if_planned(self, name: str, as_of: int | datetime | None = None) -> Pinned | None:
        """The pinned table if its files are already planned (no I/O: safe on the event loop), else None."""
        snap = self.resolve(name, as_of)
        if snap is None:
            return Pinned(name, None, ())
        plan = self.plans.peek((name, snap.snapshot_id))
        return None if plan is None else Pinned(name, snap.snapshot_id, plan)

    def pin(self, name: str, as_of: int | datetime | None = None) -> Pinned:
        snap = self.resolve(name, as_of)
        if snap is None:
            return Pinned(name, None, ())
        table = self.table(name)
        assert table is not None
        return Pinned(name, snap.snapshot_id, self._files(name, table, snap.snapshot_id))

    def pin_id(self, name: str, snapshot_id: int) -> Pinned:
        return self.pin(name, snapshot_id)

    def _files(self, name: str, table: Table, snapshot_id: int) -> tuple[DataFile, ...]:
        key = (name, snapshot_id)
        cached = self.plans.get(key)
        if cached is not None:
            return cached
        column = TIME_COLUMN.get(name)
        field_id = table.schema().find_field(column).field_id if column else None
        files: list[DataFile] = []
        for task in table.scan(snapshot_id=snapshot_id).plan_files():
            if task.delete_files:
                # pyiceberg writes copy-on-write; merge-on-read deletes would need iceberg_scan.
                raise RuntimeError(f"{name} snapshot {snapshot_id} has delete files; not supported")
            lower = upper = None
            if field_id is not None:
                lo = (task.file.lower_bounds or {}).get(field_id)
                hi = (task.file.upper_bounds or {}).get(field_id)
                lower = from_bytes(TimestamptzType(), lo) if lo else None
                upper = from_bytes(TimestamptzType(), hi) if hi else None
            files.append(DataFile(_file_path(task.file.file_path), lower, upper))
        plan = tuple(files)
        self.plans.put(key, plan, 1)
        return plan

    # ---- queries --------------------------------------------------------------------------
    @staticmethod
    def empty_relation(name: str) -> str:
        """SQL for an empty relation with the table's columns (a table without files)."""
        cols = []
        for field in TABLES[name].schema.fields:
            ftype = field.field_type
            duck = (
                f"DECIMAL({ftype.precision},{ftype.scale})"
                if isinstance(ftype, DecimalType)
                else _DUCK_TYPES[type(ftype)]
            )
            cols.append(f"CAST(NULL AS {duck}) AS {field.name}")
        return f"(SELECT {', '.join(cols)} WHERE false)"

    def cursor(self) -> duckdb.DuckDBPyConnection:
        return self.con.cursor()

    async def run(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run fn(cursor) on a worker thread; interrupt it and raise QueryTimeout after the timeout."""
        cur = self.cursor()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, fn, cur)
        try:
            return await asyncio.wait_for(future, self.settings.query_timeout_s)
        except TimeoutError:
            cur.interrupt()
            metrics.DUCKDB_ERRORS.labels("timeout").inc()
            raise QueryTimeout(f"query exceeded {self.settings.query_timeout_s}s") from None
        except duckdb.Error:
            metrics.DUCKDB_ERRORS.labels("error").inc()
            raise
        finally:
            if future.done():
                with contextlib.suppress(Exception):
                    cur.close()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            self.con.close()


def iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
