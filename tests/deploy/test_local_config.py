"""The local supervisor's generated files: ports, supervisord programs, Prometheus config (promtool)."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from deploy.local import prometheus
from deploy.local.plan import DEMO_CAPTURE, build_plan
from deploy.local.settings import DeploySettings
from deploy.local.supervisor import Supervisor


def settings(tmp_path: Path, **overrides: object) -> DeploySettings:
    """Explicit values, so K2_* variables of the shell running the tests change nothing."""
    values: dict[str, object] = {
        "data_dir": tmp_path,
        "replicas_feed": 1,
        "replicas_normalizer": 3,
        "replicas_ohlcv": 1,
        "replicas_lakewriter": 1,
        "replicas_query": 2,
        "prometheus_rule_for": "0s",
        "deploy_port_base": 9100,
        "deploy_query_port": 8000,
        "deploy_simulator_port": 0,
        "prometheus_port": 9090,
        "feed_source": "simulator",
        **overrides,
    }
    return DeploySettings(**values)


def test_every_replica_gets_its_own_port_and_identity(tmp_path: Path) -> None:
    procs = build_plan(settings(tmp_path), demo=True)
    names = [p.name for p in procs]
    assert names.count("normalizer-2") == 1 and "normalizer-3" not in names
    assert names[0] == "simulator-0" and names[-1] == "feed-0"  # consumers before the feed
    ports = [p.port for p in procs]
    assert len(ports) == len(set(ports))
    by_name = {p.name: p for p in procs}
    assert by_name["query-1"].env["K2_QUERY_PORT"] == str(by_name["query-1"].port) == "8001"
    assert by_name["feed-0"].env["K2_FEED_SOURCE"] == "simulator"
    assert by_name["feed-0"].env["K2_FEED_SIMULATOR_URL"].endswith(f":{9100 + 99}")
    assert by_name["simulator-0"].env["K2_FEED_SIMULATOR_CAPTURE"] == str(DEMO_CAPTURE)
    assert by_name["lakewriter-0"].env["K2_LAKEWRITER_INSTANCE_ID"] == "lakewriter-0"


def test_no_simulator_for_live_feeds(tmp_path: Path) -> None:
    procs = build_plan(settings(tmp_path, feed_source="live"))
    assert "simulator" not in {p.service for p in procs}
    assert next(p for p in procs if p.service == "feed").env["K2_FEED_SOURCE"] == "live"


def test_supervisord_config_has_one_program_per_replica_grouped_by_service(tmp_path: Path) -> None:
    procs = build_plan(settings(tmp_path))
    sup = Supervisor(tmp_path)
    sup.write_config(procs)
    parser = configparser.RawConfigParser()
    parser.read(sup.config_file)
    programs = [s.split(":", 1)[1] for s in parser.sections() if s.startswith("program:")]
    assert sorted(programs) == sorted(p.name for p in procs)
    assert parser.get("group:normalizer", "programs") == "normalizer-0,normalizer-1,normalizer-2"
    section = parser["program:normalizer-1"]
    assert section["autorestart"] == "true"
    assert section["stdout_logfile"] == str(tmp_path / "logs" / "normalizer-1.log")
    assert 'K2_METRICS_PORT="9121"' in section["environment"]
    assert str(tmp_path) in parser.get("unix_http_server", "file")


def test_generated_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run deploy/local/install-prometheus.sh")
    conf = settings(tmp_path)
    procs = build_plan(conf, demo=True)
    config_file = prometheus.write(conf, procs)
    checked = subprocess.run([promtool, "check", "config", str(config_file)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = json.loads(config_file.read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"feed", "normalizer", "ohlcv", "lakewriter", "query", "simulator", "prometheus"} == jobs
    targets = json.loads((tmp_path / "prometheus" / "targets" / "normalizer.json").read_text())
    assert [t["targets"] for t in targets] == [["127.0.0.1:9120"], ["127.0.0.1:9121"], ["127.0.0.1:9122"]]
    rules = (tmp_path / "prometheus" / "rules" / "k2.yml").read_text()
    assert "for: 0s" in rules and "for: 1m" not in rules
