"""`python -m deploy.s3proxy fetch` resolves the jars; `... run [--port P] [--home DIR] [--bucket B]`
serves S3 in the foreground until Ctrl-C / SIGTERM and prints the K2_S3_* / K2_WAREHOUSE settings for it."""

from __future__ import annotations

import argparse
from pathlib import Path

from deploy.local.postgres import wait_for_stop
from deploy.s3proxy.server import LocalS3, fetch_jars


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.s3proxy")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="resolve S3Proxy's jars from Maven Central into the cache")
    run = sub.add_parser("run", help="run an S3 server in the foreground")
    run.add_argument("--port", type=int, default=9000)
    run.add_argument("--home", type=Path, default=Path(".data/s3proxy"), help="blobs/ (one folder a bucket)")
    run.add_argument("--bucket", default="k2-lake", help="bucket to create (if missing) for the warehouse")
    args = parser.parse_args()
    if args.command == "fetch":
        print(fetch_jars(quiet=False))
        return
    with LocalS3(args.home, port=args.port) as s3:
        if not (s3.blobs_dir / args.bucket).is_dir():
            s3.create_bucket(args.bucket)
        settings = " ".join(f"{k}={v}" for k, v in s3.env().items())
        print(f"{settings} K2_WAREHOUSE=s3://{args.bucket}/warehouse", flush=True)
        wait_for_stop()


if __name__ == "__main__":
    main()
