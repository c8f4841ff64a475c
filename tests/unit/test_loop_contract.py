"""The batch loop's contract (tests/contract/suite.py) against the in-memory broker."""

from __future__ import annotations

import pytest

from tests.contract.backends import MemoryBackend
from tests.contract.suite import LoopContract


class TestMemoryBroker(LoopContract):
    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend()
