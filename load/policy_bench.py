"""Micro-benchmark of the policy step alone (decode + validation + policy), one core.

Not a test: it prints events per second for the column-wise fast path and for the
per-event reference path, on the standard synthetic web-activity events, with no Kafka.

    python -m anonstream_load.policy_bench --events 200000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import orjson

from anonstream.core.columns import ColumnPolicy
from anonstream.core.decode import Decoded, Decoder
from anonstream.core.keys import load_secret
from anonstream.core.pipeline import load_pipeline
from anonstream.core.policy import Policy
from anonstream.synthetic import EventGenerator, Workload

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "web_activity.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--pipeline", type=Path, default=PIPELINE)
    args = ap.parse_args(argv)
    values = list(EventGenerator(Workload(users=args.users)).encoded_web_events(args.events))
    pipeline = load_pipeline(args.pipeline)
    secret = load_secret({"ANONSTREAM_SECRET": "policy-benchmark-" + "x" * 16})
    decoder = Decoder(pipeline.contract, clock_ms=lambda: time.time_ns() // 1_000_000)

    t0 = time.perf_counter()
    for v in values:
        orjson.loads(v)
    decode_only = time.perf_counter() - t0

    fast = ColumnPolicy(decoder, Policy(pipeline, secret))
    t0 = time.perf_counter()
    accepted = 0
    for i in range(0, len(values), args.batch):
        cols, _flagged = fast.run(values[i : i + args.batch])
        accepted += len(cols)
    fast_s = time.perf_counter() - t0

    ref = Policy(pipeline, secret)
    t0 = time.perf_counter()
    for v in values:
        d = decoder.decode(v)
        if isinstance(d, Decoded):
            ref.apply(d)
    ref_s = time.perf_counter() - t0

    n = len(values)
    result = {
        "events": n,
        "accepted_fast_path": accepted,
        "orjson_loads_per_s": round(n / decode_only),
        "policy_fast_path_per_s": round(n / fast_s),
        "policy_reference_path_per_s": round(n / ref_s),
    }
    for key, value in result.items():
        print(f"{key:>30}: {value:,}")
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
