"""Settings of the OHLCV service (variables `K2_OHLCV_*`)."""

from __future__ import annotations

from pydantic import Field

from services.common.settings import K2Settings


class OhlcvSettings(K2Settings):
    """Candle builder: group id, event-time grace, idle timeout, live throttle, correction horizon."""

    ohlcv_app_id: str = Field(
        "k2-ohlcv",
        description="Kafka consumer group; prefix of the transactional ids and of the state changelog topic.",
    )
    ohlcv_grace_seconds: float = Field(
        10.0, ge=0, description="Watermark = highest exchange_ts seen in a partition minus this grace."
    )
    ohlcv_idle_timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="A partition without a trade for this long moves its watermark to wall clock − grace.",
    )
    ohlcv_live_interval_ms: int = Field(
        250, gt=0, description="At most one market.crypto.ohlcv.live update per candle per interval."
    )
    ohlcv_correction_horizon_seconds: float = Field(
        3600.0,
        ge=0,
        description="Closed candles stay in state this long (event time after their window end) so late "
        "trades revise them; later trades for a purged window are counted and not applied.",
    )
    ohlcv_batch_max: int = Field(2000, gt=0, description="Most trades processed as one batch.")
    ohlcv_batch_within_ms: int = Field(
        20, gt=0, description="Longest wait for trades when none are buffered (a batch is what has arrived)."
    )
    ohlcv_transaction_timeout_ms: int = Field(
        15_000,
        ge=1000,
        description="Kafka transaction timeout: how long a crashed worker's open transaction can hold back "
        "read_committed readers of candles.",
    )
    ohlcv_session_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Kafka group session timeout: how soon a crashed worker's partitions move to another.",
    )
