"""Which metric names dashboards and rules refer to, and which names services expose."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "deploy" / "prometheus" / "rules"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "k2.json"
K2_NAME = re.compile(r"\bk2_[a-z0-9_]+[a-z0-9]")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created"),
    "info": ("_info",),
    "gauge": ("",),
    "unknown": ("",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
}


def rule_expressions() -> Iterator[tuple[str, str]]:
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield f"{path.name}:{rule.get('alert') or rule.get('record')}", rule["expr"]


def dashboard_expressions() -> Iterator[tuple[str, str]]:
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]


def referenced(expressions: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """metric name → where it is used (k2_* names only; `up` is Prometheus's own)."""
    names: dict[str, set[str]] = {}
    for where, expr in expressions:
        # Label values in quotes are not metric names.
        for name in K2_NAME.findall(re.sub(r'"[^"]*"', '""', expr)):
            names.setdefault(name, set()).add(where)
    return names


def exposed(text: str) -> set[str]:
    """Every sample name a /metrics text can carry, declared families included (even without samples yet)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names
