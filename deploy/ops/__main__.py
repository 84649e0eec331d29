"""`python -m deploy.ops export-bronze | copy-day`: replay and rebuild a day from bronze.

export-bronze  writes a day of bronze frames as a capture file (the feed's replay format), so
               `python -m services.feed replay FILE --max` republishes them exactly as received.
copy-day       copies a day of silver_trades and gold_ohlcv_* from a rebuild lake (another
               K2_DATA_DIR, where the day was replayed) into the lake the K2_* settings name,
               replacing that day's rows with one overwrite commit per table.
"""

from __future__ import annotations

import argparse
import gzip
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, LessThan

from services.common.catalog import open_catalog
from services.common.instruments import EXCHANGES
from services.common.schemas import TIMEFRAMES
from services.common.settings import K2Settings
from services.common.tables import NAMESPACE, SILVER_TRADES, bronze_table, gold_table


def day_filter(column: str, day: date) -> BooleanExpression:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return And(
        GreaterThanOrEqual(column, start.isoformat()),
        LessThan(column, (start + timedelta(days=1)).isoformat()),
    )


def export_bronze(settings: K2Settings, day: date, out: Path, exchanges: list[str]) -> int:
    catalog = open_catalog(settings)
    rows: list[dict] = []
    for exchange in exchanges:
        table = catalog.load_table(f"{NAMESPACE}.{bronze_table(exchange)}")
        scan = table.scan(
            row_filter=day_filter("received_at", day),
            selected_fields=("received_at_ns", "connection_id", "frame_seq", "kind", "frame"),
        )
        rows += [{**row, "exchange": exchange} for row in scan.to_arrow().to_pylist()]
    rows.sort(key=lambda r: (r["received_at_ns"], r["connection_id"], r["frame_seq"]))
    opener = gzip.open if out.name.endswith(".gz") else open
    with opener(out, "wt", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            line = {
                "exchange": row["exchange"],
                "received_at": row["received_at_ns"],
                "frame": row["frame"],
                "connection_id": row["connection_id"],
                "seq": row["frame_seq"],
            }
            if row["kind"] != "frame":
                line["kind"] = row["kind"]
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    return len(rows)


def copy_day(source: K2Settings, target: K2Settings, day: date) -> dict[str, int]:
    # The SQL catalog keys its tables by catalog name: both are opened as "k2", like the services do.
    src, dst = open_catalog(source), open_catalog(target)
    plan = [(SILVER_TRADES, "exchange_ts")] + [(gold_table(tf), "window_start") for tf in TIMEFRAMES]
    copied: dict[str, int] = {}
    for name, column in plan:
        rows = src.load_table(f"{NAMESPACE}.{name}").scan(row_filter=day_filter(column, day)).to_arrow()
        table = dst.load_table(f"{NAMESPACE}.{name}")
        table.overwrite(rows.cast(table.schema().as_arrow()), overwrite_filter=day_filter(column, day))
        copied[name] = rows.num_rows
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.ops", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export-bronze", help="a day of bronze frames → capture file")
    export.add_argument("--day", type=date.fromisoformat, required=True, help="UTC day, YYYY-MM-DD")
    export.add_argument("--out", type=Path, required=True, help="capture file (.jsonl or .jsonl.gz)")
    export.add_argument("--exchange", action="append", choices=EXCHANGES, help="default: every exchange")
    copy = sub.add_parser("copy-day", help="replace a day of silver/gold with a rebuild lake's")
    copy.add_argument("--day", type=date.fromisoformat, required=True)
    copy.add_argument("--from-data-dir", type=Path, required=True, help="K2_DATA_DIR of the rebuild run")
    args = parser.parse_args(argv)
    settings = K2Settings()
    if args.command == "export-bronze":
        count = export_bronze(settings, args.day, args.out, args.exchange or list(EXCHANGES))
        print(f"wrote {count} records of {args.day} to {args.out}")
    else:
        source = K2Settings(data_dir=args.from_data_dir, catalog_uri="", warehouse="")
        copied = copy_day(source, settings, args.day)
        for name, count in copied.items():
            print(f"{name}: {count} rows of {args.day}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
