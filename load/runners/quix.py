"""quixstreams: the benchmark job as a quixstreams user writes it.

The topic's JSON values are decoded by quixstreams, the event time comes from ``ts``
(a ``timestamp_extractor``), identifiers are dropped or hashed (:func:`common.scrub`), the
stream is re-keyed by cell with ``group_by`` (quixstreams windows are per message key and
the raw events carry none; this goes through a ``repartition__`` topic, as in any
quixstreams aggregation by a field), and ``tumbling_window(1 h).count().final()`` counts
per cell with RocksDB state (and its changelog topic, the defaults) in a temporary state
dir.  The application stops itself (``app.stop()``) once ``--events`` events have reached
the windowed count.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from quixstreams import Application
from quixstreams.models import TimestampType

from .common import event_time_ms, parse_args, report, scrub


def run(bootstrap: str, topic_name: str, group: str, target: int, state_dir: str) -> dict[str, Any]:
    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        state_dir=state_dir,
        loglevel="WARNING",
    )

    def event_time(value: Any, headers: Any, timestamp: float, kind: TimestampType) -> int:
        return event_time_ms(value["ts"])

    topic = app.topic(topic_name, value_deserializer="json", timestamp_extractor=event_time)
    progress: dict[str, Any] = {"first": None, "seen": 0}

    def first_seen(row: dict[str, Any]) -> None:
        if progress["first"] is None:
            progress["first"] = time.time()

    def count_in(row: dict[str, Any]) -> None:
        progress["seen"] += 1
        if progress["seen"] == target:
            app.stop()  # the current message still goes through the window

    sdf = app.dataframe(topic)
    sdf = sdf.update(first_seen)
    sdf = sdf.apply(scrub)
    sdf = sdf.group_by(lambda row: row["cell"], name="cell")
    sdf = sdf.update(count_in)
    sdf = sdf.tumbling_window(timedelta(hours=1), grace_ms=timedelta(minutes=2)).count().final()
    app.run()
    return progress


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args("anonstream_load.runners.quix", argv)
    logging.basicConfig(level=logging.WARNING)
    state_dir = tempfile.mkdtemp(prefix="anonstream-quix-")
    try:
        progress = run(args.bootstrap, args.topic, args.group, args.events, state_dir)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    report("quixstreams", progress["seen"], progress["first"], expected=args.events)
    return 0 if progress["seen"] == args.events else 1


if __name__ == "__main__":
    raise SystemExit(main())
