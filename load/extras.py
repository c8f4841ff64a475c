"""What each benchmark run needs beyond the product, checked before anything starts.

`anonstream bench` is offered wherever the product is installed, but some peers come from
the `bench` extra (quixstreams, the chart's matplotlib) or from the machine (Java and Maven
for the Kafka Streams peer). A run whose needs are missing is reported as skipped, by name
and with what to install, instead of failing with a traceback after the other runs; a
missing chart library only drops the chart.
"""

from __future__ import annotations

import importlib.util
import shutil

from anonstream.broker.local import BrokerError, find_java

from .kstreams import peer_built

BENCH_EXTRA = "pip install 'anonstream[bench]'"
# run name -> Python modules it imports that the product does not install.
RUN_MODULES: dict[str, tuple[str, ...]] = {"quixstreams": ("quixstreams",)}
CHART_MODULE = "matplotlib"


def _missing_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # a broken install counts as missing
        return True


def missing_for_run(name: str) -> str | None:
    """Why run `name` cannot run here, or None when it can."""
    missing = [m for m in RUN_MODULES.get(name, ()) if _missing_module(m)]
    if missing:
        return f"{', '.join(missing)} is not installed ({BENCH_EXTRA})"
    if name == "kstreams":
        try:
            find_java()
        except BrokerError as exc:
            return str(exc)
        if shutil.which("mvn") is None and not peer_built():
            return "Maven (`mvn`) is not on PATH; it builds the Kafka Streams peer once"
    return None


def unavailable_runs(runs: tuple[str, ...]) -> dict[str, str]:
    """The runs of `runs` that cannot run here, with the reason of each."""
    return {name: why for name in runs if (why := missing_for_run(name)) is not None}


def chart_unavailable() -> str | None:
    """Why no chart can be drawn here, or None."""
    if _missing_module(CHART_MODULE):
        return f"{CHART_MODULE} is not installed ({BENCH_EXTRA}); no chart"
    return None
