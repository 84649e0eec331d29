"""`python -m deploy.local up [--demo] | down | status | logs [SERVICE]` — the platform as local processes.

`up` starts the Kafka broker (LocalBroker), creates the registry's topics, then hands every service
replica and a Prometheus to supervisord, and returns once each answers /metrics. Everything lives
under K2_DATA_DIR (run/, logs/, prometheus/, kafka/, catalog.db, warehouse/).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from deploy.kafka.broker import BrokerError, LocalBroker
from deploy.local import prometheus
from deploy.local.plan import REPO, Proc, build_plan
from deploy.local.settings import DeploySettings
from deploy.local.status import consumer_lag_sync, healthy
from deploy.local.supervisor import Supervisor
from services.common.kafka import ensure_topics
from services.common.settings import env_for


def broker_of(settings: DeploySettings) -> LocalBroker:
    return LocalBroker(
        settings.resolved_data_dir, settings.kafka_port, settings.kafka_controller_port, settings.kafka_heap
    )


def plan_file(settings: DeploySettings) -> Path:
    return settings.resolved_data_dir / "run" / "plan.json"


def load_plan(settings: DeploySettings) -> list[Proc]:
    try:
        items = json.loads(plan_file(settings).read_text())
    except (OSError, ValueError):
        return []
    return [Proc(item["service"], item["replica"], item["module"], item["port"]) for item in items]


def save_plan(settings: DeploySettings, procs: list[Proc]) -> None:
    plan_file(settings).parent.mkdir(parents=True, exist_ok=True)
    plan_file(settings).write_text(
        json.dumps(
            [{"service": p.service, "replica": p.replica, "module": p.module, "port": p.port} for p in procs],
            indent=2,
        )
    )


def up(settings: DeploySettings, demo: bool) -> int:
    started = time.monotonic()
    data_dir = settings.resolved_data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    procs = build_plan(settings, demo)
    extra = []
    if settings.prometheus_port:
        extra.append(prometheus.program(settings, prometheus.write(settings, procs)))
    broker = broker_of(settings)
    print(f"k2: broker on {broker.bootstrap} (data {data_dir})", flush=True)
    broker.start(wait=True)
    created = asyncio.run(ensure_topics(broker.bootstrap))
    print(f"k2: topics ready ({len(created)} created)", flush=True)
    sup = Supervisor(data_dir)
    sup.write_config(procs, extra)
    save_plan(settings, procs)
    env = env_for(
        settings,
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    if demo:
        env["K2_FEED_SOURCE"] = "simulator"
    sup.start(env)
    deadline = time.monotonic() + settings.deploy_up_timeout
    pending = wait_healthy(settings, [p for p in procs if p.autostart], settings.deploy_up_timeout)
    for group in sorted({p.service for p in procs if not p.autostart}):
        sup.start_group(group)
    late = [p for p in procs if not p.autostart]
    pending += wait_healthy(settings, late, max(deadline - time.monotonic(), 30), with_prometheus=False)
    print_status(settings, with_lag=False)
    if pending:
        print(
            f"k2: not healthy after {settings.deploy_up_timeout:.0f}s: {', '.join(pending)}; "
            f"logs in {sup.logs_dir} (`python -m deploy.local logs NAME`)",
            file=sys.stderr,
        )
        return 1
    print(
        f"k2: up in {time.monotonic() - started:.1f}s"
        + (f"; Prometheus {prometheus.url(settings)}" if settings.prometheus_port else "")
    )
    return 0


def endpoints(settings: DeploySettings, procs: list[Proc], with_prometheus: bool = True) -> dict[str, str]:
    urls = {proc.name: proc.metrics_url for proc in procs}
    if settings.prometheus_port and with_prometheus:
        urls["prometheus"] = f"{prometheus.url(settings)}/-/ready"
    return urls


def wait_healthy(
    settings: DeploySettings, procs: list[Proc], timeout: float, with_prometheus: bool = True
) -> list[str]:
    """Wait until every process answers; return the names that still do not."""
    urls = endpoints(settings, procs, with_prometheus)
    deadline = time.monotonic() + timeout
    pending = list(urls)
    while pending and time.monotonic() < deadline:
        pending = [name for name in pending if not healthy(urls[name])]
        if pending:
            time.sleep(0.5)
    return pending


def down(settings: DeploySettings) -> int:
    sup = Supervisor(settings.resolved_data_dir)
    print("k2: processes stopped" if sup.shutdown() else "k2: no supervisor was running")
    stopped = broker_of(settings).stop()
    print("k2: broker stopped" if stopped else "k2: broker was not running")
    return 0


def print_status(settings: DeploySettings, with_lag: bool = True) -> bool:
    """Print every process's state and health (and the lag); True when all are running and healthy."""
    sup = Supervisor(settings.resolved_data_dir)
    procs = load_plan(settings)
    states = {info["name"]: info for info in sup.processes()}
    broker = broker_of(settings)
    broker_pid = broker.pid()
    ok = broker_pid is not None
    print(f"{'PROCESS':<16}{'STATE':<10}{'PID':>8}  {'HEALTH':<8}ENDPOINT")
    print(
        f"{'kafka':<16}{'RUNNING' if broker_pid else 'STOPPED':<10}{broker_pid or '-':>8}  "
        f"{'ok' if broker_pid else 'down':<8}{broker.bootstrap}"
    )
    planned = plan_file(settings).exists()
    urls = endpoints(settings, procs) if planned else {}
    for name, url in urls.items():
        info = states.get(name, {})
        state = info.get("statename", "ABSENT")
        good = state == "RUNNING" and healthy(url)
        ok = ok and good
        print(f"{name:<16}{state:<10}{info.get('pid') or '-':>8}  {'ok' if good else 'down':<8}{url}")
    if not planned:
        print("(no supervisor plan: run `python -m deploy.local up`)")
        ok = False
    if with_lag and broker_pid:
        print(f"\n{'CONSUMER GROUP':<34}{'TOPIC':<36}{'PARTS':>6}{'LAG':>10}")
        try:
            for row in consumer_lag_sync(broker.bootstrap):
                print(f"{row.group:<34}{row.topic:<36}{row.partitions:>6}{row.lag:>10}")
        except Exception as exc:  # status must report, not crash, when the broker misbehaves
            print(f"(lag unavailable: {exc!r})")
    return ok


