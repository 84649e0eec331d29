"""The local Prometheus: its config, file_sd targets (one file per service) and the shared alert rules.

The rules are deploy/prometheus/rules/*.yml, the very files compose mounts; locally they are copied
into `<data>/prometheus/rules` so a test can shorten every alert's `for:` (K2_PROMETHEUS_RULE_FOR)
without touching the expressions. Prometheus reads YAML, and JSON is YAML: the config is written as
JSON, no YAML library needed at run time.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from deploy.local.plan import REPO, Proc
from deploy.local.settings import DeploySettings
from deploy.local.supervisor import Program

RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
FOR_LINE = re.compile(r"^(\s+for:\s*)\S+\s*$", re.MULTILINE)


def home(settings: DeploySettings) -> Path:
    return settings.resolved_data_dir / "prometheus"


def write(settings: DeploySettings, procs: list[Proc]) -> Path:
    """Write config, targets and rules under `<data>/prometheus`; return the config file."""
    root = home(settings)
    targets_dir, rules_dir = root / "targets", root / "rules"
    for folder in (targets_dir, rules_dir, root / "data"):
        folder.mkdir(parents=True, exist_ok=True)
    write_targets(targets_dir, procs)
    for old in rules_dir.glob("*.yml"):
        old.unlink()
    for rule_file in sorted(RULES_DIR.glob("*.yml")):
        text = rule_file.read_text()
        if settings.prometheus_rule_for:
            text = FOR_LINE.sub(lambda m: m.group(1) + settings.prometheus_rule_for, text)
        (rules_dir / rule_file.name).write_text(text)
    services = sorted({proc.service for proc in procs})
    config = {
        "global": {
            "scrape_interval": settings.prometheus_scrape_interval,
            "evaluation_interval": settings.prometheus_eval_interval,
            "external_labels": {"k2_env": "local"},
        },
        "rule_files": [str(rules_dir / "*.yml")],
        "scrape_configs": [
            {
                "job_name": service,
                "file_sd_configs": [
                    {"files": [str(targets_dir / f"{service}.json")], "refresh_interval": "5s"}
                ],
            }
            for service in services
        ]
        + [
            {
                "job_name": "prometheus",
                "static_configs": [{"targets": [f"127.0.0.1:{settings.prometheus_port}"]}],
            }
        ],
    }
    config_file = root / "prometheus.yml"
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    return config_file


def write_targets(targets_dir: Path, procs: list[Proc]) -> None:
    by_service: dict[str, list[dict[str, object]]] = {}
    for proc in procs:
        by_service.setdefault(proc.service, []).append(
            {
                "targets": [f"127.0.0.1:{proc.port}"],
                "labels": {"service": proc.service, "replica": str(proc.replica)},
            }
        )
    for old in targets_dir.glob("*.json"):
        if old.stem not in by_service:
            old.unlink()
    for service, groups in by_service.items():
        tmp = targets_dir / f".{service}.json.tmp"
        tmp.write_text(json.dumps(groups, indent=2) + "\n")
        tmp.replace(targets_dir / f"{service}.json")  # atomic: Prometheus never reads half a file


def binary(settings: DeploySettings) -> str:
    found = shutil.which(settings.prometheus_binary)
    if found is None:
        raise RuntimeError(
            f"`{settings.prometheus_binary}` is not installed: run deploy/local/install-prometheus.sh "
            "(apt-get install prometheus, as root) or set K2_PROMETHEUS_PORT=0 to run without it"
        )
    return found


def program(settings: DeploySettings, config_file: Path) -> Program:
    root = home(settings)
    return Program(
        "prometheus",
        "prometheus",
        [
            binary(settings),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=7d",
            f"--web.console.templates={root / 'consoles'}",
            f"--web.console.libraries={root / 'console_libraries'}",
        ],
        {},
        priority=50,
        stopwaitsecs=30,
    )


def url(settings: DeploySettings) -> str:
    return f"http://127.0.0.1:{settings.prometheus_port}"
