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
from hypothesis import HealthCheck, settings

from anonstream.broker.local import LocalKafka

# Results never depend on speed: a property test that is slow on a busy machine is still a
# pass. Hypothesis's per-example deadline and its too-slow health check would turn load into
# failures, so the project's profile has neither (tests that set their own settings inherit
# this profile for whatever they leave out).
settings.register_profile("anonstream", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("anonstream")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    reuse = os.environ.get("ANONSTREAM_TEST_BOOTSTRAP")
    if reuse:
        yield reuse
        return
    # die_with_parent: if pytest itself is killed, the kernel SIGTERMs the broker.
    with LocalKafka(die_with_parent=True) as kafka:
        yield kafka.bootstrap_servers
