"""Static checks of docker/: what can be verified without a Docker engine.

The Dockerfile and compose.yaml name `anonstream` commands, options, settings and files.
These tests tie each of them to the code, so that a renamed command or option, a moved
file or a broker setting changed in only one place fails here instead of in a user's
`docker compose up`.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer
import typer.main
import yaml

from anonstream.broker.local import broker_properties
from anonstream.cli import app
from anonstream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"

# Local-broker settings the compose broker must share, value for value. Left out: the
# addresses and paths (host-specific), controller.quorum.bootstrap.servers (the image
# formats without --standalone, so compose names the controller with quorum voters), and
# the cleaner buffer (lowered locally only to fit a 512 MiB heap).
MIRRORED = (
    "process.roles",
    "node.id",
    "controller.listener.names",
    "inter.broker.listener.name",
    "listener.security.protocol.map",
    "num.partitions",
    "default.replication.factor",
    "min.insync.replicas",
    "auto.create.topics.enable",
    "offsets.topic.replication.factor",
    "offsets.topic.num.partitions",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "transaction.state.log.num.partitions",
    "share.coordinator.state.topic.replication.factor",
    "share.coordinator.state.topic.min.isr",
    "group.initial.rebalance.delay.ms",
    "log.retention.check.interval.ms",
)


# ------------------------------------------------------------------------------ helpers


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction, continuation lines joined."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued instruction"
    return out


def instruction(keyword: str) -> list[str]:
    return [rest for kw, rest in dockerfile_instructions() if kw == keyword]


def exec_form(text: str) -> list[str]:
    value = json.loads(text)
    assert isinstance(value, list), f"not the exec (JSON array) form: {text}"
    assert all(isinstance(x, str) for x in value), text
    return value


def only(keyword: str) -> str:
    values = instruction(keyword)
    assert len(values) == 1, f"expected one {keyword}, found {len(values)}"
    return values[0]


def image_argv() -> list[str]:
    return exec_form(only("ENTRYPOINT")) + exec_form(only("CMD"))


def as_list(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else list(value)


def service_argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: its entrypoint (or the image's) + command (or the image's)."""
    entry = as_list(service.get("entrypoint", exec_form(only("ENTRYPOINT"))))
    command = as_list(service.get("command", exec_form(only("CMD"))))
    return entry + command


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def typer_tree(t: typer.Typer) -> dict[str, Any]:
    """Command names of a Typer app as the CLI spells them: {name: None | {sub: ...}}."""
    tree: dict[str, Any] = {}
    for info in t.registered_commands:
        assert info.callback is not None
        name = info.name or info.callback.__name__.lower().replace("_", "-")
        tree[name] = None
    for group in t.registered_groups:
        assert group.name is not None and group.typer_instance is not None
        tree[group.name] = typer_tree(group.typer_instance)
    return tree


def check_cli_call(args: list[str]) -> None:
    """`args` (after the program name) name a command of the CLI and parse as its options."""
    tree: Any = typer_tree(app)
    command: Any = typer.main.get_command(app)
    words = list(args)
    while isinstance(tree, dict):
        assert words, "a command group named without a command"
        name = words.pop(0)
        assert name in tree, f"`anonstream {name}` is not a command (known: {sorted(tree)})"
        tree = tree[name]
        command = command.commands[name]
    # Parses the options exactly as the CLI would (unknown option or bad value: raises),
    # without running the command.
    command.make_context(args[0], words)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    s = compose.get("services")
    assert isinstance(s, dict)
    return s


# -------------------------------------------------------------------------------- compose


def test_compose_has_the_three_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"kafka", "worker", "generator"}


