"""Stage 1 is at least once: what it sends again after a crash or a reset, stage 2 publishes once —
trades by natural key, dead letters and gaps by their place in the raw input — also across a restart
of stage 2 from its changelog."""

from __future__ import annotations

import orjson
from aiokafka.structs import ConsumerRecord
from prometheus_client import REGISTRY

from services.common.instruments import default_instruments
from services.common.schemas import DeadLetter, Gap
from services.common.stream import Output
from services.common.topics import GAPS, TRADES, TRADES_DLQ, TRADES_PARSED
from services.normalizer.processor import DedupProcessor, ForwardMark, ParseProcessor
from tests.normalizer.frames import BASE_NS, binance_trade, marker_record, raw_record, topic

CHANGELOG = "norm-test-dedup-changelog"
INSTRUMENTS = default_instruments()


def raw_records() -> list[ConsumerRecord]:
    frames = [
        raw_record("b1", 1, binance_trade(100)),
        raw_record("b1", 2, b"{not json"),
        raw_record("b1", 3, binance_trade(101, price="-1")),
        marker_record("binance", "b1", "b2", 4, BASE_NS, BASE_NS + 5_000_000),
        raw_record("b2", 5, binance_trade(103)),
    ]
    return [
        ConsumerRecord(topic("binance"), 2, offset, 0, 0, key, value, None, 0, len(value), headers)
        for offset, (key, value, headers) in enumerate(frames)
    ]


def parsed(outputs: list[Output], start: int) -> list[ConsumerRecord]:
    """Stage 1's outputs as records of one parsed partition (all of them, for the test)."""
    return [
        ConsumerRecord(TRADES_PARSED, 0, start + i, 0, 0, key, value, None, 0, 0, [])
        for i, (_t, key, value, _p) in enumerate(outputs)
    ]


def published(outputs: list[Output]) -> dict[str, list[bytes]]:
    got: dict[str, list[bytes]] = {TRADES: [], TRADES_DLQ: [], GAPS: []}
    for topic_name, _key, value, _p in outputs:
        if topic_name in got and value is not None:
            got[topic_name].append(value)
    return got


def changelog_state(outputs: list[Output]) -> dict[bytes, bytes]:
    return {key: value for t, key, value, _p in outputs if t == CHANGELOG and key and value}


def test_a_replayed_stage_one_batch_is_published_once() -> None:
    first = ParseProcessor(INSTRUMENTS).process(raw_records())
    # stage 1 crashed after sending its first three records' outputs but before committing: a new
    # run (fresh sequence state) parses everything again
    replay = ParseProcessor(INSTRUMENTS).process(raw_records())
    stage2 = DedupProcessor(0, CHANGELOG, 1000, {})
    out = stage2.process(parsed(first[:3], 0))
    restarted = DedupProcessor(0, CHANGELOG, 1000, changelog_state(out))  # stage 2 restarts too
    out += restarted.process(parsed(first[3:], 3) + parsed(replay, 100))

    got = published(out)
    assert [DeadLetter.decode(v).reason for v in got[TRADES_DLQ]] == ["malformed_json", "bad_price"]
    assert [Gap.decode(v).kind for v in got[GAPS]] == ["disconnect", "sequence"]  # 102 is missing
    assert len(got[TRADES]) == 2  # trades 100 and 103


def test_stage_two_skips_parsed_records_it_cannot_read() -> None:
    """Only stage 1 writes the parsed topic; a record of another writer is logged and skipped, and
    the trades around it still go through."""
    foreign = [
        b"{not json",
        b"[]",
        b'{"exchange":"binance"}',
        b'{"exchange":"binance","symbol":"BTC/USDT","trade_id":5,"exchange_ts":1,"received_at":1}',
        b'{"exchange":"binance","symbol":"BTC/USDT","trade_id":"5","exchange_ts":"1","received_at":1}',
    ]
    outputs = [(TRADES_PARSED, b"binance:BTC/USDT", value, None) for value in foreign]
    outputs += ParseProcessor(INSTRUMENTS).process(raw_records())
    got = published(DedupProcessor(0, CHANGELOG, 1000, {}).process(parsed(outputs, 0)))
    assert [orjson.loads(value)["trade_id"] for value in got[TRADES]] == ["100", "103"]


def test_forward_marks_admit_each_place_once_in_any_slot_order() -> None:
    mark = ForwardMark(-1, set())
    assert [mark.admit(5, slot) for slot in (3, 0, 3, -1)] == [True, True, False, True]
    assert not mark.admit(4, 9)  # before the mark: forwarded already
    assert mark.admit(6, 0) and not mark.admit(5, 7)
    assert ForwardMark.decode(mark.encode()) == mark


def gaps_counted() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "k2_normalizer_gaps"
        for sample in metric.samples
        if sample.name == "k2_normalizer_gaps_total"
    )


def test_gaps_are_counted_when_their_batch_commits_not_when_processed() -> None:
    outputs = ParseProcessor(INSTRUMENTS).process(raw_records())
    stage2 = DedupProcessor(0, CHANGELOG, 1000, {})
    before = gaps_counted()
    out = stage2.process(parsed(outputs, 0))
    assert len(published(out)[GAPS]) == 2  # the disconnect (forwarded) and the sequence gap (own)
    assert gaps_counted() == before  # not yet: the transaction may still abort
    stage2.after_commit()()
    assert gaps_counted() == before + 2
