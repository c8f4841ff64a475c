"""File replay: JSONL raw events in, JSONL releases out, no broker.

The embedded way to run a pipeline, and the way tests and auditors check one. It uses the
very engine the Kafka worker uses; at the end of the file every open window is released,
as a worker does when its input goes idle.

A worker rejects events further ahead of its clock than the pipeline's max_future_skew.
Replay holds one clock for the whole file (`replay_clock`), so its output does not depend
on how fast it runs: by default the file's last-modification time, which for a capture of
a topic is when its last event was read, so an old capture is judged as of then and not
as of today (the wall clock would accept an event that was years ahead when it came).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from anonstream.core.decode import parse_ts
from anonstream.core.engine import PipelineEngine
from anonstream.core.release import Accounting
from anonstream.core.step import DeadLetter, Message

BATCH = 10_000


@dataclass
class ReplayReport:
    lines: int = 0
    releases: int = 0
    aggregates: int = 0
    rejected: int = 0
    late: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    accounting: list[tuple[int, str, Accounting]] = field(default_factory=list)


def replay_clock(now: str | None, input_path: Path) -> int:
    """Epoch ms of replay's clock: `now` as RFC 3339 or epoch ms, "wall" for the wall
    clock, or (None) the input file's last-modification time."""
    if now is None:
        return input_path.stat().st_mtime_ns // 1_000_000
    if now == "wall":
        return time.time_ns() // 1_000_000
    ms = parse_ts(int(now) if now.isdigit() else now)
    if ms is None:
        raise ValueError(
            f"--now: expected an RFC 3339 time with offset, epoch ms or 'wall', got {now!r}"
        )
    return ms


def _batches(lines: Iterable[bytes], size: int) -> Iterator[list[Message]]:
    batch: list[Message] = []
    for i, line in enumerate(lines):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        batch.append(Message(line, "file", i))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def replay(
    engine: PipelineEngine,
    lines: Iterable[bytes],
    sink: Callable[[dict[str, Any]], None],
    rejects: Callable[[DeadLetter], None] | None = None,
    progress: Callable[[int], None] | None = None,
    batch_size: int = BATCH,
) -> ReplayReport:
    report = ReplayReport()

    def emit(step: Any) -> None:
        for rec in step.releases:
            sink(rec)
            report.releases += 1
            report.aggregates += rec["kind"] == "aggregate"
        for dl in step.dead_letters:
            report.rejected += 1
            if rejects is not None:
                rejects(dl)
        report.accounting.extend(step.accounting)

    engine.assign(["file"])
    for batch in _batches(lines, batch_size):
        emit(engine.process(batch))
        report.lines += len(batch)
        if progress is not None:
            progress(len(batch))
    emit(engine.close_all())
    report.late = engine.counters["late"]
    report.rejections = dict(engine.rejections)
    return report


def dump_release(out: IO[bytes]) -> Callable[[dict[str, Any]], None]:
    def write(rec: dict[str, Any]) -> None:
        out.write(orjson.dumps(rec, option=orjson.OPT_SORT_KEYS) + b"\n")

    return write


def dump_dead_letter(out: IO[bytes]) -> Callable[[DeadLetter], None]:
    def write(dl: DeadLetter) -> None:
        rec = {
            "reason": dl.reason,
            "field": dl.field,
            "line": dl.offset + 1,
            "value": dl.value.decode("utf-8", "replace"),
        }
        out.write(orjson.dumps(rec) + b"\n")

    return write


def replay_file(
    engine: PipelineEngine,
    input_path: Path,
    output_path: Path,
    rejects_path: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    with (
        open(input_path, "rb") as fin,
        open(output_path, "wb") as fout,
        open(rejects_path, "wb") if rejects_path else open("/dev/null", "wb") as frej,
    ):
        return replay(
            engine,
            fin,
            dump_release(fout),
            dump_dead_letter(frej) if rejects_path else None,
            progress,
        )
