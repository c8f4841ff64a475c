"""What a deployment needs from Kafka: its topics, and the ACLs of each principal.

One place for both, so that `anonstream topics plan|create`, the worker's own topic creation
and the docs cannot disagree. The ACLs are the least the worker needs to run with the topics
created beforehand (it then creates nothing), plus read-only access for the aggregates'
readers (partners, the dashboard). Raw, dead-letter and partials topics are never granted
to a reader.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from anonstream.core.pipeline import Pipeline
from anonstream.settings import Settings

Role = Literal["input", "output", "dead-letter", "partials", "ledger"]
ResourceType = Literal["topic", "group", "transactional-id"]

DEFAULT_INPUT_PARTITIONS = 6


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    role: Role
    configs: dict[str, str] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Acl:
    principal: str
    resource_type: ResourceType
    name: str
    operations: tuple[str, ...]
    pattern_type: Literal["literal", "prefixed"] = "literal"
    why: str = ""


@dataclass(frozen=True)
class Principals:
    worker: str = "User:anonstream"
    reader: str = "User:partner"
    dashboard: str = "User:dashboard"


def transactional_id_prefix(settings: Settings) -> str:
    """Every transactional id of the group's workers starts so (see BatchLoop)."""
    return f"anonstream-{settings.group_id}-"


def worker_topics(settings: Settings, pipelines: Sequence[Pipeline]) -> list[TopicSpec]:
    """The topics the worker writes, which it creates when they are missing."""
    from anonstream.runtime.scaleout import partials_topic
    from anonstream.runtime.shardstages import merge_topic, release_sharded

    specs: dict[str, TopicSpec] = {}
    for p in pipelines:
        for o in p.outputs:
            specs[o.topic] = TopicSpec(o.topic, 1, "output", note=f"aggregates of {p.name}")
    retention = settings.dead_letter_retention_ms
    specs[settings.dead_letter_topic] = TopicSpec(
        settings.dead_letter_topic, 1, "dead-letter",
        # retention only deletes closed segments, so roll them often too
        {"retention.ms": str(retention), "segment.ms": str(min(retention, 3_600_000))},
        "SENSITIVE: rejected raw events",
    )  # fmt: skip
    if settings.scale_out:
        for p in pipelines:
            name = partials_topic(settings.group_id, p.name)
            specs[name] = TopicSpec(
                name, settings.partials_partitions, "partials",
                {"retention.ms": str(settings.partials_retention_ms)},
                f"internal: keyed pseudonyms of {p.name}",
            )  # fmt: skip
            if release_sharded(settings, p):
                name = merge_topic(settings.group_id, p.name)
                specs[name] = TopicSpec(
                    name, settings.partials_partitions, "partials",
                    {"retention.ms": str(settings.partials_retention_ms)},
                    f"internal: keyed pseudonyms of {p.name} (sharded release)",
                )  # fmt: skip
    if any(p.dp_budget is not None for p in pipelines):
        from anonstream.runtime.ledger import COMPACTED

        name = settings.ledger_topic  # one for the installation, whatever the group
        specs[name] = TopicSpec(  # one partition: one ordered history
            name, 1, "ledger", dict(COMPACTED), "internal: dp privacy ledger (no identifiers)"
        )
    return list(specs.values())


def deployment_topics(
    settings: Settings,
    pipelines: Sequence[Pipeline],
    input_partitions: int = DEFAULT_INPUT_PARTITIONS,
) -> list[TopicSpec]:
    """Every topic a deployment needs: inputs and what the worker writes (its Faust host
    starts no Kafka client: runtime/worker.py)."""
    inputs = {
        p.source_topic: TopicSpec(p.source_topic, input_partitions, "input", note="raw events")
        for p in pipelines
    }
    return [*inputs.values(), *worker_topics(settings, pipelines)]


def acls(settings: Settings, pipelines: Sequence[Pipeline], principals: Principals) -> list[Acl]:
    topics = deployment_topics(settings, pipelines)
    by_role: dict[str, list[str]] = {}
    for t in topics:
        by_role.setdefault(t.role, []).append(t.name)
    w = principals.worker
    out = [
        Acl(w, "topic", n, ("Read", "Describe"), why="read raw events") for n in by_role["input"]
    ]
    out += [
        Acl(w, "topic", n, ("Write", "Describe"), why="write aggregates and rejects")
        for n in by_role["output"] + by_role["dead-letter"]
    ]
    out += [
        Acl(w, "topic", n, ("Read", "Write", "Describe"), why="partials (scale-out)")
        for n in by_role.get("partials", [])
    ]
    out += [
        Acl(w, "topic", n, ("Read", "Write", "Describe"), why="dp privacy ledger")
        for n in by_role.get("ledger", [])
    ]
    if by_role.get("ledger"):
        from anonstream.runtime.ledger import legacy_ledger_topic

        # Read (never written, not created) if it exists: without Describe the worker would
        # not see it, and an upgraded deployment's earlier spending would be lost.
        out.append(Acl(
            w, "topic", legacy_ledger_topic(settings.group_id), ("Read", "Describe"),
            why="dp privacy ledger of earlier versions (per group), read only",
        ))  # fmt: skip
    out += [
        Acl(w, "group", settings.group_id, ("Read",), why="consume and commit in transactions"),
        Acl(
            w, "transactional-id", transactional_id_prefix(settings), ("Write", "Describe"),
            "prefixed", "one transactional id per worker slot",
        ),
    ]  # fmt: skip
    for reader in dict.fromkeys((principals.reader, principals.dashboard)):
        out += [
            Acl(reader, "topic", n, ("Read", "Describe"), why="read aggregates")
            for n in by_role["output"]
        ]
    return out


def kafka_acls_commands(entries: Sequence[Acl], bootstrap: str = "$BOOTSTRAP") -> list[str]:
    """The entries as `kafka-acls.sh --add` commands, one per principal, resource type,
    pattern and set of operations (a command grants every operation on every resource)."""
    groups: dict[tuple[str, str, str, tuple[str, ...]], list[str]] = {}
    for a in entries:
        key = (a.principal, a.resource_type, a.pattern_type, a.operations)
        groups.setdefault(key, []).append(a.name)
    lines = []
    for (principal, rtype, pattern, ops), names in groups.items():
        args = [
            "kafka-acls.sh", "--bootstrap-server", bootstrap, "--command-config",
            "admin.properties", "--add", "--allow-principal", principal,
        ]  # fmt: skip
        for op in ops:
            args += ["--operation", op]
        if pattern != "literal":
            args += ["--resource-pattern-type", pattern]
        for name in names:
            args += [f"--{rtype}", name]
        lines.append(" ".join(a if a.startswith("$") else shlex.quote(a) for a in args))
    return lines


def plan_document(
    settings: Settings,
    pipelines: Sequence[Pipeline],
    principals: Principals,
    input_partitions: int = DEFAULT_INPUT_PARTITIONS,
) -> dict[str, Any]:
    """The plan as plain data (`anonstream topics plan --json`)."""
    entries = acls(settings, pipelines, principals)
    return {
        "replication_factor": settings.replication_factor,
        "topics": [asdict(t) for t in deployment_topics(settings, pipelines, input_partitions)],
        "acls": [asdict(a) for a in entries],
        "commands": kafka_acls_commands(entries, settings.bootstrap_servers),
    }
