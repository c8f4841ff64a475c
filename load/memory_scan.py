"""How open-window state grows: with distinct (person, cell) pairs, not with events.

Not a test and no Kafka: the engine alone, in this process. Each run feeds the shipped
web-activity pipeline synthetic events that all fall into one open window, then reports
the window's state before release: distinct (person, cell) pairs, rows kept (at most L per
pair, the contribution bound), bytes, and bytes per pair and per event. Runs vary the
number of events with the people fixed, and the number of people with the events fixed.

    python -m anonstream_load.memory_scan
    python -m anonstream_load.memory_scan --events 250000,500000,1000000 --users 25000
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import load_pipeline
from anonstream.core.step import Batch
from anonstream.synthetic import EventGenerator, Workload

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "web_activity.yaml"
BATCH = 5000
HOUR_S = 3600


def measure(users: int, events: int, seed: int = 7, progress: Any = None) -> dict[str, Any]:
    """Feed `events` events of `users` people, all inside one window, and measure it."""
    pipeline = load_pipeline(PIPELINE)
    secret = load_secret({"ANONSTREAM_SECRET": "memory-scan-" + "x" * 20})
    # All event times inside the first 55 minutes of one hour: one window, never closed.
    rate = events / (55 * 60)
    gen = EventGenerator(Workload(users=users, seed=seed, events_per_second_of_event_time=rate))
    start_ms = gen.workload.start_ms
    engine = PipelineEngine(pipeline, secret, clock_ms=lambda: start_ms + HOUR_S * 1000 // 2)
    engine.assign([0])
    values = gen.encoded_web_events(events)
    task = progress.add_task(f"{users:,} people", total=events) if progress else None
    done = 0
    while done < events:
        chunk = [v for _, v in zip(range(BATCH), values, strict=False)]
        if not chunk:
            break
        n = len(chunk)
        offs = np.arange(done, done + n, dtype=np.int64)
        engine.process_batch(Batch(chunk, np.zeros(n, dtype=np.int64), [0], offs))
        done += n
        if progress is not None:
            progress.update(task, completed=done)
    windows = list(engine.windows.values())
    rows_kept = pairs = 0
    for w in windows:
        rows = w.compact()
        rows_kept += len(rows)
        if len(rows):
            key = np.stack([rows.unit, rows.cell], axis=1)
            pairs += len(np.unique(key, axis=0))
    state = engine.state_bytes()
    return {
        "users": users,
        "events": done,
        "open_windows": len(windows),
        "pairs": pairs,
        "rows_kept": rows_kept,
        "state_bytes": state,
        "bytes_per_pair": round(state / pairs, 1) if pairs else None,
        "bytes_per_event": round(state / done, 1) if done else None,
    }


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", default="25000", help="people when the events vary")
    ap.add_argument("--events", default="250000,500000,1000000", help="comma-separated")
    ap.add_argument("--scan-users", default="12500,25000,50000,100000", help="comma-separated")
    ap.add_argument("--scan-events", type=int, default=500_000, help="events when people vary")
    args = ap.parse_args(argv)
    console = Console(stderr=True)
    configs = [(int(args.users), e) for e in _ints(args.events)]
    configs += [(u, args.scan_events) for u in _ints(args.scan_users)]
    results = []
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console,
    )  # fmt: skip
    t0 = time.monotonic()
    with progress:
        for users, events in configs:
            results.append(measure(users, events, progress=progress))
    table = Table(title="open-window state (one window, before release)")
    for col in ("people", "events", "pairs", "rows kept", "state MiB", "B/pair", "B/event"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            f"{r['users']:,}", f"{r['events']:,}", f"{r['pairs']:,}", f"{r['rows_kept']:,}",
            f"{r['state_bytes'] / 2**20:.1f}", str(r["bytes_per_pair"]), str(r["bytes_per_event"]),
        )  # fmt: skip
    Console().print(table)
    print(json.dumps({"memory_scan": results, "seconds": round(time.monotonic() - t0, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
