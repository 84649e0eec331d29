"""The transactional stream runtime (services/common/stream.py) with a small stateful processor:
outputs exactly once, state recovered from the changelog by the next owner, a failing batch retried
from the last commit — against the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from services.common.kafka import ensure_topics
from services.common.stream import BATCHED_SEND_MIN, Output, Record, StreamApp, StreamConfig
from services.common.topics import TopicSpec
from tests.kafka_helpers import committed_offsets, end_offsets, produce, read_topic, wait_for


class Counter:
    """Counts records per key; each output is `<key>:<count>`; the counts are the changelog state."""

    failures_left = 0  # raise on this many batches containing b"poison" (class-wide, like a bug)

    def __init__(self, out: str, changelog: str, partition: int, state: dict[bytes, bytes]) -> None:
        self.out = out
        self.changelog = changelog
        self.partition = partition
        self.counts = {key: int(value) for key, value in state.items()}

    def process(self, records: list[Record]) -> list[Output]:
        if Counter.failures_left and any(r.value == b"poison" for r in records):
            Counter.failures_left -= 1
            self.counts[b"corrupted"] = 999  # a half-done batch: must not survive the reset
            raise RuntimeError("processor bug")
        outputs: list[Output] = []
        for record in records:
            key = record.key or b""
            self.counts[key] = self.counts.get(key, 0) + 1
            outputs.append((self.out, key, key + b":" + str(self.counts[key]).encode(), None))
            outputs.append((self.changelog, key, str(self.counts[key]).encode(), self.partition))
        return outputs

    def tick(self) -> list[Output]:
        return []

    def after_commit(self) -> None:
        return None


@pytest.fixture
async def names(topics: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    names = {"in": f"k2.test.stream.in.{suffix}", "out": f"k2.test.stream.out.{suffix}"}
    await ensure_topics(topics, [TopicSpec(names["in"], 2, "-", "-"), TopicSpec(names["out"], 1, "-", "-")])
    return names


class Passthrough:
    """Stateless: each record's value goes out unchanged."""

    def __init__(self, out: str) -> None:
        self.out = out

    def process(self, records: list[Record]) -> list[Output]:
        return [(self.out, record.key, record.value, None) for record in records]

    def tick(self) -> list[Output]:
        return []

    def after_commit(self) -> None:
        return None


@contextlib.asynccontextmanager
async def running(
    bootstrap: str, names: dict[str, str], group: str, plain: bool = False
) -> AsyncIterator[StreamApp]:
    """A Counter app (transactional, stateful), or with `plain` a Passthrough one (at least once)."""
    changelog = TopicSpec(f"{group}-changelog", 2, "-", "-", cleanup_policy="compact")

    def factory(tp: TopicPartition, state: dict[bytes, bytes]) -> Counter | Passthrough:
        if plain:
            return Passthrough(names["out"])
        return Counter(names["out"], changelog.name, tp.partition, state)

    config = StreamConfig(
        bootstrap=bootstrap,
        group_id=group,
        topics=(names["in"],),
        changelog=None if plain else changelog,
        stateful_topics=frozenset() if plain else frozenset({names["in"]}),
        plain_topics=frozenset({names["in"]}) if plain else frozenset(),
        session_timeout_ms=6000,
        retry_seconds=0.1,
        plain_commit_seconds=0.1,
    )
    app = StreamApp(config, factory)
    await app.start()
    task = asyncio.ensure_future(app.run())
    try:
        yield app
    finally:
        app.stop()
        await task
        await app.close()


async def _outputs(bootstrap: str, topic: str) -> list[bytes]:
    return [r.value for r in await read_topic(bootstrap, topic)]


