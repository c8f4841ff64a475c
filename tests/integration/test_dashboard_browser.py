"""Issue 7: the read-only dashboard, end to end in a real headless browser.

Hand-made release records (two pipelines, two complete windows each with "*" rest cells,
a window still waiting for its summary, re-sent records) go to fresh output topics on the
session broker. `anonstream dashboard` reads them, and Debian's chromium loads the page
with no network: the rendered DOM must show what the records hold (so the page's script
really ran), and the screenshot must be a real, non-blank 1280x900 picture with the bars
drawn. Chromium missing is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiokafka import AIOKafkaProducer

from anonstream.broker.local import free_ports
from anonstream.broker.topics import create_topics
from anonstream.core.records import aggregate_record, summary_record

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOUR = 3_600_000
T0 = 1_795_996_800_000  # 2026-11-30T00:00:00Z
WIDTH, HEIGHT = 1280, 900
CHROMIUM_MISSING = (
    "chromium is not installed: the dashboard browser test needs Debian's chromium package "
    "(apt-get install -y chromium)"
)
USERS_BAR = (0x3B, 0x6F, 0xD8)  # --users in dashboard_page.py
EVENTS_BAR = (0x14, 0x93, 0x7A)  # --events in dashboard_page.py

WEB_CELLS = {
    # window index -> [(type, url, user_agent), events, users, duration_ms mean]
    0: [
        (("page_view", "www.example.com/pricing", "Chrome 120 / Windows"), 377, 80, 8200.0),
        (("page_view", "www.example.com/docs/{id}", "Firefox 121 / Linux"), 241, 49, 15400.0),
        (("page_view", "*", "*"), 298, 64, 6100.0),
        (("email_open", "newsletter.example.com/{campaign}", "Safari 17 / macOS"), 120, 26, 900.0),
        (("*", "*", "*"), 35, 12, 3000.0),
    ],
    1: [
        (("page_view", "www.example.com/pricing", "Chrome 120 / Windows"), 412, 87, 8400.0),
        (("page_view", "www.example.com/docs/{id}", "Firefox 121 / Linux"), 268, 54, 16250.5),
        (("page_view", "www.example.com/pricing", "*"), 190, 41, 7300.0),
        (("page_view", "*", "*"), 356, 73, 5900.0),
        (("email_open", "newsletter.example.com/{campaign}", "Safari 17 / macOS"), 133, 29, 850.0),
        (("email_open", "*", "*"), 58, 12, 1200.0),
        (("*", "*", "*"), 21, 11, 2500.0),
    ],
}
WEB_SUMMARIES = {
    0: {"cells_released": 5, "cells_rolled_up": 11, "cells_suppressed": 9, "late_events": 0,
        "rejected_events": 1},
    1: {"cells_released": 7, "cells_rolled_up": 23, "cells_suppressed": 17, "late_events": 4,
        "rejected_events": 2},
}  # fmt: skip
USAGE_CELLS = {
    0: [
        (("mail", "message_sent", "Outlook 16 / Windows"), 2210, 140, 38000.0),
        (("drive", "file_upload", "Chrome 120 / Windows"), 860, 95, 2400000.0),
        (("mail", "*", "*"), 530, 44, 21000.0),
        (("*", "*", "*"), 96, 15, 120000.0),
    ],
    1: [
        (("mail", "message_sent", "Outlook 16 / Windows"), 2480, 151, 36500.0),
        (("drive", "file_upload", "Chrome 120 / Windows"), 910, 99, 2250000.0),
        (("calendar", "event_created", "*"), 301, 38, 4100.0),
        (("mail", "*", "*"), 612, 47, 19800.0),
        (("*", "*", "*"), 88, 14, 150000.0),
    ],
}
USAGE_SUMMARIES = {
    0: {"cells_released": 4, "cells_rolled_up": 6, "cells_suppressed": 3, "late_events": 0,
        "rejected_events": 0},
    1: {"cells_released": 5, "cells_rolled_up": 8, "cells_suppressed": 5, "late_events": 0,
        "rejected_events": 0},
}  # fmt: skip
PENDING_URL = "www.example.com/window-not-complete-yet"


def _window(i: int) -> dict[str, int]:
    return {"start_ms": T0 + i * HOUR, "end_ms": T0 + (i + 1) * HOUR}


def _web_aggregate(i: int, values: tuple[str, ...], events: int, users: int, mean: float) -> Any:
    dims = dict(zip(("type", "url", "user_agent"), values, strict=True))
    metrics = {
        "events": events, "users": users, "duration_ms_sum": round(mean * events, 1),
        "duration_ms_mean": mean, "duration_ms_histogram": None,
    }  # fmt: skip
    return aggregate_record(
        pipeline="web_activity", version=1, output="default", **_window(i), dims=dims,
        metrics=metrics, k=10, level=values.count("*"), noise=None,
    )  # fmt: skip


def _usage_aggregate(i: int, values: tuple[str, ...], events: int, users: int, mean: float) -> Any:
    dims = dict(zip(("service", "type", "user_agent"), values, strict=True))
    metrics = {
        "events": events, "users": users, "quantity_sum": float(events * 2),
        "bytes_sum": round(mean * events, 1), "bytes_mean": mean,
        "bytes_histogram": {"[-inf,100000)": events // 2, "[100000,inf)": events - events // 2},
    }  # fmt: skip
    return aggregate_record(
        pipeline="service_usage", version=2, output="default", **_window(i), dims=dims,
        metrics=metrics, k=10, level=values.count("*"), noise=None,
    )  # fmt: skip


def release_records() -> dict[str, list[dict[str, Any]]]:
    """The records per pipeline, in release order (a window's cells, then its summary)."""
    web: list[dict[str, Any]] = []
    usage: list[dict[str, Any]] = []
    for i in (0, 1):
        web += [_web_aggregate(i, *cell) for cell in WEB_CELLS[i]]
        web.append(summary_record(
            pipeline="web_activity", version=1, output="default", **_window(i), k=10,
            **WEB_SUMMARIES[i],
        ))  # fmt: skip
        usage += [_usage_aggregate(i, *cell) for cell in USAGE_CELLS[i]]
        usage.append(summary_record(
            pipeline="service_usage", version=2, output="default", **_window(i), k=10,
            **USAGE_SUMMARIES[i],
        ))  # fmt: skip
    # Re-sends after a restart: same release_id, first one wins (late_events may differ).
    first_cell, summary = web[len(WEB_CELLS[0]) + 1], web[-1]
    web.append(first_cell)
    web.append({**summary, "late_events": 99})
    # A later window whose summary has not arrived yet: not complete, never shown.
    web.append(_web_aggregate(2, ("page_view", PENDING_URL, "Edge 120 / Windows"), 500, 90, 1.0))
    return {"web_activity": web, "service_usage": usage}


async def _produce(bootstrap: str, topics: dict[str, str]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    n = 0
    try:
        for pipeline, records in release_records().items():
            for rec in records:
                await producer.send_and_wait(
                    topics[pipeline], json.dumps(rec).encode(), key=rec["release_id"].encode()
                )
                n += 1
    finally:
        await producer.stop()
    return n


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _wait_for_records(base: str, n: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    last: Any = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dashboard exited with {proc.returncode}:\n{log.read_text()}")
        try:
            last = _get_json(f"{base}/health")
            if last["status"] == "ok" and last["records"] >= n:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    pytest.fail(f"dashboard did not read {n} records in 90 s (last /health: {last}):\n"
                f"{log.read_text()}")  # fmt: skip


def _chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail(CHROMIUM_MISSING)
    profile = tmp / f"chromium-profile-{uuid.uuid4().hex[:8]}"
    cmd = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}", "--virtual-time-budget=5000", *args,
    ]  # fmt: skip
    env = {**os.environ, "HOME": str(tmp)}
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    length, chunk = struct.unpack(">I4s", data[8:16])
    assert chunk == b"IHDR" and length == 13, "PNG without an IHDR chunk first"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _pixels(path: Path) -> np.ndarray | None:
    """RGB pixels as uint8 (H, W, 3), with Pillow or matplotlib if either is importable."""
    try:
        from PIL import Image

        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except ImportError:
        pass
    try:
        import matplotlib.image as mpimg
    except ImportError:
        return None
    arr = mpimg.imread(str(path))
    if arr.dtype != np.uint8:
        arr = np.rint(arr * 255).astype(np.uint8)
    return arr[..., :3]


def _tile(dom: str, stat: str, pipeline: str) -> str:
    """The number shown in a summary tile of one pipeline's section."""
    start = dom.index(f'data-pipeline="{pipeline}"')
    match = re.compile(rf'data-stat="{stat}"><div class="num">([^<]*)</div>').search(dom, start)
    assert match, f"no {stat} tile for {pipeline}"
    return match.group(1)


def test_dashboard_in_headless_chromium(kafka_bootstrap: str, tmp_path: Path) -> None:
    if shutil.which("chromium") is None:
        pytest.fail(CHROMIUM_MISSING)
    suffix = uuid.uuid4().hex[:8]
    topics = {
        p: f"anon.aggregates.{p}.dashboard.{suffix}" for p in ("web_activity", "service_usage")
    }
    create_topics(kafka_bootstrap, {t: 3 for t in topics.values()})
    n = asyncio.run(_produce(kafka_bootstrap, topics))

    (port,) = free_ports(1)
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "dashboard.log"
    cmd = [
        sys.executable, "-m", "anonstream.cli", "dashboard",
        "--topic", topics["web_activity"], "--topic", topics["service_usage"],
        "--bootstrap-servers", kafka_bootstrap, "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_records(base, n, proc, log)

        # The JSON view: the latest complete window, first record per release_id.
        latest = _get_json(f"{base}/api/latest")
        streams = {s["pipeline"]: s for s in latest["streams"]}
        web = streams["web_activity"]
        assert web["window"] == {"start": "2026-11-30T01:00:00Z", "end": "2026-11-30T02:00:00Z"}
        assert web["cells_total"] == 7 and web["cells_missing"] == 0
        assert web["summary"]["late_events"] == 4  # the re-sent summary's 99 is dropped
        assert [h["released_events"] for h in web["history"]] == [
            sum(c[1] for c in WEB_CELLS[i]) for i in (0, 1)
        ]
        assert web["pending_windows"] == 1
        assert latest["duplicates"] == 2
        assert streams["service_usage"]["pipeline_version"] == 2

        # The page in a real browser, with no network: the DOM its script built...
        dump = _chromium(tmp_path, "--dump-dom", f"{base}/")
        assert dump.returncode == 0 and '<main id="app">' in dump.stdout, (
            f"chromium failed:\n{dump.stderr[-3000:]}"
        )
        # Only what the script rendered: the script's own source is in the DOM too.
        dom = dump.stdout.split('<main id="app">', 1)[1].split("</main>", 1)[0]
        for text in ("web_activity", "service_usage", "www.example.com/pricing",
                     "newsletter.example.com/{campaign}", "(rest)", "Top cells by users",
                     "Released events per window", "there is no total"):  # fmt: skip
            assert text in dom, f"{text!r} not on the rendered page"
        assert "waiting for the first window" not in dom
        assert PENDING_URL not in dom, "a window without its summary was shown"
        assert '<td class="rest">(rest)</td>' in dom
        assert not re.search(r"<td[^>]*>\*</td>", dom), '"*" must be shown as "(rest)"'
        assert _tile(dom, "cells_released", "web_activity") == "7"
        assert _tile(dom, "cells_rolled_up", "web_activity") == "23"
        assert _tile(dom, "cells_suppressed", "web_activity") == "17"
        assert _tile(dom, "k", "web_activity") == "10"
        assert _tile(dom, "late_events", "web_activity") == "4"
        released = sum(c[1] for c in WEB_CELLS[1])
        assert _tile(dom, "released_events", "web_activity") == f"{released:,}"
        assert _tile(dom, "cells_suppressed", "service_usage") == "5"
        assert "2,480" in dom  # a formatted cell value of service_usage

        # ... and what it looks like.
        png = tmp_path / "dashboard.png"
        shot = _chromium(tmp_path, f"--screenshot={png}", f"{base}/")
        assert png.is_file(), f"no screenshot:\n{shot.stderr[-3000:]}"
        data = png.read_bytes()
        assert _png_size(data) == (WIDTH, HEIGHT)
        assert len(data) > 15_000, f"screenshot of {len(data)} bytes: blank page?"
        pixels = _pixels(png)
        if pixels is not None:
            assert pixels.shape == (HEIGHT, WIDTH, 3)
            colours, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
            assert len(colours) > 64, f"only {len(colours)} colours: blank page?"
            assert counts.max() < 0.9 * HEIGHT * WIDTH, "one colour fills the page"
            for name, rgb in (("users", USERS_BAR), ("events", EVENTS_BAR)):
                bar = int(np.all(pixels == np.array(rgb, dtype=np.uint8), axis=-1).sum())
                assert bar > 1_000, f"the {name} bars are not drawn ({bar} pixels)"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, f"dashboard did not stop cleanly:\n{log.read_text()}"
