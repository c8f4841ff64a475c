"""A Faust app of your own, with anonstream pipelines as two of its agents (docs/faust.md).

    export ANONSTREAM_SECRET_FILE=/run/secrets/anonstream   # the same secret as the worker's
    python examples/faust_app.py worker -l info

Configuration is anonstream's (ANONSTREAM_BOOTSTRAP_SERVERS, ANONSTREAM_PIPELINES_DIR,
ANONSTREAM_DEAD_LETTER_TOPIC, ANONSTREAM_IDLE_CLOSE_SECONDS) plus FAUST_APP_ID, the app's
id and so its consumer group (default "shop").
"""

from __future__ import annotations

import os

import faust

from anonstream.core.keys import load_secret
from anonstream.core.pipeline import load_pipeline
from anonstream.faust import anonymize
from anonstream.settings import Settings

settings = Settings()
app = faust.App(
    os.environ.get("FAUST_APP_ID", "shop"),
    broker=[f"kafka://{h}" for h in settings.bootstrap_servers.split(",")],
    store="memory://",
    autodiscover=False,
)

secret = load_secret()
for path in sorted(settings.pipelines_dir.glob("*.yaml")):
    anonymize(
        app, load_pipeline(path), secret,
        dead_letter_topic=settings.dead_letter_topic,
        idle_close_seconds=settings.idle_close_seconds,
    )  # fmt: skip


# The app's own work goes on beside the pipelines, as before.
@app.timer(60.0)
async def heartbeat() -> None:
    app.log.info("shop: still here")


if __name__ == "__main__":
    app.main()
