"""A small read-only web dashboard of released aggregates, read from the output topics.

It reads every given output topic from its beginning (no consumer group, read_committed,
as the output contract asks), keeps per (pipeline, output) the last few windows, and serves:

- ``GET /``: one HTML page (inline CSS and JS, no external assets) that polls the API and
  draws the latest complete window of each pipeline output as charts and a table;
- ``GET /api/latest``: that view as JSON;
- ``GET /health``: ``{"status": "ok", "records": <records read>}``.

A window is complete once its ``window_summary`` arrived. Records are deduplicated by
``release_id`` (the first one wins, as the contract asks), and memory is bounded: a few
complete windows per output, a few windows still waiting for their summary, and a cap
on cells per window. ``"*"`` cells are "the rest" and no totals are computed except the
sum of events over released cells, labelled as such.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from anonstream.dashboard_page import PAGE_CSS, PAGE_JS, render_page

__all__ = ["Dashboard", "run_dashboard", "serve_dashboard"]

log = logging.getLogger(__name__)

KNOWN_SCHEMA_VERSIONS = frozenset({1})
MAX_WINDOWS = 12  # complete windows kept per (pipeline, output): the history chart
MAX_PENDING = 6  # windows still waiting for their summary, per (pipeline, output)
MAX_CELLS = 20_000  # cells kept per window; more are counted, not kept
TOP_CELLS = 10  # bars per chart
TABLE_CELLS = 300  # rows of the cell table sent to the page
TOPIC_RECHECK_SECONDS = 15.0  # how often missing topics are looked for again
RETRY_MAX_SECONDS = 30.0


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Nothing may be loaded from elsewhere: the page's own style and script (pinned by hash)
# and fetches to this server only.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; script-src {_csp_hash(PAGE_JS)}; style-src {_csp_hash(PAGE_CSS)}; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def _num(v: Any) -> float:
    """A metric as a number (ints stay ints, so sums of counts print as counts)."""
    return v if isinstance(v, int | float) and not isinstance(v, bool) else 0


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


@dataclass
class _Window:
    start: str
    end: str
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)  # release_id -> record
    summary: dict[str, Any] | None = None
    cells_dropped: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return (self.start, self.end)


@dataclass
class _Stream:
    """The windows of one (pipeline, output)."""

    pipeline: str
    output: str
    version: int | None = None
    windows: dict[tuple[str, str], _Window] = field(default_factory=dict)

    def complete(self) -> list[_Window]:
        return sorted((w for w in self.windows.values() if w.summary), key=lambda w: w.key)

    def pending(self) -> list[_Window]:
        return sorted((w for w in self.windows.values() if not w.summary), key=lambda w: w.key)


class Dashboard:
    """Consumes output topics in a background task and serves the latest windows over HTTP.

    ``add_record`` is the whole state update, so the view can also be fed without Kafka.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Sequence[str],
        *,
        client_options: dict[str, Any] | None = None,
        max_windows: int = MAX_WINDOWS,
    ) -> None:
        if not topics:
            raise ValueError("the dashboard needs at least one output topic")
        self.bootstrap = bootstrap
        self.topics = list(dict.fromkeys(topics))
        self.client_options = dict(client_options or {})
        self.max_windows = max(1, max_windows)
        self.records = 0  # messages read in the current pass over the topics
        self.skipped = 0  # not JSON, unknown kind or schema version, malformed
        self.duplicates = 0  # same release_id again (re-sends): the first one is kept
        self.connected = False
        self.error: str | None = None
        self.missing_topics: list[str] = []
        self._streams: dict[tuple[str, str], _Stream] = {}
        self._task: asyncio.Task[None] | None = None

    # ---- state -------------------------------------------------------------------------

    def reset(self) -> None:
        self.records = self.skipped = self.duplicates = 0
        self._streams.clear()

    def add_message(self, value: bytes | None) -> None:
        self.records += 1
        try:
            rec = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            rec = None
        if not isinstance(rec, dict) or not self.add_record(rec):
            self.skipped += 1

    def add_record(self, rec: dict[str, Any]) -> bool:
        """Take one release record; False if it is not one this dashboard can read."""
        kind = rec.get("kind")
        if kind not in ("aggregate", "window_summary"):
            return False
        if rec.get("schema_version") not in KNOWN_SCHEMA_VERSIONS:
            return False  # the contract: refuse versions we do not know
        pipeline, output = rec.get("pipeline"), rec.get("output")
        start, end, rid = rec.get("window_start"), rec.get("window_end"), rec.get("release_id")
        if not all(isinstance(x, str) and x for x in (pipeline, output, start, end, rid)):
            return False
        if kind == "aggregate" and not (
            isinstance(rec.get("dims"), dict) and isinstance(rec.get("metrics"), dict)
        ):
            return False
        assert isinstance(pipeline, str) and isinstance(output, str)
        assert isinstance(start, str) and isinstance(end, str) and isinstance(rid, str)
        stream = self._streams.get((pipeline, output))
        if stream is None:
            stream = self._streams[(pipeline, output)] = _Stream(pipeline, output)
        version = _int_or_none(rec.get("pipeline_version"))
        if version is not None and (stream.version is None or version > stream.version):
            stream.version = version
        window = stream.windows.get((start, end))
        if window is None:
            complete = stream.complete()
            if len(complete) >= self.max_windows and (start, end) < complete[0].key:
                self.duplicates += 1  # a re-send of a window already evicted: stale
                return True
            window = stream.windows[(start, end)] = _Window(start, end)
        if kind == "window_summary":
            if window.summary is None:
                window.summary = rec
            else:
                self.duplicates += 1
        elif rid in window.cells:
            self.duplicates += 1
        elif len(window.cells) >= MAX_CELLS:
            window.cells_dropped += 1
        else:
            window.cells[rid] = rec
        self._evict(stream)
        return True

    def _evict(self, stream: _Stream) -> None:
        complete = stream.complete()
        for w in complete[: -self.max_windows]:
            del stream.windows[w.key]
        complete = complete[-self.max_windows :]
        pending = stream.pending()
        if len(complete) >= self.max_windows:
            # Older than every kept window: it would never be shown.
            floor = complete[0].key
            for w in [w for w in pending if w.key < floor]:
                del stream.windows[w.key]
                pending.remove(w)
        for w in pending[: max(0, len(pending) - MAX_PENDING)]:
            del stream.windows[w.key]

    # ---- view --------------------------------------------------------------------------

    def latest(self) -> dict[str, Any]:
        """The JSON view served at /api/latest."""
        return {
            "topics": self.topics,
            "missing_topics": self.missing_topics,
            "connected": self.connected,
            "error": self.error,
            "records": self.records,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "streams": [self._stream_view(st) for _, st in sorted(self._streams.items())],
        }

    def _stream_view(self, st: _Stream) -> dict[str, Any]:
        complete = st.complete()
        view: dict[str, Any] = {
            "pipeline": st.pipeline,
            "output": st.output,
            "pipeline_version": st.version,
            "k": None,
            "noise": False,
            "window": None,
            "pending_windows": len(st.pending()),
        }
        if not complete:
            return view
        w = complete[-1]
        summary = w.summary or {}
        cells = sorted(
            w.cells.values(),
            key=lambda r: (
                -_num(r["metrics"].get("users")),
                -_num(r["metrics"].get("events")),
                sorted(r["dims"].items()),
            ),
        )
        dims: list[str] = []
        columns: list[str] = []
        for r in cells:
            dims.extend(d for d in r["dims"] if d not in dims)
            columns.extend(
                m
                for m in r["metrics"]
                if m not in columns and (m.endswith("_mean") or m.endswith("_sum"))
            )
        # Per measure: mean, then sum.
        measures = list(dict.fromkeys(c.rsplit("_", 1)[0] for c in columns))
        ordered = [f"{m}_{s}" for m in measures for s in ("mean", "sum") if f"{m}_{s}" in columns]
        view_cells = [self._cell_view(r) for r in cells]
        by_events = sorted(view_cells, key=lambda c: (-_num(c["events"]), -_num(c["users"])))
        view.update(
            k=_int_or_none(summary.get("k")),
            noise=any(r.get("noise") for r in cells),
            window={"start": w.start, "end": w.end},
            summary={
                key: summary.get(key)
                for key in (
                    "cells_released",
                    "cells_rolled_up",
                    "cells_suppressed",
                    "late_events",
                    "rejected_events",
                    "k",
                )
            },
            dimensions=dims,
            columns=[[c, c.replace("_mean", " mean").replace("_sum", " sum")] for c in ordered],
            released_events=sum(_num(c["events"]) for c in view_cells),
            cells_received=len(w.cells),
            cells_total=len(w.cells) + w.cells_dropped,
            cells_missing=max(
                0,
                (_int_or_none(summary.get("cells_released")) or 0) - len(w.cells) - w.cells_dropped,
            ),
            top_users=view_cells[:TOP_CELLS],
            top_events=by_events[:TOP_CELLS],
            cells=view_cells[:TABLE_CELLS],
            history=[
                {
                    "start": h.start,
                    "end": h.end,
                    "released_events": sum(
                        _num(r["metrics"].get("events")) for r in h.cells.values()
                    ),
                    "cells_released": (h.summary or {}).get("cells_released"),
                    "cells_suppressed": (h.summary or {}).get("cells_suppressed"),
                }
                for h in complete
            ],
        )
        return view

    @staticmethod
    def _cell_view(rec: dict[str, Any]) -> dict[str, Any]:
        metrics = rec["metrics"]
        return {
            "dims": rec["dims"],
            "users": metrics.get("users"),
            "events": metrics.get("events"),
            "rollup_level": rec.get("rollup_level"),
            "metrics": {
                m: v for m, v in metrics.items() if m.endswith("_mean") or m.endswith("_sum")
            },
        }

    # ---- Kafka -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._consume_forever(), name="dashboard-consumer")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _consume_forever(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._consume_once()
                delay = 1.0  # a new topic appeared: read everything again from the start
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka unreachable, auth failure, ...: retry
                self.connected = False
                name, text = type(exc).__name__, str(exc)
                self.error = text if text.startswith(name) else f"{name}: {text}".rstrip(": ")
                log.warning("dashboard consumer: %s; retrying in %.0f s", self.error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)

    async def _consume_once(self) -> None:
        """One pass: from the beginning of every existing topic, until a missing one appears."""
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            client_id="anonstream-dashboard",
            **self.client_options,
        )
        try:
            await consumer.start()
            # Subscribing to a missing topic could auto-create it: only existing ones.
            existing = await consumer.topics()
            present = [t for t in self.topics if t in existing]
            self.missing_topics = [t for t in self.topics if t not in existing]
            self.reset()
            self.connected, self.error = True, None
            if present:
                consumer.subscribe(present)
            next_check = time.monotonic() + TOPIC_RECHECK_SECONDS
            while True:
                if present:
                    batch = await consumer.getmany(timeout_ms=1000)
                    for msgs in batch.values():
                        for m in msgs:
                            self.add_message(m.value)
                else:
                    await asyncio.sleep(1.0)
                if self.missing_topics and time.monotonic() >= next_check:
                    next_check = time.monotonic() + TOPIC_RECHECK_SECONDS
                    existing = await consumer.topics()
                    if any(t in existing for t in self.missing_topics):
                        return
        finally:
            self.connected = False
            await consumer.stop()

    # ---- HTTP --------------------------------------------------------------------------

    def app(self) -> web.Application:
        page = render_page().encode()
        headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-store"}

        async def index(_: web.Request) -> web.Response:
            return web.Response(
                body=page, content_type="text/html", charset="utf-8", headers=headers
            )

        async def api_latest(_: web.Request) -> web.Response:
            return web.Response(
                body=orjson.dumps(self.latest()),
                content_type="application/json",
                headers={"Cache-Control": "no-store"},
            )

        async def health(_: web.Request) -> web.Response:
            return web.Response(
                body=orjson.dumps({"status": "ok", "records": self.records}),
                content_type="application/json",
                headers={"Cache-Control": "no-store"},
            )

        application = web.Application()
        application.router.add_get("/", index)
        application.router.add_get("/api/latest", api_latest)
        application.router.add_get("/health", health)
        return application


async def serve_dashboard(
    bootstrap: str,
    topics: list[str],
    host: str,
    port: int,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve the dashboard until cancelled; `ready` is set once the port is listening."""
    from anonstream.settings import Settings

    dashboard = Dashboard(bootstrap, topics, client_options=Settings().kafka_client_options())
    runner = web.AppRunner(dashboard.app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await dashboard.start()
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()  # until cancelled
    finally:
        await dashboard.stop()
        await runner.cleanup()


def run_dashboard(
    bootstrap: str,
    topics: list[str],
    host: str = "127.0.0.1",
    port: int = 8050,
    *,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Run the dashboard until SIGINT or SIGTERM. Raises OSError if the port is unusable."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        ready = asyncio.Event()
        server = asyncio.create_task(serve_dashboard(bootstrap, topics, host, port, ready))
        started = asyncio.create_task(ready.wait())
        done, _ = await asyncio.wait({server, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if server in done:
            server.result()  # failed to start: raise its error
            return
        if on_ready is not None:
            on_ready()
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({server, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if server.done():
            server.result()
            return
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server

    asyncio.run(main())