def test_kafka_is_the_official_image_in_kraft_single_node_mode(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = env_of(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert env.get("CLUSTER_ID"), "the image formats its storage with CLUSTER_ID"


def test_compose_broker_mirrors_the_local_broker_settings(
    services: dict[str, dict[str, Any]],
) -> None:
    local = broker_properties(9092, 9093, Path("/unused"))
    env = env_of(services["kafka"])
    for key in MIRRORED:
        name = "KAFKA_" + key.upper().replace(".", "_")
        assert env.get(name) == local[key], (
            f"{name}: compose {env.get(name)!r}, local {local[key]!r}"
        )


def test_worker_runs_the_cli_worker_with_a_secret_file(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    worker = services["worker"]
    assert service_argv(worker)[:2] == ["anonstream", "worker"]
    assert (DOCKER / worker["build"]["context"] / worker["build"]["dockerfile"]).resolve() == (
        DOCKERFILE.resolve()
    )
    env = env_of(worker)
    assert env["ANONSTREAM_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert "ANONSTREAM_SECRET" not in env, "the secret never goes in the compose file"
    secret_names = [s if isinstance(s, str) else s["source"] for s in worker["secrets"]]
    assert env["ANONSTREAM_SECRET_FILE"] in {f"/run/secrets/{n}" for n in secret_names}
    for name in secret_names:
        assert name in compose["secrets"]
    assert worker["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_worker_pipelines_are_mounted_where_the_worker_looks(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = services["worker"]
    target = env_of(worker)["ANONSTREAM_PIPELINES_DIR"]
    mounts = {}
    for volume in worker["volumes"]:
        source, dest, *_ = volume.split(":")
        mounts[dest] = (DOCKER / source).resolve()
    assert target in mounts
    assert mounts[target] == (ROOT / "pipelines").resolve()
    assert sorted(mounts[target].glob("*.yaml")), "no pipeline files to mount"


def test_generator_produces_synthetic_events_to_the_broker(
    services: dict[str, dict[str, Any]],
) -> None:
    assert service_argv(services["generator"]) == [
        "anonstream", "generate", "--bootstrap-servers", "kafka:9092",
        "--count", "100000", "--rate", "2000",
    ]  # fmt: skip


# ----------------------------------------------------------------------------- Dockerfile


def test_dockerfile_base_entrypoint_and_default_command() -> None:
    assert only("FROM") == "python:3.11-slim"
    assert exec_form(only("ENTRYPOINT")) == ["anonstream"]
    assert exec_form(only("CMD")) == ["worker"]


def test_dockerfile_runs_as_a_non_root_user() -> None:
    users = instruction("USER")
    assert users, "no USER: the container would run as root"
    assert users[-1] not in ("root", "0", "0:0")


def test_dockerfile_exposes_the_worker_web_port() -> None:
    port = Settings.model_fields["web_port"].default
    assert only("EXPOSE") == str(port) == "6066"


def test_healthcheck_asks_health_with_python_urllib() -> None:
    options, _, command = only("HEALTHCHECK").partition("CMD ")
    assert options.strip().startswith("--")
    argv = exec_form(command)
    assert argv[:2] == ["python", "-c"]
    code = argv[2]
    assert "urllib.request" in code and "/health" in code
    compile(code, "<healthcheck>", "exec")  # at least valid Python


def test_dockerfile_copies_files_that_exist() -> None:
    for args in instruction("COPY"):
        *sources, _dest = [a for a in args.split() if not a.startswith("--")]
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


# ------------------------------------------------------------------------------------ CLI


def test_every_command_named_in_docker_files_exists_in_the_cli(
    services: dict[str, dict[str, Any]],
) -> None:
    ours = [s for s in services.values() if "build" in s or s.get("image") == "anonstream:local"]
    assert len(ours) == 2  # the worker and the generator run this project's image
    calls = [image_argv(), *(service_argv(s) for s in ours)]
    for argv in calls:
        assert argv[0] == "anonstream", argv
        check_cli_call(argv[1:])


def test_the_cli_check_rejects_unknown_commands_and_options() -> None:
    with pytest.raises(AssertionError):
        check_cli_call(["no-such-command"])
    with pytest.raises(Exception, match="no-such-option"):
        check_cli_call(["generate", "--no-such-option", "1"])
    check_cli_call(["kafka", "status"])
