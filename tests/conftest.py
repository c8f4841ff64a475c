"""Shared fixtures.

``kafka_bootstrap`` starts ONE real Kafka broker (``anonstream.broker.local.LocalKafka``) for
the whole test session and stops it at the end. If the broker cannot start, the fixture
raises, so the tests that need it fail (they are never skipped).

Developers can reuse a broker that is already running (e.g. ``anonstream kafka up``) by
setting ``ANONSTREAM_TEST_BOOTSTRAP=host:port``; then no broker is started or stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from anonstream.broker.local import LocalKafka


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    reuse = os.environ.get("ANONSTREAM_TEST_BOOTSTRAP")
    if reuse:
        yield reuse
        return
    # die_with_parent: if pytest itself is killed, the kernel SIGTERMs the broker.
    with LocalKafka(die_with_parent=True) as kafka:
        yield kafka.bootstrap_servers
