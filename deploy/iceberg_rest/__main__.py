"""`python -m deploy.iceberg_rest fetch` resolves the jars; `... run [--port P] [--home DIR]` serves a REST
catalog in the foreground until Ctrl-C / SIGTERM (then K2_CATALOG_TYPE=rest K2_CATALOG_URI=<printed uri>)."""

from __future__ import annotations

import argparse
from pathlib import Path

from deploy.iceberg_rest.server import LocalRestCatalog, fetch_jars
from deploy.local.postgres import wait_for_stop


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.iceberg_rest")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="resolve the server's jars from Maven Central into the cache")
    run = sub.add_parser("run", help="run a REST catalog in the foreground")
    run.add_argument("--port", type=int, default=8181)
    run.add_argument("--home", type=Path, default=Path(".data/iceberg-rest"), help="catalog.db + warehouse/")
    args = parser.parse_args()
    if args.command == "fetch":
        print(fetch_jars(quiet=False))
        return
    with LocalRestCatalog(args.home, port=args.port) as catalog:
        print(
            f"K2_CATALOG_TYPE=rest K2_CATALOG_URI={catalog.uri} K2_WAREHOUSE={catalog.warehouse}", flush=True
        )
        wait_for_stop()


if __name__ == "__main__":
    main()
