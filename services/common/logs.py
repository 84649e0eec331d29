"""One logging setup for every process: timestamped lines on stderr (the supervisor files them)."""

from __future__ import annotations

import logging
import os


def setup_logging(level: str = "INFO", service: str = "k2") -> None:
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s",
        force=True,
    )
    # aiokafka is chatty at INFO about every rebalance step (K2_LOG_KAFKA=1 keeps it).
    if os.environ.get("K2_LOG_KAFKA") == "1":
        return
    for noisy in ("aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