async def test_outputs_once_and_state_survives_a_new_owner(topics: str, names: dict[str, str]) -> None:
    group = f"k2-test-stream-{uuid.uuid4().hex[:6]}"
    keys = [f"k{i}".encode() for i in range(6)]
    async with running(topics, names, group):
        await produce(topics, names["in"], [(k, b"x", None) for k in keys * 5])
        await wait_for(
            lambda: _count(topics, names["out"], 30), timeout=60, message="the first owner's outputs"
        )
    async with running(topics, names, group):  # a new owner: state from the changelog, offsets from Kafka
        await produce(topics, names["in"], [(k, b"x", None) for k in keys * 5])
        await wait_for(
            lambda: _count(topics, names["out"], 60), timeout=60, message="the second owner's outputs"
        )
    values = await _outputs(topics, names["out"])
    assert sorted(values) == sorted(k + b":" + str(n).encode() for k in keys for n in range(1, 11))


async def test_the_position_is_read_from_the_changelog_not_the_group(
    topics: str, names: dict[str, str]
) -> None:
    """A stateful partition's position commits with its state: the group's committed offset is only
    reported for lag tools, so a new owner does not go back when that report is behind."""
    group = f"k2-test-stream-{uuid.uuid4().hex[:6]}"
    keys = [f"k{i}".encode() for i in range(6)]
    ends = {}

    async def reported() -> bool:
        return await committed_offsets(topics, group) == ends

    async with running(topics, names, group):
        await produce(topics, names["in"], [(k, b"x", None) for k in keys * 5])
        ends = {(names["in"], p): end for p, end in (await end_offsets(topics, names["in"])).items()}
        await wait_for(lambda: _count(topics, names["out"], 30), timeout=60, message="the outputs")
        await wait_for(reported, timeout=30, message="the group's offsets reported")
    rewind = AIOKafkaConsumer(bootstrap_servers=topics, group_id=group, enable_auto_commit=False)
    await rewind.start()
    try:  # a report that lags far behind (or a tool that reset the group's offsets)
        partitions = [TopicPartition(names["in"], p) for p in range(2)]
        rewind.assign(partitions)
        await rewind.commit({tp: 0 for tp in partitions})
    finally:
        await rewind.stop()
    async with running(topics, names, group):
        await produce(topics, names["in"], [(b"k0", b"x", None)])
        await wait_for(lambda: _count(topics, names["out"], 31), timeout=60, message="the new output")
    assert sorted(await _outputs(topics, names["out"]))[-1] == b"k5:5"
    assert b"k0:6" in await _outputs(topics, names["out"])


async def test_plain_partitions_deliver_everything_and_commit_their_position(
    topics: str, names: dict[str, str]
) -> None:
    group = f"k2-test-stream-{uuid.uuid4().hex[:6]}"
    values = [f"v{i}".encode() for i in range(50)]

    async def caught_up() -> bool:
        ends = {(names["in"], p): end for p, end in (await end_offsets(topics, names["in"])).items()}
        return await committed_offsets(topics, group) == ends

    async with running(topics, names, group, plain=True) as app:
        await produce(topics, names["in"], [(v, v, None) for v in values])
        await wait_for(lambda: _count(topics, names["out"], 50), timeout=60, message="the outputs")
        await wait_for(caught_up, timeout=30, message="the positions committed")
        assert app.transactions == 0
    assert sorted(await _outputs(topics, names["out"])) == sorted(values)


