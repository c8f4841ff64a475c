"""Start-up pieces without a broker: the cluster check's one-line reasons, the deadlines'
bookkeeping, the late-batch warning."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from anonstream.broker.local import free_ports
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import load_pipeline
from anonstream.metrics import Metrics
from anonstream.runtime.batch import BatchLoop
from anonstream.runtime.startup import Deadlines, StartupError, check_cluster, one_line
from anonstream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_unreachable_cluster_is_one_line_after_the_timeout() -> None:
    (port,) = free_ports(1)  # closed again once found: nothing listens there
    settings = Settings(bootstrap_servers=f"127.0.0.1:{port}", startup_timeout_seconds=1.0)
    t0 = time.monotonic()
    with pytest.raises(StartupError) as info:
        asyncio.run(check_cluster(settings, ["raw.web-activity"]))
    assert time.monotonic() - t0 >= 1.0  # it retried until the timeout, not once
    message = str(info.value)
    assert message.startswith("no Kafka broker reachable within 1 s")
    assert f"127.0.0.1:{port}: cannot connect" in message
    assert "\n" not in message


@pytest.mark.parametrize("bootstrap", ["broker", "broker:port", ":9092"])
def test_bad_bootstrap_is_named(bootstrap: str) -> None:
    with pytest.raises(StartupError, match="bad bootstrap server"):
        asyncio.run(check_cluster(Settings(bootstrap_servers=bootstrap), []))


def test_one_line() -> None:
    assert one_line(ValueError("a\n  b")) == "ValueError: a b"
    assert one_line(TimeoutError()) == "TimeoutError"


def test_deadlines_pause_and_resume_the_start_up_clock() -> None:
    d = Deadlines(startup_s=1000.0, stop_s=1000.0)
    d.phase("connecting")
    first = d._start_deadline
    assert first is not None
    d.phase("joining")  # a new phase does not extend the bound
    assert d._start_deadline == first
    d.pause()  # waiting for topics the operator was told about
    assert d._start_deadline is None
    d.phase("joining the consumer group")  # afresh after a pause
    assert d._start_deadline is not None
    d.started()
    assert d._start_deadline is None and not d.is_stopping
    d.stopping(1)
    d.stopping(0)  # a later clean stop does not hide the failure
    assert d.is_stopping and d._stop_code == 1


def test_mostly_late_batch_warns_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    pipes = [load_pipeline(ROOT / "pipelines" / "web_activity.yaml")]
    secret = load_secret({"ANONSTREAM_SECRET": "unit-test-secret-0123456789"})
    loop = BatchLoop(Settings(), pipes, secret, Metrics())
    with caplog.at_level(logging.WARNING, logger="anonstream.worker"):
        loop._warn_if_late("web_activity", 40, 100)  # under half: nothing
        loop._warn_if_late("web_activity", 90, 100)
        loop._warn_if_late("web_activity", 100, 100)  # within the minute: nothing
        loop._warn_if_late("service_usage", 5, 5)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("web_activity: 90 of 100 events in a batch came after their")
    assert lines[1].startswith("service_usage: 5 of 5 events")


def test_host_tracebacks_become_one_line() -> None:
    """Faust logs a failed start with log.exception and %-style args: the filter keeps the
    message formattable and drops the traceback for the error's one line."""
    from anonstream.runtime.worker import _OneLine

    try:
        raise PermissionError("Cannot create topic: t (29): 100% denied")
    except PermissionError:
        import sys

        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "anonstream.runtime.worker", logging.ERROR, __file__, 1, "[^_Host]: Error: %r",
        (exc_info[1],), exc_info,
    )  # fmt: skip
    assert _OneLine().filter(record)
    text = logging.Formatter("%(message)s").format(record)
    assert "Traceback" not in text and "\n" not in text
    assert text.startswith("[^_Host]: Error: PermissionError('Cannot create topic: t (29): 100%")
    assert text.endswith("(PermissionError: Cannot create topic: t (29): 100% denied)")
