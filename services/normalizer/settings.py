"""Settings of the normalizer (env K2_NORMALIZER_*)."""

from __future__ import annotations

from pydantic import Field

from services.common.settings import K2Settings


class NormalizerSettings(K2Settings):
    """Normalizer: raw frames → validated, de-duplicated trades, dead letters and gaps."""

    normalizer_app_id: str = Field(
        "k2-normalizer",
        description="Kafka consumer group; prefix of the transactional ids and of the dedup changelog topic.",
    )
    normalizer_batch_max: int = Field(2000, ge=1, description="Most records fetched per batch.")
    normalizer_batch_within_ms: int = Field(
        10,
        ge=1,
        description="Longest wait for records when none are buffered, ms (a batch is what has arrived).",
    )
    normalizer_dedup_horizon: int = Field(
        100_000,
        ge=10,
        description="Trade ids per symbol remembered for de-duplication (older ids count as already seen).",
    )
    normalizer_session_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Kafka consumer-group session timeout: how fast a dead worker's "
        "partitions move to the others.",
    )
    normalizer_transaction_timeout_ms: int = Field(
        15_000,
        ge=1000,
        description="Kafka transaction timeout: how long a crashed worker's open "
        "transaction can hold back read_committed readers.",
    )
