"""The topic registry: every Kafka topic of the platform, its shape and what its key means.

`python -m services.common.topics` (== `task topics`) creates them idempotently.
The stream services create their own compacted changelog topics on start (`<app id>-dedup-changelog`,
`<app id>-state-changelog`: services/normalizer/app.py, services/ohlcv/app.py); they are not listed here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.instruments import EXCHANGES

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    key: str
    value: str
    cleanup_policy: str = "delete"
    retention_ms: int = 7 * DAY_MS
    extra_configs: dict[str, str] = field(default_factory=dict)

    def configs(self) -> dict[str, str]:
        configs = {"cleanup.policy": self.cleanup_policy, **self.extra_configs}
        if self.cleanup_policy == "delete":
            configs["retention.ms"] = str(self.retention_ms)
        return configs


def raw_topic(exchange: str) -> str:
    return f"market.crypto.trades.{exchange}.raw"


RAW_TOPICS: dict[str, str] = {exchange: raw_topic(exchange) for exchange in EXCHANGES}
TRADES_PARSED = "market.crypto.trades.parsed"
TRADES = "market.crypto.trades"
TRADES_DLQ = "market.crypto.trades.dlq"
GAPS = "market.crypto.gaps"
OHLCV_LIVE = "market.crypto.ohlcv.live"
OHLCV = "market.crypto.ohlcv"

RAW_PARTITIONS = 3
TRADE_PARTITIONS = 6

TOPICS: tuple[TopicSpec, ...] = (
    *(
        TopicSpec(
            name=raw_topic(exchange),
            partitions=RAW_PARTITIONS,
            key="connection id (all frames of one WebSocket connection in one partition, in order)",
            value="the frame text exactly as received (UTF-8), or a K2 disconnect marker "
            "(header k2_kind=marker); headers received_at (ns), connection_id, seq",
            # Frames are kept a week: bronze is the durable copy, Kafka only the buffer.
            extra_configs={"max.message.bytes": str(2 * 1024 * 1024)},
        )
        for exchange in EXCHANGES
    ),
    TopicSpec(
        name=TRADES_PARSED,
        partitions=TRADE_PARTITIONS,
        key="<exchange>:<symbol> (canonical symbol)",
        value="normalizer-internal: a parsed, validated trade (Trade JSON) before de-duplication",
        retention_ms=1 * DAY_MS,
    ),
    TopicSpec(
        name=TRADES,
        partitions=TRADE_PARTITIONS,
        key="<exchange>:<symbol> (canonical symbol)",
        value="a normalized trade, Trade JSON (services.common.schemas), published once per natural key",
    ),
    TopicSpec(
        name=TRADES_DLQ,
        partitions=3,
        key="<exchange>",
        value="DeadLetter JSON: source lineage, reason code, detail, offending text",
        retention_ms=30 * DAY_MS,
    ),
    TopicSpec(
        name=GAPS,
        partitions=1,
        key="<exchange>:<symbol or connection id>",
        value="Gap JSON: a hole in trade ids / sequence numbers, or a feed disconnect interval",
        retention_ms=30 * DAY_MS,
    ),
    TopicSpec(
        name=OHLCV_LIVE,
        partitions=TRADE_PARTITIONS,
        key="<exchange>:<symbol>:<timeframe>",
        value="Candle JSON of an open candle (at most one update per candle per interval)",
        retention_ms=3600 * 1000,
    ),
    TopicSpec(
        name=OHLCV,
        partitions=TRADE_PARTITIONS,
        key="<exchange>:<symbol>:<timeframe>:<window_start µs>",
        value="Candle JSON of a closed candle; revision 0 first, +1 per late-trade correction",
        cleanup_policy="compact",
        extra_configs={"min.compaction.lag.ms": str(DAY_MS)},
    ),
)

TOPICS_BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in TOPICS}