def logs(settings: DeploySettings, service: str | None, follow: bool, lines: int) -> int:
    logs_dir = settings.logs_dir
    files = sorted(logs_dir.glob("*.log"))
    if service:
        files = [f for f in files if f.stem == service or f.stem.rsplit("-", 1)[0] == service]
    if not files:
        print(f"no logs for {service or 'any service'} in {logs_dir}", file=sys.stderr)
        return 1
    args = ["tail", "-n", str(lines), *(["-F"] if follow else []), *map(str, files)]
    os.execvp("tail", args)
    return 0  # unreachable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.local", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start broker, topics, every service replica and Prometheus")
    p_up.add_argument(
        "--demo", action="store_true", help="feed from the simulator serving the bundled capture"
    )
    sub.add_parser("down", help="stop every process, the broker included")
    sub.add_parser("status", help="state, health and consumer lag of every process")
    p_logs = sub.add_parser("logs", help="follow the logs (of one service or process)")
    p_logs.add_argument("service", nargs="?")
    p_logs.add_argument("--no-follow", action="store_true")
    p_logs.add_argument("-n", "--lines", type=int, default=50)
    args = parser.parse_args(argv)
    settings = DeploySettings()
    try:
        if args.command == "up":
            return up(settings, args.demo)
        if args.command == "down":
            return down(settings)
        if args.command == "status":
            return 0 if print_status(settings) else 3
        return logs(settings, args.service, not args.no_follow, args.lines)
    except (BrokerError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
