"""`python -m services.lakewriter` runs the writer; `... maintain` runs table maintenance once."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging

from services.common.catalog import open_catalog
from services.common.logs import setup_logging
from services.common.metrics import UP, serve_metrics
from services.common.tables import TABLES
from services.lakewriter.maintenance import Maintainer
from services.lakewriter.service import serve
from services.lakewriter.settings import LakewriterSettings
from services.lakewriter.writer import LakeWriter

log = logging.getLogger("services.lakewriter")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.lakewriter")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="consume the topics and commit to Iceberg (the default)")
    maintain = sub.add_parser("maintain", help="compact small files, expire snapshots, remove orphan files")
    maintain.add_argument("--table", action="append", choices=sorted(TABLES), help="only these tables")
    maintain.add_argument("--no-compact", action="store_true")
    maintain.add_argument("--no-expire", action="store_true")
    maintain.add_argument("--no-orphans", action="store_true")
    maintain.add_argument("--json", action="store_true", help="print the report as JSON")
    sub.add_parser("ensure-tables", help="create or evolve the lake's tables and exit")
    args = parser.parse_args(argv)
    settings = LakewriterSettings()
    setup_logging(settings.log_level, "lakewriter")
    if args.command == "maintain":
        writer = LakeWriter(
            open_catalog(settings), writer_id="maintenance", retries=settings.lakewriter_commit_retries
        )
        report = Maintainer(writer, settings).run(
            args.table, compact=not args.no_compact, expire=not args.no_expire, orphans=not args.no_orphans
        )
        print(json.dumps(report.as_dict(), indent=2) if args.json else report.summary())
        return 0
    if args.command == "ensure-tables":
        print("\n".join(LakeWriter(open_catalog(settings)).ensure_tables()))
        return 0
    serve_metrics("lakewriter", settings.metrics_port, settings.metrics_host)
    UP.labels("lakewriter").set(1)
    try:
        asyncio.run(serve(settings))
    finally:
        UP.labels("lakewriter").set(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
