"""Why the Kubernetes manifests use a StatefulSet and not a Deployment with a surge pod
(docs/operations.md#upgrades): a second single-mode worker in the group splits the
partitions, and a worker left with part of them exits with code 1 instead of checking k on
part of the people."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest

from anonstream.testing import WorkerProcess
from tests.integration.helpers import isolated_pipelines, start_worker

pytestmark = pytest.mark.integration


def test_a_surge_worker_in_the_group_makes_a_single_mode_worker_exit(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    setup = isolated_pipelines(tmp_path, kafka_bootstrap, partitions=4)
    old = start_worker(setup, kafka_bootstrap, tmp_path, instance_id="anonstream-0")
    workers: list[WorkerProcess] = [old]

    def refused() -> str:
        logs = [p.read_text(errors="replace") for p in sorted(tmp_path.glob("worker-*.log"))]
        return "".join(log for log in logs if "partitions of raw." in log)

    try:
        # The surge pod of a rolling update: same group, its own pod name.
        # (If it stops before it is ever healthy, start_worker raises: also the behaviour
        # under test.)
        with contextlib.suppress(RuntimeError):
            workers.append(
                start_worker(setup, kafka_bootstrap, tmp_path, instance_id="anonstream-7f9c")
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not refused():
            time.sleep(0.5)
    finally:
        codes = [w.stop() for w in workers]
    # How fast the process then exits is the start-up and shutdown tests' business; here:
    # it stops consuming, with the reason and the way out.
    assert "this worker owns 2 of 4 partitions of raw." in refused(), codes
    assert "set ANONSTREAM_SCALE_OUT=true on all" in refused()
