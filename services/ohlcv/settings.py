"""Settings of the OHLCV service (variables `K2_OHLCV_*`)."""

from __future__ import annotations

from pydantic import Field

from services.common.settings import K2Settings


class OhlcvSettings(K2Settings):
    """Candle builder: Faust app id, event-time grace, idle timeout, live throttle, correction horizon."""

    ohlcv_app_id: str = Field(
        "k2-ohlcv", description="Faust app id: the consumer group and the prefix of its changelog topics."
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
        20, gt=0, description="Longest wait to fill a batch before processing what has arrived."
    )
    ohlcv_commit_interval_seconds: float = Field(
        1.0, gt=0, description="How often consumed offsets are committed (after state is flushed)."
    )
    ohlcv_session_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="Kafka group session timeout: how soon a crashed worker's partitions move to another.",
    )
    ohlcv_worker_name: str = Field(
        "", description="Name of this replica (its Faust data folder); empty means <hostname>-<pid>."
    )
