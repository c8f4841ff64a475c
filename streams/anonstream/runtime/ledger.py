"""The privacy ledger of a Kafka worker: a compacted topic written in the release transaction.

Each charge (core/budget.py) becomes one record, keyed by pipeline, output, window and
charge number, on `anon.ledger.<group>`. The batch loop sends the charges of a step in the
same transaction as its releases and offsets: either the window's records and its charge
are both committed, or neither is (an aborted step is charged again when it is redone).
At start the worker reads the topic with read_committed, so a restart, a rebalance or a
new worker of the group continues the spending instead of starting again at 0. The topic
holds no data about people: names, window bounds and losses only.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from anonstream.core.budget import Charge
from anonstream.runtime.topic_end import read_to_end

COMPACTED = {"cleanup.policy": "compact"}


def ledger_topic(group_id: str) -> str:
    return f"anon.ledger.{group_id}"


class KafkaLedgerStore:
    """A `LedgerStore` whose appends wait for the loop's transaction (see `drain`)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self._committed: list[Charge] = []
        self._sent: list[Charge] = []  # in the open transaction
        self._pending: list[Charge] = []  # not yet handed to the producer

    # -- LedgerStore -------------------------------------------------------------------
    def load(self) -> list[Charge]:
        """The committed charges: engines are (re)built only after an abort or at start."""
        return list(self._committed)

    def append(self, charge: Charge) -> None:
        self._pending.append(charge)

    # -- the batch loop's side ---------------------------------------------------------
    def drain(self) -> list[tuple[bytes, bytes]]:
        """(key, value) records of the new charges, to send in the open transaction."""
        out = []
        for c in self._pending:
            n = sum(
                1
                for o in (*self._committed, *self._sent)
                if (o.pipeline, o.output, o.start_ms) == (c.pipeline, c.output, c.start_ms)
            )
            key = f"{c.pipeline}/{c.output}/{c.start_ms}/{n}".encode()
            out.append((key, json.dumps(asdict(c), sort_keys=True).encode()))
            self._sent.append(c)
        self._pending = []
        return out

    def committed(self) -> None:
        """The transaction that carried the sent charges is committed."""
        self._committed += self._sent
        self._sent = []

    def abort(self) -> None:
        """The open transaction is aborted: its charges never happened."""
        self._sent, self._pending = [], []

    async def read(self, bootstrap: str, client_options: dict[str, Any]) -> None:
        """Every committed charge on the topic, from its beginning to its current end."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            isolation_level="read_committed", client_id="anonstream-ledger", **client_options,
        )  # fmt: skip
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, 0)]  # created with one partition (run.py)
            charges: list[Charge] = []
            async for _, msgs in read_to_end(consumer, tps, poll_ms=1000):
                for m in msgs:
                    try:
                        charges.append(Charge(**json.loads(m.value)))
                    except (ValueError, TypeError) as exc:
                        # A damaged ledger must stop the worker, never reset spending.
                        raise ValueError(
                            f"{self.topic}: offset {m.offset}: not a ledger charge"
                        ) from exc
        finally:
            await consumer.stop()
        self._committed = charges
