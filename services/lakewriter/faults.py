"""TEST ONLY fault injection: crash (SIGKILL to itself) or pause at named points of the commit path.

`K2_LAKEWRITER_FAULT=before_catalog_commit:0.1,after_catalog_commit:0.1,pause_before_catalog_commit:0.05`
Points: before_write (rows buffered, nothing written), before_catalog_commit (data files and
manifests written, catalog not updated), after_catalog_commit (snapshot committed, Kafka offsets
not), after_kafka_commit. `pause_<point>` sleeps a random 0–2 s instead of crashing.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time

log = logging.getLogger(__name__)
POINTS = ("before_write", "before_catalog_commit", "after_catalog_commit", "after_kafka_commit")


class Faults:
    def __init__(self, spec: str = "") -> None:
        self.rules: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            name, _, prob = item.partition(":")
            point = name.removeprefix("pause_")
            if point not in POINTS:
                raise ValueError(f"unknown fault point {name!r}; known: {', '.join(POINTS)}")
            self.rules[name] = float(prob or "1")

    def __bool__(self) -> bool:
        return bool(self.rules)

    def point(self, name: str) -> None:
        pause = self.rules.get(f"pause_{name}", 0.0)
        if pause and random.random() < pause:
            time.sleep(random.uniform(0, 2))
        crash = self.rules.get(name, 0.0)
        if crash and random.random() < crash:
            log.warning("FAULT: crashing at %s", name)
            os.kill(os.getpid(), signal.SIGKILL)
