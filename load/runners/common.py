"""What the peer runners share: the job's per-event functions, the command line and the
final report line.

The job (the same for every peer): decode the JSON event, drop the direct identifiers,
replace ``visitor_id`` / ``user_email`` by a SHA-256 of their value, reduce the event to a
cell ``type|url path|browser family`` and count events per cell in hourly event-time
windows.  It is deliberately the straightforward version a user of each library writes;
it is *not* anonstream's policy (no k-anonymity, no contribution bounds, no keyed hash).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

__all__ = [
    "DROPPED_FIELDS",
    "HASHED_FIELDS",
    "PROCESS_START",
    "browser_family",
    "cell_of",
    "event_time_ms",
    "parse_args",
    "report",
    "scrub",
    "vm_hwm_kib",
]

#: Wall-clock time at which this module was first imported (close to process start).
PROCESS_START: Final = time.time()

#: Identifiers a user would simply remove before counting.
DROPPED_FIELDS: Final = ("customer_id", "reseller_id", "ip", "referrer")
#: Identifiers a user would replace by a hash of their value.
HASHED_FIELDS: Final = ("visitor_id", "user_email")


def event_time_ms(ts: object) -> int:
    """Event time of a ``ts`` field (epoch ms, or an RFC 3339 string) in epoch ms."""
    if isinstance(ts, int | float):
        return int(ts)
    if isinstance(ts, str):
        return int(datetime.fromisoformat(ts).timestamp() * 1000)
    raise ValueError(f"unusable ts {ts!r}")


def browser_family(user_agent: str) -> str:
    """A crude browser family from a User-Agent string (order matters: Edge says Chrome)."""
    if "Edg/" in user_agent:
        return "Edge"
    if "Firefox/" in user_agent:
        return "Firefox"
    if "Chrome/" in user_agent:
        return "Chrome"
    if "Safari/" in user_agent:
        return "Safari"
    return "Other"


def cell_of(event: dict[str, Any]) -> str:
    """``type|path|browser``: the URL without its query string, a crude UA family."""
    url = str(event.get("url", ""))
    path = url.split("?", 1)[0]
    return f"{event.get('type')}|{path}|{browser_family(str(event.get('user_agent', '')))}"


def scrub(event: dict[str, Any]) -> dict[str, Any]:
    """A new dict: identifiers dropped or hashed, plus its ``cell``."""
    row = {k: v for k, v in event.items() if k not in DROPPED_FIELDS}
    for name in HASHED_FIELDS:
        value = row.get(name)
        if value is not None:
            row[name] = hashlib.sha256(str(value).encode()).hexdigest()
    row["cell"] = cell_of(row)
    return row


def parse_args(prog: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=sys.modules["__main__"].__doc__)
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    p.add_argument("--topic", required=True, help="topic to consume from its start")
    p.add_argument("--events", type=int, required=True, help="events in the topic (stop at N)")
    p.add_argument("--group", required=True, help="a fresh consumer group / application id")
    p.add_argument(
        "--partitions", type=int, default=0, help="partitions of the topic (0: ask the broker)"
    )
    args = p.parse_args(argv)
    if args.events < 1:
        p.error("--events must be >= 1")
    return args


def vm_hwm_kib() -> int | None:
    """Peak resident set size of this process (``VmHWM``, Linux), in KiB."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def report(runner: str, count: int, first_event: float | None, **extra: Any) -> None:
    """Write the one JSON result line to stdout, unbuffered (callers may ``os._exit``).

    ``t_*`` are wall-clock epoch seconds; ``vm_hwm_kib`` is the exact peak RSS of this
    process; ``ru_maxrss_kib`` may include the parent's RSS at spawn time (vfork + exec
    carries the old address space's high-water mark), so prefer ``vm_hwm_kib``.
    """
    now = time.time()
    line = {
        "runner": runner,
        "count": count,
        "t_start": PROCESS_START,
        "t_first_event": first_event,
        "t_end": now,
        "processing_seconds": None if first_event is None else now - first_event,
        "vm_hwm_kib": vm_hwm_kib(),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "pid": os.getpid(),
        **extra,
    }
    # Straight to file descriptor 1: some frameworks (Faust) redirect sys.stdout to logging.
    sys.stdout.flush()
    os.write(1, ("\n" + json.dumps(line) + "\n").encode())


def run_faust_app(build: Callable[[str], Any], prefix: str) -> int:
    """Run the Faust app that ``build(datadir)`` makes, in a scratch data directory, until
    its agent leaves the process after the last event; returning here means it stopped
    without having seen every event."""
    import faust  # here, not at the top: the other runners do not pay for the import

    datadir = tempfile.mkdtemp(prefix=prefix)
    app = build(datadir)
    logging.getLogger("faust").setLevel(logging.WARNING)
    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    finally:
        shutil.rmtree(datadir, ignore_errors=True)
    return 1
