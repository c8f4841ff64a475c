"""File replay (anonstream.runtime.replay): reports, rejects and late events."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import orjson

from anonstream.core.engine import PipelineEngine
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import parse_pipeline
from anonstream.core.records import rfc3339
from anonstream.core.step import DeadLetter
from anonstream.runtime.replay import dump_dead_letter, replay, replay_file
from tests.unit.fields import web_test_fields

DAY = 86_400_000
HOUR = 3_600_000
T0 = (1_700_000_000_000 // DAY + 1) * DAY
K = 3
SECRET = load_secret({"ANONSTREAM_SECRET": "x" * 32})
HOST = "https://shop.example.com"


def make_pipeline(lateness: str = "2m", size: str = "1h", step: str | None = None) -> Any:
    return parse_pipeline(
        {
            "pipeline": "replayed",
            "version": 1,
            "contract": "web_activity",
            "privacy_unit": ["visitor_id"],
            "fields": web_test_fields(duration_ms="drop"),
            "window": {"size": size, "step": step or size, "allowed_lateness": lateness},
            "dimensions": ["type", "url"],
            "k": K,
        },
        "test_replay",
    )


def engine(lateness: str = "2m", **window: str) -> PipelineEngine:
    return PipelineEngine(make_pipeline(lateness, **window), SECRET, clock_ms=lambda: T0 + DAY)


def line(event_id: str, user: str, ts: int, path: str = "/a", typ: str = "page_view") -> bytes:
    return orjson.dumps(
        {"event_id": event_id, "ts": ts, "type": typ, "visitor_id": user, "url": HOST + path}
    )


class Collect:
    def __init__(self) -> None:
        self.releases: list[dict[str, Any]] = []
        self.rejects: list[DeadLetter] = []

    def sink(self, rec: dict[str, Any]) -> None:
        self.releases.append(rec)

    def reject(self, dl: DeadLetter) -> None:
        self.rejects.append(dl)

    @property
    def aggregates(self) -> list[dict[str, Any]]:
        return [r for r in self.releases if r["kind"] == "aggregate"]

    @property
    def summaries(self) -> list[dict[str, Any]]:
        return [r for r in self.releases if r["kind"] == "window_summary"]


def test_good_bad_and_blank_lines() -> None:
    good = [line(f"g{i}", f"u{i}", T0 + i * 1000) for i in range(4)]
    missing_ts = orjson.dumps({"event_id": "m", "type": "click", "visitor_id": "v"})
    no_unit = orjson.dumps({"event_id": "n", "ts": T0, "type": "click"})
    lines = [
        good[0] + b"\n",
        b"not json at all\n",
        b"\n",
        good[1] + b"\r\n",
        missing_ts + b"\n",
        b"   \n",
        good[2] + b"\n",
        b"[1, 2]\n",
        no_unit + b"\n",
        good[3],  # last line without a newline
    ]
    out = Collect()
    report = replay(engine(), lines, out.sink, out.reject)
    assert report.lines == 8  # blank lines are skipped, not counted
    assert report.rejected == 4
    assert report.rejections == {
        "not_json": 1, "missing_field": 1, "not_object": 1, "no_privacy_unit": 1,
    }  # fmt: skip
    assert report.late == 0
    # The rejects sink gets each bad line, with its reason, field and line number.
    got = [(dl.reason, dl.field, dl.offset, dl.value) for dl in out.rejects]
    assert got == [
        ("not_json", None, 1, b"not json at all"),
        ("missing_field", "ts", 4, missing_ts),
        ("not_object", None, 7, b"[1, 2]"),
        ("no_privacy_unit", "visitor_id", 8, no_unit),
    ]
    assert all(dl.partition == "file" for dl in out.rejects)
    # The good lines: one cell of 4 people in one window.
    (agg,) = out.aggregates
    assert agg["dims"] == {"type": "page_view", "url": "shop.example.com/a"}
    assert (agg["metrics"]["events"], agg["metrics"]["users"]) == (4, 4)
    (summary,) = out.summaries
    assert summary["rejected_events"] == 4 and summary["late_events"] == 0
    assert report.releases == 2 and report.aggregates == 1
    assert [acc.rows_in for _, _, acc in report.accounting] == [4]


def test_rejects_sink_is_optional() -> None:
    out = Collect()
    report = replay(engine(), [b"{", line("a", "u", T0)], out.sink)
    assert report.rejected == 1 and report.rejections == {"not_json": 1}


def test_late_event_is_counted_and_not_released() -> None:
    first = [line(f"a{i}", f"u{i}", T0 + 10_000 + i) for i in range(K)]
    ahead = [line(f"b{i}", f"w{i}", T0 + 5 * HOUR + i) for i in range(K)]
    late = line("late", "latecomer", T0 + 20_000)
    out = Collect()
    # Small batches, so the watermark moves between them, as on a live stream.
    report = replay(engine(), [*first, *ahead, late], out.sink, out.reject, batch_size=2)
    assert report.late == 1
    assert report.rejected == 0 and report.lines == 2 * K + 1
    by_window = {r["window_start"]: r for r in out.aggregates}
    assert set(by_window) == {rfc3339(T0), rfc3339(T0 + 5 * HOUR)}
    # The first window was released before the late event arrived: it holds K people.
    assert by_window[rfc3339(T0)]["metrics"]["users"] == K
    assert by_window[rfc3339(T0)]["metrics"]["events"] == K
    # The late event is reported in the summary of the next window released.
    assert [s["late_events"] for s in out.summaries] == [0, 1]
    assert sum(acc.rows_in for _, _, acc in report.accounting) == 2 * K


def test_within_allowed_lateness_is_not_late() -> None:
    first = [line(f"a{i}", f"u{i}", T0 + HOUR - 5_000 + i) for i in range(K - 1)]
    ahead = [line("b0", "w0", T0 + HOUR + 60_000)]  # 1 minute into the next window
    straggler = line("s", "straggler", T0 + HOUR - 1)  # 2m lateness: still on time
    out = Collect()
    report = replay(engine("2m"), [*first, *ahead, straggler], out.sink, batch_size=1)
    assert report.late == 0
    (agg,) = out.aggregates
    assert agg["window_start"] == rfc3339(T0) and agg["metrics"]["users"] == K


def test_old_event_for_a_window_that_never_had_events_is_late() -> None:
    """Once the watermark has passed the end of a window, an event for it is late, whether
    or not that window had events before. Today the first such event opens the window, which
    is then released at once holding that one event (a window summary for an hour that was
    already over), and only the events after it count as late."""
    ahead = [line(f"b{i}", f"w{i}", T0 + 5 * HOUR + i) for i in range(K)]
    old = [line(f"o{i}", f"old{i}", T0 + 1000 + i) for i in range(K)]
    out = Collect()
    report = replay(engine("0s"), [*ahead, *old], out.sink, batch_size=1)
    assert [s["window_start"] for s in out.summaries] == [rfc3339(T0 + 5 * HOUR)]
    assert report.late == K


def test_late_event_in_hopping_windows_is_counted_once() -> None:
    """With 2h windows every hour an event belongs to two windows; one late event is one late
    event (the report and the window summary say "late events"), not one per window."""
    first = [line(f"a{i}", f"u{i}", T0 + 10 + i) for i in range(K)]
    ahead = [line("b", "w", T0 + 6 * HOUR)]
    late = line("late", "latecomer", T0 + 20)  # in windows [T0-1h, T0+1h) and [T0, T0+2h)
    out = Collect()
    eng = engine("0s", size="2h", step="1h")
    report = replay(eng, [*first, *ahead, late], out.sink, batch_size=1)
    # Both windows of the first events were released before the late one came.
    assert sorted(r["window_start"] for r in out.aggregates) == [rfc3339(T0 - HOUR), rfc3339(T0)]
    assert all(r["metrics"]["users"] == K for r in out.aggregates)
    assert report.late == 1
    assert sum(s["late_events"] for s in out.summaries) == 1


def test_replay_file(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(
        b"\n".join([*(line(f"e{i}", f"u{i}", T0 + i) for i in range(K)), b"oops"]) + b"\n"
    )
    report = replay_file(engine(), src, tmp_path / "out.jsonl", tmp_path / "rejects.jsonl")
    assert (report.lines, report.rejected, report.aggregates) == (K + 1, 1, 1)
    out = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
    assert [r["kind"] for r in out] == ["aggregate", "window_summary"]
    (rej,) = [orjson.loads(x) for x in (tmp_path / "rejects.jsonl").read_bytes().splitlines()]
    assert rej == {"reason": "not_json", "field": None, "line": K + 1, "value": "oops"}


def test_dump_dead_letter_is_one_json_line() -> None:
    buf = io.BytesIO()
    dump_dead_letter(buf)(DeadLetter(b"\xff{", "not_utf8", None, "file", 9))
    assert orjson.loads(buf.getvalue()) == {
        "reason": "not_utf8", "field": None, "line": 10, "value": "\ufffd{",
    }  # fmt: skip
