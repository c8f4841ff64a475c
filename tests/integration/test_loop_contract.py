"""The batch loop's contract (tests/contract/suite.py) against the real broker: the same
suite the unit tier runs against the in-memory one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.contract.backends import KafkaBackend
from tests.contract.suite import LoopContract

pytestmark = pytest.mark.integration


class TestKafka(LoopContract):
    @pytest.fixture
    def backend(self, kafka_bootstrap: str) -> Iterator[KafkaBackend]:
        b = KafkaBackend(kafka_bootstrap)
        yield b
        asyncio.run(b.close())
