"""Settings of the local supervisor (`python -m deploy.local`): replica counts, ports, Prometheus."""

from __future__ import annotations

from pydantic import Field

from services.common.settings import K2Settings

# Services the supervisor runs, in start order; the simulator only in demo mode (K2_FEED_SOURCE=simulator).
SERVICES: tuple[str, ...] = ("normalizer", "ohlcv", "lakewriter", "query", "feed")


class DeploySettings(K2Settings):
    """The local supervisor: how many replicas of each service, which ports, the local Prometheus."""

    replicas_feed: int = Field(1, ge=0, le=20, description="Feed processes (each connects on its own).")
    replicas_normalizer: int = Field(1, ge=0, le=20, description="Normalizer workers (≤ 6 do work).")
    replicas_ohlcv: int = Field(1, ge=0, le=20, description="OHLCV workers (≤ 6 do work).")
    replicas_lakewriter: int = Field(1, ge=0, le=20, description="Lake writer processes.")
    replicas_query: int = Field(1, ge=0, le=20, description="Query API processes (each on its own port).")
    deploy_port_base: int = Field(
        9100,
        description="First /metrics port of the local supervisor: service i, replica r listens on "
        "base + 20*i + r (feed 0, normalizer 1, ohlcv 2, lakewriter 3, simulator 4).",
    )
    deploy_query_port: int = Field(
        8000, description="HTTP port of the first query replica; replica r listens on this + r."
    )
    deploy_simulator_port: int = Field(
        0, description="WebSocket port of the demo simulator; 0 means deploy_port_base + 99."
    )
    deploy_demo_speed: float = Field(
        1.0, gt=0, description="Pace of the bundled capture in demo mode (2 = twice as fast as recorded)."
    )
    deploy_demo_capture: str = Field(
        "", description="Capture file the simulator serves in demo mode; empty means the bundled one."
    )
    deploy_up_timeout: float = Field(
        180.0, description="Seconds `up` waits for every process to answer /metrics."
    )
    prometheus_port: int = Field(9090, description="Port of the local Prometheus (0 = do not start it).")
    prometheus_binary: str = Field("prometheus", description="The Prometheus executable (Debian package).")
    prometheus_scrape_interval: str = Field("15s", description="Scrape interval of the local Prometheus.")
    prometheus_eval_interval: str = Field(
        "15s", description="Rule evaluation interval of the local Prometheus."
    )
    prometheus_rule_for: str = Field(
        "",
        description="If set, replaces every alert's `for:` duration (tests use 0s); empty keeps the rules'.",
    )

    def replicas(self, service: str) -> int:
        return int(getattr(self, f"replicas_{service}"))
