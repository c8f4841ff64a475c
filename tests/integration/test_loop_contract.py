"""The batch loop's contract (tests/contract/suite.py) against the real broker: the same
suite the unit tier runs against the in-memory one."""

from __future__ import annotations

import pytest

from tests.contract.backends import KafkaBackend
from tests.contract.suite import LoopContract

pytestmark = pytest.mark.integration


class TestKafka(LoopContract):
    @pytest.fixture
    def backend(self, kafka_bootstrap: str) -> KafkaBackend:
        return KafkaBackend(kafka_bootstrap)
