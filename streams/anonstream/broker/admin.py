"""Talking to a broker from sync code: ``run_sync`` runs a coroutine whether or not the
caller is inside an event loop, and the readiness probe asks the broker for its metadata."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

_T = TypeVar("_T")


def run_sync(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run the coroutine made by ``factory`` to completion, from sync code.

    If this thread already runs an event loop, the coroutine runs on a fresh loop in a helper
    thread instead (``asyncio.run`` cannot nest).
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


async def probe_metadata(
    bootstrap: str, timeout: float, client_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=max(1000, int(timeout * 1000)),
        client_id="anonstream-readiness",
        **(client_options or {}),
    )
    try:
        await admin.start()
        cluster: dict[str, Any] = await admin.describe_cluster()
        return cluster
    finally:
        await admin.close()
