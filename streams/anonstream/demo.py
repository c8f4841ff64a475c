"""`make demo`: a real broker, a real worker, a burst of synthetic events, and the
released aggregates printed as readable tables. Stops everything it started."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from anonstream.broker.local import LocalKafka
from anonstream.broker.topics import create_topics
from anonstream.core.decode import parse_ts
from anonstream.core.pipeline import Pipeline, load_pipeline
from anonstream.core.windows import window_starts
from anonstream.testing import WorkerProcess, read_releases, summaries_complete

console = Console(width=None if Console().is_terminal else 150)
TOP_ROWS = 12  # per window: the demo shows the largest cells, the topic has them all


def _table(
    pipeline: str, window: str, aggs: list[dict[str, Any]], summary: dict[str, Any]
) -> Table:
    t = Table(
        title=f"{pipeline}  window {window}  (k={summary['k']}: {summary['cells_released']} "
        f"released, {summary['cells_rolled_up']} cells rolled up, "
        f"{summary['cells_suppressed']} suppressed)",
        title_justify="left",
    )
    dims = list(aggs[0]["dims"]) if aggs else []
    for d in dims:
        t.add_column(d, overflow="fold", max_width=38)
    metric_names = [m for m in (aggs[0]["metrics"] if aggs else {}) if not m.endswith("histogram")]
    for m in metric_names:
        t.add_column(m, justify="right")
    ranked = sorted(aggs, key=lambda a: (-a["metrics"]["users"], a["rollup_level"]))
    for a in ranked[:TOP_ROWS]:
        values = [a["metrics"][m] for m in metric_names]
        t.add_row(
            *[str(a["dims"][d]) for d in dims],
            *["withheld" if v is None else f"{v:,}" for v in values],
        )
    if len(ranked) > TOP_ROWS:
        t.caption = f"... and {len(ranked) - TOP_ROWS} more cells on the output topic"
    return t


def run_demo(*, events: int, users: int, pipelines_dir: Path) -> int:
    from anonstream.synthetic import EventGenerator, Workload
    from anonstream.synthetic.produce import produce

    pipelines = [
        load_pipeline(pipelines_dir / f"{n}.yaml") for n in ("web_activity", "service_usage")
    ]
    by_topic: dict[str, Pipeline] = {p.source_topic: p for p in pipelines}
    span_s = 3 * 3600  # three hours of event time, so several windows close
    gen = EventGenerator(
        Workload(users=users, events_per_second_of_event_time=events / span_s, seed=11)
    )
    batch = list(gen.mixed(events))
    expected: dict[str, set[int]] = defaultdict(set)
    for topic, ev in batch:
        p = by_topic[topic]
        ts = parse_ts(ev["ts"])
        if ts is not None:
            expected[p.name].update(window_starts(p.window, ts))
    console.rule("[bold]anonstream demo")
    console.print("starting a local Apache Kafka broker (KRaft, 127.0.0.1) ...")
    t0 = time.monotonic()
    with LocalKafka() as kafka:
        bootstrap = kafka.bootstrap_servers
        console.print(f"broker ready at {bootstrap} in {time.monotonic() - t0:.1f} s")
        create_topics(bootstrap, {p.source_topic: 4 for p in pipelines})
        worker = WorkerProcess(bootstrap, pipelines_dir=pipelines_dir, demo=True,
                               idle_close_seconds=3.0, group_id="anonstream-demo")  # fmt: skip
        console.print("starting the worker (demo mode: throwaway key) ...")
        worker.start()
        try:
            console.print(
                f"worker up; metrics at {worker.url}/metrics, health at {worker.url}/health"
            )
            console.print(f"producing {events:,} synthetic events of {users} fake people ...")
            asyncio.run(produce(bootstrap, batch))
            aggs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)

            def show(rec: dict[str, Any]) -> None:
                key = (rec["pipeline"], rec["window_start"])
                if rec["kind"] == "aggregate":
                    aggs[key].append(rec)
                else:
                    console.print(_table(rec["pipeline"], rec["window_start"], aggs[key], rec))

            want = {name: len(starts) for name, starts in expected.items()}
            records = asyncio.run(read_releases(
                bootstrap, [o.topic for p in pipelines for o in p.outputs],
                until=summaries_complete(want), timeout=180, on_record=show,
            ))  # fmt: skip
            metrics = worker.get("/metrics").decode()
            n_agg = sum(r["kind"] == "aggregate" for r in records)
            console.rule("[bold]done")
            console.print(f"{n_agg} aggregates released over {sum(want.values())} windows.")
            for line in metrics.splitlines():
                if line.startswith(
                    ("anonstream_events_in", "anonstream_events_rejected", "anonstream_cells_")
                ) and not line.startswith("#"):
                    console.print(f"  {line}")
            console.print(
                "Where to look next:\n"
                f"  metrics  {worker.url}/metrics and health {worker.url}/health "
                "(served by every `anonstream worker`, port ANONSTREAM_WEB_PORT)\n"
                "  dashboard  `anonstream dashboard` charts the latest releases at "
                "http://127.0.0.1:8050/\n"
                "  `anonstream explain -p web_activity` says what each field becomes;\n"
                "  `anonstream replay` runs a pipeline on a file; `anonstream audit` re-checks "
                "releases; see README.md."
            )
        finally:
            worker.stop()
    console.print("stopped the worker and the broker.")
    return 0
