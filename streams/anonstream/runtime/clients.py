"""The Kafka surface the batch loop uses, and the real clients behind it.

The loop (runtime/batch.py) talks to one consumer and one transactional producer through
the methods named in `Consumer` and `Producer`, and makes them with a `Clients`. The real
`KafkaClients` makes aiokafka's, with the reading shortcuts and private-state readers of
runtime/kafka_compat.py; the in-memory broker (anonstream/memory_broker.py) makes its own,
so the loop's contract (rebalance, abort, producer replacement, restore) is tested in
milliseconds, and the same contract suite runs against the real broker
(tests/contract/).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from anonstream.runtime.kafka_compat import (
    committed_with_metadata,
    leave_group_on_stop,
    raw_records,
)
from anonstream.runtime.kafka_compat import install as install_raw_records
from anonstream.runtime.quiet import FetchState, fetch_state
from anonstream.settings import Settings


class Consumer(Protocol):
    """What the loop asks of its consumer (aiokafka's names and meanings)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def topics(self) -> set[str]: ...
    def subscribe(self, topics: list[str], *, listener: Any) -> None: ...
    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[Any]]: ...
    def partitions_for_topic(self, topic: str) -> set[int] | None: ...
    def assignment(self) -> set[TopicPartition]: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    async def seek_to_beginning(self, *partitions: TopicPartition) -> Any: ...
    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...
    async def position(self, partition: TopicPartition) -> int: ...


class Producer(Protocol):
    """What the loop asks of its transactional producer (aiokafka's names and meanings)."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def begin_transaction(self) -> None: ...
    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]: ...
    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, OffsetAndMetadata], group_id: str
    ) -> None: ...
    async def commit_transaction(self) -> None: ...
    async def abort_transaction(self) -> None: ...


class Clients(Protocol):
    """Makes the loop's clients and reads what their public API does not say."""

    def consumer(self, settings: Settings) -> Consumer: ...
    def producer(self, settings: Settings, transactional_id: str) -> Producer: ...
    async def committed(
        self, consumer: Consumer, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """The committed offsets of `partitions` with their metadata (checkpoints)."""
        ...

    def fetch_state(self, consumer: Consumer, partition: TopicPartition) -> FetchState:
        """Position, high watermark and when it was fetched, without waiting."""
        ...

    def install_fast_fetch(self) -> bool:
        """Switch to the fast record reader; False if it fell back to the slow one."""
        ...

    def leave_on_stop(self, consumer: Consumer) -> None:
        """A stopped consumer leaves its group at once, even as a static member."""
        ...


class Rebalance(ConsumerRebalanceListener):
    """A consumer's rebalance, handed to the loop's callbacks (the in-memory broker calls
    the same two methods)."""

    def __init__(
        self,
        revoked: Callable[[list[TopicPartition]], Awaitable[None]],
        assigned: Callable[[list[TopicPartition]], Awaitable[None]],
    ) -> None:
        self.revoked, self.assigned = revoked, assigned

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.assigned(list(assigned))


class KafkaClients:
    """aiokafka's clients, as the worker runs them."""

    def consumer(self, settings: Settings) -> Consumer:
        s = settings
        consumer: Consumer = AIOKafkaConsumer(
            bootstrap_servers=s.bootstrap_servers, group_id=s.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed",  # never count an upstream aborted write
            max_poll_records=s.batch_max, fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024, client_id=f"anonstream-{s.group_id}",
            value_deserializer=raw_records,  # offset and value only: see kafka_compat.py
            group_instance_id=s.instance_id if s.static_membership else None,  # see Settings
            **s.kafka_client_options(),
        )  # fmt: skip
        return consumer

    def producer(self, settings: Settings, transactional_id: str) -> Producer:
        s = settings
        producer: Producer = AIOKafkaProducer(
            bootstrap_servers=s.bootstrap_servers, transactional_id=transactional_id,
            enable_idempotence=True, linger_ms=5, max_batch_size=512 * 1024,
            max_request_size=4 * 1024 * 1024, **s.kafka_client_options(),
        )  # fmt: skip
        return producer

    async def committed(
        self, consumer: Consumer, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        return await committed_with_metadata(consumer, partitions)

    def fetch_state(self, consumer: Consumer, partition: TopicPartition) -> FetchState:
        return fetch_state(consumer, partition)

    def install_fast_fetch(self) -> bool:
        return install_raw_records()

    def leave_on_stop(self, consumer: Consumer) -> None:
        leave_group_on_stop(consumer)
