"""Generates deploy/grafana/dashboards/k2.json: `python -m deploy.grafana.dashboard` (checked by a test).

Panels are written here as (title, unit, queries) so the JSON stays consistent; every metric a
query names is checked against what the services really emit (tests/deploy).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards" / "k2.json"
DS = {"type": "prometheus", "uid": "${datasource}"}


def pq(quantile: float, histogram: str, by: str = "") -> str:
    """PromQL for a quantile of a histogram over 5 minutes, optionally per label(s)."""
    labels = ", ".join(["le", *([by] if by else [])])
    return f"histogram_quantile({quantile}, sum by ({labels}) (rate({histogram}_bucket[5m])))"


ROWS: list[tuple[str, list[tuple[str, str, list[tuple[str, str]]]]]] = [
    (
        "Ingest",
        [
            (
                "Frames received per exchange",
                "reqps",
                [("sum by (exchange) (rate(k2_feed_frames_total[1m]))", "{{exchange}}")],
            ),
            (
                "Trades per exchange: received / normalized",
                "reqps",
                [
                    ("sum by (exchange) (rate(k2_feed_trades_total[1m]))", "{{exchange}} received"),
                    (
                        "sum by (exchange) (rate(k2_normalizer_trades_out_total[1m]))",
                        "{{exchange}} normalized",
                    ),
                ],
            ),
            (
                "Feed connections (subscribed)",
                "short",
                [('sum by (exchange) (k2_feed_connection_state{state="subscribed"})', "{{exchange}}")],
            ),
            (
                "Seconds since last frame",
                "s",
                [("max by (exchange) (k2_feed_last_frame_age_seconds)", "{{exchange}}")],
            ),
        ],
    ),
    (
        "Latency",
        [
            (
                "End-to-end: exchange time → normalized (p50 / p99)",
                "s",
                [
                    (pq(0.5, "k2_normalizer_exchange_to_normalized_seconds"), "p50"),
                    (pq(0.99, "k2_normalizer_exchange_to_normalized_seconds"), "p99"),
                ],
            ),
            (
                "Received → Kafka → normalized (p99)",
                "s",
                [
                    (pq(0.99, "k2_feed_produce_latency_seconds"), "feed produce"),
                    (pq(0.99, "k2_normalizer_received_to_normalized_seconds"), "received → normalized"),
                ],
            ),
            (
                "Final candle latency after window close + grace (p99)",
                "s",
                [(pq(0.99, "k2_ohlcv_close_latency_seconds", "timeframe"), "{{timeframe}}")],
            ),
        ],
    ),
    (
        "Lag",
        [
            (
                "Consumer lag (records)",
                "short",
                [
                    ("sum(k2_normalizer_consumer_lag_messages)", "normalizer"),
                    ("sum(k2_ohlcv_consumer_lag_records)", "ohlcv"),
                    ("sum(k2_lakewriter_lag_records)", "lakewriter"),
                ],
            ),
            (
                "Candle watermark behind wall clock",
                "s",
                [("max(k2_ohlcv_watermark_lag_seconds)", "max over partitions")],
            ),
        ],
    ),
    (
        "Data quality",
        [
            (
                "Dead letters by reason",
                "reqps",
                [
                    (
                        "sum by (exchange, reason) (rate(k2_normalizer_dead_letters_total[5m]))",
                        "{{exchange}} {{reason}}",
                    )
                ],
            ),
            (
                "Gaps and missing trades",
                "short",
                [
                    (
                        "sum by (exchange, kind) (increase(k2_normalizer_gaps_total[15m]))",
                        "{{exchange}} gaps {{kind}}",
                    ),
                    (
                        "sum by (exchange) (increase(k2_normalizer_gap_missing_total[15m]))",
                        "{{exchange}} missing",
                    ),
                ],
            ),
            (
                "Duplicates dropped",
                "reqps",
                [("sum by (exchange) (rate(k2_normalizer_duplicates_dropped_total[5m]))", "{{exchange}}")],
            ),
        ],
    ),
    (
        "Candles",
        [
            (
                "Candles emitted by timeframe and kind",
                "reqps",
                [
                    (
                        "sum by (timeframe, kind) (rate(k2_ohlcv_candles_out_total[5m]))",
                        "{{timeframe}} {{kind}}",
                    )
                ],
            ),
            (
                "Late trades",
                "reqps",
                [
                    (
                        "sum by (timeframe, outcome) (rate(k2_ohlcv_late_trades_total[5m]))",
                        "{{timeframe}} {{outcome}}",
                    )
                ],
            ),
        ],
    ),
    (
        "Lake",
        [
            (
                "Rows committed per table",
                "rowsps",
                [("sum by (table) (rate(k2_lakewriter_rows_total[5m]))", "{{table}}")],
            ),
            (
                "Commit duration (p95)",
                "s",
                [(pq(0.95, "k2_lakewriter_commit_duration_seconds", "table"), "{{table}}")],
            ),
            (
                "Freshness: seconds since last commit",
                "s",
                [("min by (table) (k2_lakewriter_last_commit_age_seconds)", "{{table}}")],
            ),
            (
                "Commit retries and conflicts",
                "reqps",
                [
                    ("sum by (table) (rate(k2_lakewriter_commit_retries_total[5m]))", "{{table}} retries"),
                    (
                        "sum by (table) (rate(k2_lakewriter_commit_conflicts_total[5m]))",
                        "{{table}} conflicts",
                    ),
                ],
            ),
        ],
    ),
    (
        "Query API",
        [
            (
                "Request latency by route (p50 / p99)",
                "s",
                [
                    (pq(0.5, "k2_query_request_duration_seconds", "route"), "{{route}} p50"),
                    (pq(0.99, "k2_query_request_duration_seconds", "route"), "{{route}} p99"),
                ],
            ),
            (
                "Requests by status",
                "reqps",
                [("sum by (status) (rate(k2_query_requests_total[1m]))", "{{status}}")],
            ),
        ],
    ),
    (
        "Processes",
        [
            ("Replicas up per service", "short", [("sum by (job) (up)", "{{job}}")]),
        ],
    ),
]


def panel(panel_id: int, title: str, unit: str, queries: list[tuple[str, str]], x: int, y: int) -> dict:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(queries)
        ],
    }


def build() -> dict:
    panels: list[dict] = []
    next_id, y = 1, 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        next_id, y = next_id + 1, y + 1
        for i, (title, unit, queries) in enumerate(row_panels):
            panels.append(panel(next_id, title, unit, queries, 12 * (i % 2), y + 8 * (i // 2)))
            next_id += 1
        y += 8 * ((len(row_panels) + 1) // 2)
    return {
        "uid": "k2-overview",
        "title": "K2 overview",
        "tags": ["k2"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Data source",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    if "--check" in sys.argv:
        raise SystemExit(0 if OUT.read_text() == render() else 1)
    OUT.write_text(render())
    print(f"wrote {OUT}")
