"""`python -m bench.broker`: how long the local Kafka broker takes to come up, and what it costs idle.

Measures, each in a fresh child process with its own K2_* environment:
- jar resolution into an empty K2 jar cache (K2_KAFKA_CACHE = a temp dir; Maven's own local
  repository as it is), and with `--cold-maven` also with an empty Maven repository (everything
  downloaded from Maven Central);
- first start: config, KRaft storage format, JVM start, until the broker answers metadata;
- warm start: the same data dir again (already formatted), until it answers;
- idle RSS of the broker JVM 10 s after the warm start.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import format_table, proc_rss, write_results
from services.common.metrics import free_port


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def measure(cold_maven: bool, idle_s: float = 10.0) -> dict[str, float | int | str | None]:
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="k2-bench-broker-") as tmp:
        tmp_path = Path(tmp)
        env = dict(os.environ)
        env.update(
            {
                "K2_KAFKA_CACHE": str(tmp_path / "jar-cache"),
                "K2_DATA_DIR": str(tmp_path / "data"),
                "K2_KAFKA_PORT": str(free_port()),
                "K2_KAFKA_CONTROLLER_PORT": str(free_port()),
            }
        )
        env["K2_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{env['K2_KAFKA_PORT']}"
        fetch_env = dict(env)
        if cold_maven:
            fetch_env["MAVEN_OPTS"] = f"-Dmaven.repo.local={tmp_path / 'm2'}"
        out: dict[str, float | int | str | None] = {}
        out["jar_resolution_s"] = round(_timed([py, "-m", "deploy.kafka", "fetch"], fetch_env), 2)
        out["jar_resolution_from"] = (
            "empty Maven repo + empty K2 cache" if cold_maven else "empty K2 cache, Maven repo as is"
        )
        try:
            out["first_start_s"] = round(_timed([py, "-m", "deploy.kafka", "start"], env), 2)
            _timed([py, "-m", "deploy.kafka", "stop"], env)
            out["warm_start_s"] = round(_timed([py, "-m", "deploy.kafka", "start"], env), 2)
            pid = int((tmp_path / "data" / "kafka" / "broker.pid").read_text().strip())
            time.sleep(idle_s)  # the quantity measured is the RSS after this idle time
            rss = proc_rss(pid)
            out["idle_rss_mb_after_10s"] = round(rss[0] / 2**20, 1) if rss else None
            out["peak_rss_mb"] = round(rss[1] / 2**20, 1) if rss else None
        finally:
            subprocess.run([py, "-m", "deploy.kafka", "stop"], env=env, capture_output=True)
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.broker", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cold-maven",
        action="store_true",
        help="also empty Maven's local repository (downloads every jar from Maven Central)",
    )
    args = parser.parse_args(argv)
    result = measure(args.cold_maven)
    result["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result["command"] = "python -m bench.broker" + (" --cold-maven" if args.cold_maven else "")
    rows = [{"measure": k, "value": v} for k, v in result.items()]
    print(format_table(rows))
    print(f"written to {write_results('broker', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