@pytest.fixture
def batched(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the sends that took `_send_batched` (record batches), as they happen."""
    sizes: list[int] = []
    send_batched = StreamApp._send_batched

    async def spy(producer: AIOKafkaProducer, outputs: list[Output]) -> None:
        sizes.append(len(outputs))
        await send_batched(producer, outputs)

    monkeypatch.setattr(StreamApp, "_send_batched", staticmethod(spy))
    return sizes


async def test_a_large_plain_flush_goes_out_in_record_batches_in_order(
    topics: str, names: dict[str, str], batched: list[int]
) -> None:
    """A backlog's flushes take `_send_batched` (record batches built per partition): every record
    arrives once, each key's records in input order, and one larger than a batch goes out alone."""
    group = f"k2-test-stream-{uuid.uuid4().hex[:6]}"
    keys = [f"k{i}".encode() for i in range(10)]
    records = [(keys[n % 10], keys[n % 10] + b":" + str(n // 10).encode(), None) for n in range(4000)]
    records.insert(1500, (b"big", b"x" * 300_000, None))  # larger than a record batch (256 KiB)
    await produce(topics, names["in"], records)  # before the app starts: a backlog
    async with running(topics, names, group, plain=True):
        await wait_for(lambda: _count(topics, names["out"], 4001), timeout=60, message="the outputs")
    assert batched and max(batched) >= BATCHED_SEND_MIN
    out = await _outputs(topics, names["out"])
    assert sorted(out) == sorted(value for _key, value, _h in records)
    for key in keys:
        mine = [value for value in out if value.startswith(key + b":")]
        assert mine == [key + b":" + str(i).encode() for i in range(400)], key


async def test_a_large_transaction_goes_out_in_record_batches_exactly_once(
    topics: str, names: dict[str, str], batched: list[int]
) -> None:
    """A backlog's transactions take `_send_batched` too: outputs and changelog once each, in order."""
    group = f"k2-test-stream-{uuid.uuid4().hex[:6]}"
    keys = [f"k{i}".encode() for i in range(10)]
    await produce(topics, names["in"], [(keys[n % 10], b"x", None) for n in range(3000)])
    async with running(topics, names, group):
        await wait_for(lambda: _count(topics, names["out"], 3000), timeout=60, message="the outputs")
    assert batched and max(batched) >= BATCHED_SEND_MIN
    out = await _outputs(topics, names["out"])
    for key in keys:  # each key's counts 1..300, in order: none lost, none twice
        assert [v for v in out if v.startswith(key + b":")] == [
            key + b":" + str(n).encode() for n in range(1, 301)
        ]
    async with running(topics, names, group):  # the state committed with them: the count goes on
        await produce(topics, names["in"], [(b"k0", b"x", None)])
        await wait_for(lambda: _count(topics, names["out"], 3001), timeout=60, message="the next output")
    assert (await _outputs(topics, names["out"]))[-1] == b"k0:301"


async def test_a_failing_batch_is_retried_from_the_last_commit(topics: str, names: dict[str, str]) -> None:
    group = f"k2-test-stream-{uuid.uuid4().hex[:6]}"
    Counter.failures_left = 2
    async with running(topics, names, group) as app:
        records = [(b"a", b"x", None), (b"a", b"poison", None), (b"a", b"x", None)]
        await produce(topics, names["in"], records)
        await wait_for(lambda: _count(topics, names["out"], 3), timeout=60, message="the retried outputs")
        assert app.resets >= 2
    assert sorted(await _outputs(topics, names["out"])) == [b"a:1", b"a:2", b"a:3"]
    assert Counter.failures_left == 0


async def _count(bootstrap: str, topic: str, expected: int) -> bool:
    values = await _outputs(bootstrap, topic)
    assert len(values) <= expected, f"more outputs than inputs: {len(values)} > {expected}"
    return len(values) == expected


async def test_offsets_move_past_an_aborted_transaction_at_the_tail(
    topics: str, names: dict[str, str]
) -> None:
    """Records of an aborted transaction are never handed over, yet the group must not lag behind them."""
    group = f"k2-test-stream-{uuid.uuid4().hex[:6]}"
    tp = TopicPartition(names["in"], 0)
    await produce(topics, names["in"], [(b"a", b"x", None)])
    aborted = AIOKafkaProducer(bootstrap_servers=topics, transactional_id=f"{group}-aborting")
    await aborted.start()
    try:
        await aborted.begin_transaction()
        for _ in range(3):
            await aborted.send_and_wait(names["in"], b"never", key=b"a", partition=0)
        await aborted.abort_transaction()
    finally:
        await aborted.stop()

    async def caught_up() -> bool:
        # the end is read each time: the abort marker is written after abort_transaction returns
        end = (await end_offsets(topics, names["in"]))[0]
        return (await committed_offsets(topics, group)).get((tp.topic, tp.partition)) == end

    async with running(topics, names, group):
        await wait_for(caught_up, timeout=60, message="the committed offset to pass the abort marker")
    assert await _outputs(topics, names["out"]) == [b"a:1"]


async def test_a_transaction_sent_behind_a_failed_commit_never_commits(
    topics: str, names: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two transactions in flight per partition: the second is sent while the first commits, and
    commits only after it. Here the first commit fails (after the second was sent): the second must
    not commit either, or the reset (which restarts from the state before both) would publish its
    outputs twice."""
    group = f"k2-test-stream-{uuid.uuid4().hex[:6]}"
    begin, commit = AIOKafkaProducer.begin_transaction, AIOKafkaProducer.commit_transaction
    begun: list[str] = []
    seen: dict[str, bool] = {}
    first_commit, second_begun = asyncio.Event(), asyncio.Event()

    async def begin_transaction(self: AIOKafkaProducer) -> None:
        await begin(self)
        begun.append(self._txn_manager.transactional_id)
        if len(begun) >= 2:
            second_begun.set()

    async def failing_first_commit(self: AIOKafkaProducer) -> None:
        if first_commit.is_set():
            return await commit(self)
        first_commit.set()
        # hold the commit until the partition's next transaction has begun, then fail it
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(second_begun.wait(), 30)
        seen["overlapped"] = second_begun.is_set()
        raise KafkaError("injected: the first commit failed")

    monkeypatch.setattr(AIOKafkaProducer, "begin_transaction", begin_transaction)
    monkeypatch.setattr(AIOKafkaProducer, "commit_transaction", failing_first_commit)
    async with running(topics, names, group) as app:
        await produce(topics, names["in"], [(b"a", b"x", None)] * 3)
        await first_commit.wait()
        await produce(topics, names["in"], [(b"a", b"y", None)] * 3)
        await wait_for(
            lambda: _count(topics, names["out"], 6), timeout=60, message="the outputs after the reset"
        )
        assert app.resets >= 1
    assert seen["overlapped"], "the second transaction did not begin while the first was committing"
    assert begun[0] != begun[1], "the two transactions in flight must use different producers"
    assert sorted(await _outputs(topics, names["out"])) == [f"a:{n}".encode() for n in range(1, 7)]


async def test_taking_a_partition_over_fences_a_stale_owner_on_a_lower_partitions_ids(
    topics: str, names: dict[str, str]
) -> None:
    """A worker's producers use the transactional ids of its lowest partition, so whoever wrote
    partition 1 before may have used partition 0's ids. A stale owner of both (here: a producer on
    partition 0's id, with an open transaction) must be fenced by the worker that takes partition 1
    alone, before that worker reads the partition's state: its open transaction never commits."""
    group = f"k2-test-stream-{uuid.uuid4().hex[:6]}"
    stale = AIOKafkaProducer(bootstrap_servers=topics, transactional_id=f"{group}-{names['in']}-0")
    await stale.start()
    # the group's other member takes partition 0 and does nothing: round-robin over the sorted member
    # ids gives "a-…" the first partition and the app ("k2-test-…") the second
    holder = AIOKafkaConsumer(names["in"], bootstrap_servers=topics, group_id=group, client_id="a-holder")
    await holder.start()
    try:
        await stale.begin_transaction()
        await stale.send_and_wait(names["out"], b"stale", key=b"stale", partition=0)
        await wait_for(lambda: bool(holder.assignment()), timeout=30, message="the holder's assignment")
        async with running(topics, names, group) as app:
            await wait_for(
                lambda: {tp.partition for tp, _ in app.processors()} == {1},
                timeout=60,
                message="the app owning partition 1 alone",
            )
            await produce(topics, names["in"], [(f"k{i}".encode(), b"x", None) for i in range(8)])
            await wait_for(lambda: _some(topics, names["out"]), timeout=60, message="the app's first outputs")
            with pytest.raises(KafkaError):
                await asyncio.wait_for(stale.commit_transaction(), 30)
        assert b"stale" not in await _outputs(topics, names["out"])
    finally:
        await holder.stop()
        with contextlib.suppress(Exception):
            await stale.stop()


async def _some(bootstrap: str, topic: str) -> bool:
    return bool(await _outputs(bootstrap, topic))
