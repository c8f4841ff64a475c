"""Runtime settings from the environment (ANONSTREAM_*) and CLI flags.

Names follow Kafka client conventions. The hash secret is NOT a setting here: it is read
by `anonstream.core.keys.load_secret` from ANONSTREAM_SECRET or ANONSTREAM_SECRET_FILE so
that it never sits in a settings object that might be printed.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANONSTREAM_", frozen=True, extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "anonstream"
    # Stable per worker slot: the transactional id derives from it, so a restarted worker
    # fences its dead predecessor at once instead of waiting for the transaction timeout.
    instance_id: str | None = None
    # With instance_id set, the consumer is a static member of the group (its
    # group.instance.id): a restarted slot takes its killed predecessor's partitions at once
    # instead of after the session timeout, but a live slot stopped for good keeps them
    # until that timeout (10 s); a --stop-at-end run leaves the group when it ends.
    # False: dynamic membership, as with no instance id.
    static_membership: bool = True
    pipelines_dir: Path = Path("pipelines")
    pipelines: list[str] = Field(default_factory=list)  # empty: every pipeline in the dir
    dead_letter_topic: str = "anon.deadletter"
    dead_letter_retention_ms: int = 3 * 24 * 3600 * 1000  # raw events: keep briefly
    idle_close_seconds: float = 300.0  # 0: never close windows on idle input
    batch_max: int = 5000
    batch_within_seconds: float = 0.5
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    web_enabled: bool = True
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # A mounted secret: read once at start, trailing newline dropped; not with sasl_password.
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    demo: bool = False  # allows a throwaway secret, said loudly
    # Several workers in one group: ingest and release stages through a partials topic
    # partitioned by window, so that k is checked over every worker's events.
    scale_out: bool = False
    partials_partitions: int = 6
    # Scale-out: spread the release of each window over person shards, one per partials
    # partition, and a merge stage per window (runtime/shardstages.py); k pipelines only.
    release_sharded: bool = False
    partials_retention_ms: int = 7 * 24 * 3600 * 1000
    # dp outputs: the privacy ledger, one compacted topic for the installation, whatever the
    # group (a backfill under a new group continues the spending); the worker also reads
    # the per-group topic of earlier versions, anon.ledger.<group>, never writes it.
    ledger_topic: str = Field(default="anon.ledger", min_length=1)
    # dp outputs: release a window already charged again (fresh noise), and charge it
    # again. Off: such a window is not published a second time (docs/privacy-model.md).
    allow_rerelease: bool = False
    # Topics the worker (or `anonstream topics create`) creates; None: 3, or the number of
    # brokers if fewer.
    replication_factor: int | None = Field(default=None, ge=1)
    # Start-up (connect, authenticate, check topics, join) must finish within this, or the
    # worker exits 1; waiting for missing input topics does not count. A stop that takes
    # longer than stop_timeout_seconds ends the process (exit 1).
    startup_timeout_seconds: float = Field(default=45.0, gt=0)
    stop_timeout_seconds: float = Field(default=20.0, gt=0)
    exit_on_missing_topics: bool = False

    @model_validator(mode="before")
    @classmethod
    def _password_from_file(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not data.get("sasl_password_file"):
            return data
        if data.get("sasl_password"):
            raise ValueError(
                "set ANONSTREAM_SASL_PASSWORD or ANONSTREAM_SASL_PASSWORD_FILE, not both"
            )
        path = Path(data["sasl_password_file"])
        try:
            text = path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ValueError(f"cannot read the SASL password file {path}: {exc.strerror}") from None
        if not text:
            raise ValueError(f"the SASL password file {path} is empty")
        return {**data, "sasl_password": text}

    def kafka_client_options(self) -> dict[str, Any]:
        """Security options for aiokafka clients."""
        opts: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.security_protocol.endswith("SSL"):
            ctx = ssl.create_default_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None
            )
            if self.ssl_certfile:
                ctx.load_cert_chain(
                    str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None
                )
            opts["ssl_context"] = ctx
        return opts
