"""anonstream.faust: the benchmark pipeline as an agent of a Faust app (``faust_agent``).

The same engine and pipeline as the ``anonstream`` run, inside a plain Faust app
(:func:`anonstream.faust.anonymize`): batches from ``stream.noack_take``, releases through
Faust's producer. When the agent has read ``--events`` events it releases every open
window (as ``anonstream worker --stop-at-end`` does at the end of its input), prints the
report line and leaves the process (``os._exit``, as naive_faust does).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Sequence

import faust

from anonstream.core.keys import load_secret
from anonstream.core.pipeline import load_pipeline
from anonstream.faust import anonymize

from .common import report, run_faust_app

POLL_S = 0.05


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="anonstream_load.runners.faust_agent", description=__doc__)
    p.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers")
    p.add_argument("--pipeline", required=True, help="pipeline file (its source_topic is read)")
    p.add_argument("--events", type=int, required=True, help="events in the topic (stop at N)")
    p.add_argument("--group", required=True, help="a fresh Faust app id (its consumer group)")
    return p.parse_args(argv)


def build_app(args: argparse.Namespace, datadir: str) -> faust.App:
    app = faust.App(
        args.group, broker=f"kafka://{args.bootstrap}", datadir=datadir, store="memory://",
        web_enabled=False, topic_replication_factor=1, consumer_auto_offset_reset="earliest",
        loghandlers=[],
    )  # fmt: skip
    agent = anonymize(app, load_pipeline(args.pipeline), load_secret(), idle_close_seconds=0)
    first: list[float] = []

    @app.timer(POLL_S)
    async def until_the_end() -> None:
        if agent.events_read and not first:
            first.append(time.time())
        if agent.events_read >= args.events:
            await agent.release_all()
            await app.producer.flush()
            report("faust_agent", agent.events_read, first[0], expected=args.events)
            shutil.rmtree(datadir, ignore_errors=True)
            os._exit(0)

    return app


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return run_faust_app(lambda datadir: build_app(args, datadir), "anonstream-faust-agent-")


if __name__ == "__main__":
    raise SystemExit(main())
