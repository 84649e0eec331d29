"""Compose, Dockerfile, Prometheus config/rules and the Grafana dashboard, validated without Docker."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.deploy.metric_names import (
    DASHBOARD,
    REPO,
    RULES_DIR,
    dashboard_expressions,
    referenced,
    rule_expressions,
)

DEPLOY = REPO / "deploy"
SERVICES = ("feed", "normalizer", "ohlcv", "lakewriter", "query")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} interpolation ($$ is a literal $)."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if op and op.endswith("?") and not value:
            raise KeyError(f"${{{name}}} is required: {arg}")
        if value is None or (op == ":-" and value == ""):
            return arg or ""
        return value

    return INTERPOLATION.sub(replace, text.replace("$$", "\0")).replace("\0", "$")


def load_compose(env: dict[str, str] | None = None) -> dict:
    env = {"K2_QUERY_API_KEYS": "test-key"} if env is None else env
    return yaml.safe_load(interpolate((DEPLOY / "compose.yaml").read_text(), env))


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(
            f"`{name}` is not installed: run deploy/local/install-prometheus.sh "
            "(apt-get install prometheus) / pip install -e '.[dev]'"
        )
    return found


def test_compose_matches_the_compose_spec_schema() -> None:
    schema = json.loads((DEPLOY / "schema" / "compose-spec.json").read_text())
    jsonschema.validate(load_compose(), schema)
    # The schema is strict enough to catch a typo in a service key.
    broken = load_compose()
    broken["services"]["feed"]["replicaz"] = 2
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_compose_replicas_come_from_the_environment() -> None:
    compose = load_compose({"K2_QUERY_API_KEYS": "k", "NORMALIZER_REPLICAS": "3", "QUERY_REPLICAS": "2"})
    services = compose["services"]
    assert services["normalizer"]["deploy"]["replicas"] == 3
    assert services["query"]["deploy"]["replicas"] == 2
    assert services["ohlcv"]["deploy"]["replicas"] == 1
    for name in SERVICES:
        service = services[name]
        assert service["image"] == "k2:latest"
        assert service["command"][0] == f"services.{name}"
        assert service["environment"]["K2_KAFKA_BOOTSTRAP"] == "kafka:9092"
        assert service["environment"]["K2_CATALOG_URI"].startswith("postgresql+psycopg2://")
        assert service["environment"]["K2_WAREHOUSE"].startswith("s3://")
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["topics"]["command"] == ["services.common.kafka", "create-topics"]
    assert services["query"]["environment"]["K2_QUERY_AUTH_ENABLED"] == "true"


def test_compose_requires_query_api_keys() -> None:
    with pytest.raises(KeyError, match="K2_QUERY_API_KEYS"):
        load_compose({})


def test_prometheus_discovers_every_service_through_dns() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    compose = load_compose()
    for name in SERVICES:
        sd = jobs[name]["dns_sd_configs"][0]
        assert sd["names"] == [name]
        port = int(compose["services"][name]["environment"]["K2_METRICS_PORT"])
        assert sd["port"] == port


def test_promtool_accepts_config_and_rules(tmp_path: Path) -> None:
    promtool = tool("promtool")
    rules = subprocess.run(
        [promtool, "check", "rules", *map(str, sorted(RULES_DIR.glob("*.yml")))],
        capture_output=True,
        text=True,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr
    # The config names the rules by their in-container path: point it at the repository's copy.
    config = (
        (DEPLOY / "prometheus" / "prometheus.yml")
        .read_text()
        .replace("/etc/prometheus/rules/*.yml", f"{RULES_DIR}/*.yml")
    )
    (tmp_path / "prometheus.yml").write_text(config)
    checked = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "rules found" in checked.stdout + checked.stderr


def test_rules_cover_the_required_alerts() -> None:
    alerts = dict(rule_expressions())
    names = {key.split(":", 1)[1] for key in alerts}
    for required in (
        "K2ServiceDown",
        "K2FeedStale",
        "K2FeedDisconnected",
        "K2NormalizerLagGrowing",
        "K2DeadLetterRateHigh",
        "K2GapsDetected",
        "K2LakeCommitsFailing",
        "K2LakeCommitStale",
        "K2QueryErrorRateHigh",
        "K2QueryLatencyHigh",
    ):
        assert required in names


def test_dockerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DEPLOY / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2, "multi-stage build expected"
    assert re.search(r"^USER (?!root|0)", text, re.MULTILINE), "the image must run as non-root"
    assert "HEALTHCHECK" in text


def test_dashboard_is_current_and_well_formed() -> None:
    from deploy.grafana import dashboard

    assert DASHBOARD.read_text() == dashboard.render(), "run `python -m deploy.grafana.dashboard`"
    parsed = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in parsed["panels"]]
    assert len(ids) == len(set(ids))
    assert all(
        target["expr"] for _, target in ((p, t) for p in parsed["panels"] for t in p.get("targets", []))
    )
    used = referenced(dashboard_expressions())
    for metric in (
        "k2_feed_frames_total",
        "k2_normalizer_dead_letters_total",
        "k2_ohlcv_candles_out_total",
        "k2_lakewriter_last_commit_age_seconds",
        "k2_query_request_duration_seconds_bucket",
    ):
        assert metric in used


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "k2.yml").read_text())
    compose = load_compose()
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{providers['providers'][0]['options']['path']}:ro" in mounts


def test_install_script_is_valid_shell() -> None:
    script = DEPLOY / "local" / "install-prometheus.sh"
    assert os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
