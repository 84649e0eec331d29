"""observe_many gives the same histogram as prometheus_client's observe(), value by value."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from services.common.metrics import observe_many

VALUES = [0.0, 0.004, 0.005, 0.0051, 0.02, 0.05, 0.3, 2.5, 99.0, 1e9, -1.0]
BUCKETS = (0.005, 0.01, 0.05, 0.1, 1.0, 5.0)


def exposition(observe: str) -> bytes:
    registry = CollectorRegistry()
    histogram = Histogram("h_seconds", "test", ["exchange"], buckets=BUCKETS, registry=registry)
    child = histogram.labels("x")
    if observe == "many":
        observe_many(child, VALUES)
        observe_many(child, [])  # nothing: no change
    else:
        for value in VALUES:
            child.observe(value)
    return generate_latest(registry)


def test_observe_many_equals_observing_each_value() -> None:
    one_by_one = [line for line in exposition("each").splitlines() if b"_created" not in line]
    many = [line for line in exposition("many").splitlines() if b"_created" not in line]
    assert many == one_by_one
    assert b'h_seconds_bucket{exchange="x",le="0.005"} 4.0' in many  # bounds are inclusive
    assert b'h_seconds_count{exchange="x"} 11.0' in many
