"""The `anonstream` command line: one command per job, help on each, no tracebacks for
user mistakes. Settings come from ANONSTREAM_* environment variables and flags."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from anonstream.core.keys import SecretError, load_secret
from anonstream.core.pipeline import Pipeline, PipelineError, find_pipeline, load_pipeline

if TYPE_CHECKING:
    from collections.abc import Callable

    from anonstream.settings import Settings

app = typer.Typer(
    help="anonstream: de-identified, k-anonymous aggregates from raw event streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(help="Run a local single-node Apache Kafka broker (KRaft).")
app.add_typer(kafka_app, name="kafka")
topics_app = typer.Typer(
    help="The topics a deployment needs and the ACLs of each principal: plan, then create.",
    no_args_is_help=True,
)
app.add_typer(topics_app, name="topics")
err = Console(stderr=True)
out = Console()

PipelinesDir = Annotated[
    Path, typer.Option("--pipelines-dir", envvar="ANONSTREAM_PIPELINES_DIR", help="Pipeline files.")
]


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _dp_plans(p: Pipeline) -> Pipeline:
    """A dp pipeline whose noise OpenDP cannot plan is an error here, like a wrong file
    (OpenDP loads only for dp pipelines)."""
    if any(o.privacy == "dp" for o in p.outputs):
        from anonstream.core.dp import DpPlanError, plans

        try:
            plans(p)
        except DpPlanError as exc:
            fail(str(exc))
    return p


def _pipeline(name: str, directory: Path) -> Pipeline:
    try:
        return _dp_plans(find_pipeline(name, directory))
    except PipelineError as exc:
        fail(str(exc))


def _all_pipelines(directory: Path, names: list[str] | None = None) -> list[Pipeline]:
    if names:
        return [_pipeline(n, directory) for n in names]
    files = sorted(directory.glob("*.yaml"))
    if not files:
        fail(f"no pipeline files (*.yaml) in {directory}")
    try:
        pipes = [_dp_plans(load_pipeline(f)) for f in files]
    except PipelineError as exc:
        fail(str(exc))
    names = [p.name for p in pipes]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # engines, metrics and checkpoints are keyed by the name
        fail(f"pipeline {twice[0]} is declared by more than one file in {directory}")
    from anonstream.core.budget import check_shared_budgets

    try:
        check_shared_budgets(pipes)
    except ValueError as exc:
        fail(str(exc))
    return pipes


def _secret(demo: bool) -> object:
    try:
        secret = load_secret(allow_throwaway=demo)
    except SecretError as exc:
        fail(str(exc))
    if secret.throwaway:
        err.print(
            "[bold yellow]WARNING: demo mode: using a random throwaway key. Pseudonyms will "
            "not match any other run. Never use demo mode for real data.[/]"
        )
    return secret


@app.command()
def validate(
    pipelines_dir: PipelinesDir = Path("pipelines"),
    pipeline: Annotated[
        list[str] | None, typer.Option("--pipeline", "-p", help="Pipeline name or YAML path.")
    ] = None,
    check_secret: Annotated[bool, typer.Option(help="Also check the secret.")] = True,
) -> None:
    """Check pipeline files and the secret configuration without starting anything."""
    pipes = _all_pipelines(pipelines_dir, pipeline)
    for p in pipes:
        out.print(f"[green]ok[/] {p.source_file}: pipeline {p.name} v{p.version}, k={p.k}")
        if any(o.privacy == "dp" for o in p.outputs):
            from anonstream.explain_dp import warnings

            for w in warnings(p):
                out.print(f"[yellow]warning[/] {p.name}: {w}", markup=True, highlight=False)
    if check_secret:
        try:
            s = load_secret()
        except SecretError as exc:
            fail(str(exc))
        out.print(f"[green]ok[/] secret from {s.source} (fingerprint {s.fingerprint()})")


@app.command()
def explain(
    pipeline: Annotated[str, typer.Option("--pipeline", "-p", help="Pipeline name or YAML path.")],
    pipelines_dir: PipelinesDir = Path("pipelines"),
) -> None:
    """A readable report of what a pipeline does to each field and what it releases."""
    from anonstream.explain import explain_pipeline

    out.print(explain_pipeline(_pipeline(pipeline, pipelines_dir)), markup=False, highlight=False)


@app.command()
def replay(
    pipeline: Annotated[str, typer.Option("--pipeline", "-p", help="Pipeline name or YAML path.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="JSONL file of raw events.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file of releases.")],
    rejects: Annotated[
        Path | None,
        typer.Option(help="JSONL file for rejected lines. SENSITIVE: holds raw events."),
    ] = None,
    pipelines_dir: PipelinesDir = Path("pipelines"),
    demo: Annotated[bool, typer.Option(help="Allow a throwaway key.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    now: Annotated[
        str | None,
        typer.Option(
            help="The clock future event times are judged against (max_future_skew): an "
            "RFC 3339 time, epoch ms, or 'wall'. Default: the input file's modification time."
        ),
    ] = None,
    ledger: Annotated[
        Path | None,
        typer.Option(help="dp outputs: JSONL privacy ledger kept across replays."),
    ] = None,
    allow_rerelease: Annotated[
        bool, typer.Option(help="dp outputs: release already charged windows again (charged).")
    ] = False,
) -> None:
    """Run a pipeline over a JSONL file of raw events, with no broker."""
    from rich.progress import BarColumn, Progress, TextColumn, TransferSpeedColumn

    from anonstream.core.engine import PipelineEngine
    from anonstream.core.keys import MasterSecret
    from anonstream.runtime.replay import replay_clock, replay_file

    p = _pipeline(pipeline, pipelines_dir)
    secret = _secret(demo)
    assert isinstance(secret, MasterSecret)
    if not input.is_file():
        fail(f"input file not found: {input}")
    for path in (output, rejects):
        if path is not None and path.resolve() == input.resolve():
            fail(f"{path} is the input file: replay would overwrite the events it reads")
    try:
        now_ms = replay_clock(now, input)
    except ValueError as exc:
        fail(str(exc))
    book = None
    if ledger is not None or allow_rerelease:
        from anonstream.core.budget import JsonlLedgerStore, Ledger, MemoryLedgerStore

        if p.dp_budget is None:
            fail(f"pipeline {p.name} has no dp output: --ledger and --allow-rerelease need one")
        store = JsonlLedgerStore(ledger) if ledger is not None else MemoryLedgerStore()
        try:
            book = Ledger(p, store, allow_rerelease=allow_rerelease)
        except ValueError as exc:
            fail(str(exc))
    if ledger is None and p.dp_budget is not None:
        err.print(
            "warning: dp outputs without --ledger: this replay's spending starts at 0 and is "
            "not kept, so another replay of these windows spends the whole budget again; "
            "keep one ledger file for every replay whose releases are shared (--ledger)"
        )
    engine = PipelineEngine(p, secret, clock_ms=lambda: now_ms, ledger=book)
    show = progress and sys.stderr.isatty()
    with Progress(
        TextColumn("replay"), BarColumn(), TextColumn("{task.completed:,} lines"),
        TransferSpeedColumn(), console=err, disable=not show,
    ) as bar:  # fmt: skip
        task = bar.add_task("replay", total=None)
        try:
            report = replay_file(
                engine, input, output, rejects, progress=lambda n: bar.advance(task, n)
            )
        except OSError as exc:
            fail(f"{exc.filename}: {exc.strerror}")
    err.print(
        f"{report.lines:,} lines, {report.aggregates:,} aggregates and "
        f"{report.releases - report.aggregates:,} window summaries written to {output}; "
        f"{report.rejected:,} rejected {dict(sorted(report.rejections.items()))}, "
        f"{report.late:,} late"
    )


@app.command()
def worker(
    pipeline: Annotated[
        list[str] | None,
        typer.Option("--pipeline", "-p", help="Run only these pipelines (names or YAML paths)."),
    ] = None,
    pipelines_dir: PipelinesDir = Path("pipelines"),
    bootstrap_servers: Annotated[
        str | None, typer.Option("--bootstrap-servers", "-b", envvar="ANONSTREAM_BOOTSTRAP_SERVERS")
    ] = None,
    group_id: Annotated[str | None, typer.Option(envvar="ANONSTREAM_GROUP_ID")] = None,
    web_port: Annotated[int | None, typer.Option(envvar="ANONSTREAM_WEB_PORT")] = None,
    idle_close_seconds: Annotated[
        float | None,
        typer.Option(envvar="ANONSTREAM_IDLE_CLOSE_SECONDS", help="Close windows when idle."),
    ] = None,
    demo: Annotated[
        bool, typer.Option(help="Allow a throwaway key (never for real data).")
    ] = False,
    stop_at_end: Annotated[
        bool,
        typer.Option(
            help="Backfill: stop once the end offsets seen at start are processed, "
            "releasing every window."
        ),
    ] = False,
    instance_id: Annotated[
        str | None,
        typer.Option(envvar="ANONSTREAM_INSTANCE_ID", help="Stable id of this worker slot."),
    ] = None,
    log_level: Annotated[str, typer.Option(envvar="ANONSTREAM_LOG_LEVEL")] = "info",
    exit_on_missing_topics: Annotated[
        bool | None,
        typer.Option(
            "--exit-on-missing-topics",
            envvar="ANONSTREAM_EXIT_ON_MISSING_TOPICS",
            help="Exit (1) when an input topic is missing, instead of waiting for it.",
        ),
    ] = None,
    startup_timeout: Annotated[
        float | None,
        typer.Option(
            envvar="ANONSTREAM_STARTUP_TIMEOUT_SECONDS",
            help="Seconds start-up may take before the worker exits (1).",
        ),
    ] = None,
    allow_rerelease: Annotated[
        bool | None,
        typer.Option(
            "--allow-rerelease",
            envvar="ANONSTREAM_ALLOW_RERELEASE",
            help="dp outputs: release already charged windows again (charged again).",
        ),
    ] = None,
) -> None:
    """Run the Kafka worker: raw topics in, de-identified aggregates out."""
    from anonstream.core.keys import MasterSecret
    from anonstream.runtime.run import run_worker

    settings = _settings(
        bootstrap_servers=bootstrap_servers, group_id=group_id, web_port=web_port,
        idle_close_seconds=idle_close_seconds, instance_id=instance_id,
        exit_on_missing_topics=exit_on_missing_topics, startup_timeout_seconds=startup_timeout,
        allow_rerelease=allow_rerelease,
    )  # fmt: skip
    pipes = _all_pipelines(pipelines_dir, pipeline)
    secret = _secret(demo)
    assert isinstance(secret, MasterSecret)
    logging.basicConfig(
        level=log_level.upper(), format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
        force=True,
    )  # fmt: skip
    raise typer.Exit(
        run_worker(settings, pipes, secret, log_level=log_level, stop_at_end=stop_at_end)
    )


def _settings(**flags: object) -> Settings:
    """Settings from ANONSTREAM_* variables, overridden by the flags given (not None)."""
    from anonstream.settings import Settings

    try:
        return Settings(**{k: v for k, v in flags.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            (f"ANONSTREAM_{'_'.join(str(x) for x in e['loc']).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        fail(f"bad setting: {problems}")


@app.command()
def generate(
    bootstrap_servers: Annotated[
        str, typer.Option("--bootstrap-servers", "-b", envvar="ANONSTREAM_BOOTSTRAP_SERVERS")
    ] = "127.0.0.1:9092",
    count: Annotated[int, typer.Option(help="Events to produce.")] = 10_000,
    kind: Annotated[str, typer.Option(help="web, usage or mixed.")] = "mixed",
    rate: Annotated[float, typer.Option(help="Events/s, 0 = as fast as possible.")] = 0.0,
    users: Annotated[int, typer.Option()] = 1000,
    seed: Annotated[int, typer.Option()] = 7,
    start: Annotated[
        str | None,
        typer.Option(
            help="Event time of the first event: epoch ms or RFC 3339 "
            "(2026-11-30T00:00Z). Default: now, so that a second run is not late."
        ),
    ] = None,
) -> None:
    """Produce synthetic raw events (fake identifiers) to the raw topics."""
    import time

    from anonstream.synthetic.produce import main as produce_main

    start = start or str(int(time.time() * 1000))
    code = produce_main(
        ["--bootstrap", bootstrap_servers, "--count", str(count), "--kind", kind,
         "--rate", str(rate), "--users", str(users), "--seed", str(seed), "--start", start]
    )  # fmt: skip
    raise typer.Exit(code)


@app.command()
def audit(
    input: Annotated[
        Path | None, typer.Option("--input", "-i", help="JSONL file of releases.")
    ] = None,
    topic: Annotated[str | None, typer.Option(help="Read the releases from this topic.")] = None,
    bootstrap_servers: Annotated[
        str | None, typer.Option("--bootstrap-servers", "-b", envvar="ANONSTREAM_BOOTSTRAP_SERVERS")
    ] = None,
    k: Annotated[int | None, typer.Option(help="Require at least this k everywhere.")] = None,
    assume_totals: Annotated[
        bool, typer.Option(help="Read '*' cells as totals of their children (stricter).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    ledger: Annotated[
        Path | None, typer.Option(help="dp: the privacy ledger (JSONL) to check windows against.")
    ] = None,
    ledger_topic: Annotated[
        list[str] | None,
        typer.Option(
            help="dp: read the privacy ledger from this topic (repeat it: several topics, "
            "e.g. anon.ledger and an earlier version's anon.ledger.<group>)."
        ),
    ] = None,
) -> None:
    """Re-check a stream of releases on its own: k, identifiers, duplicates, differencing."""
    from anonstream.audit import run_audit_cli

    raise typer.Exit(run_audit_cli(
        input, topic, bootstrap_servers, k, assume_totals, as_json, ledger, ledger_topic
    ))  # fmt: skip


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """The load benchmark (ceiling, naive Faust, quixstreams, anonstream, and a scale run of
    1, 2, 3 scale-out workers) on a local broker. Options are those of
    `python -m anonstream_load.bench --help` (--events, --users, --partitions, --runs,
    --scale, --soak, ...)."""
    raise typer.Exit(_tool_command("bench")(ctx.args))


def _tool_command(name: str) -> Callable[[list[str]], int]:
    """A command that an installed tool package provides (entry point group
    "anonstream.commands", see pyproject.toml): the product imports no tool by name, so it
    installs and runs without them."""
    from importlib.metadata import entry_points

    for entry in entry_points(group="anonstream.commands", name=name):
        command: Callable[[list[str]], int] = entry.load()
        return command
    fail(f"`anonstream {name}` needs the load tools (anonstream_load), which are not installed")


@app.command()
def dashboard(
    topic: Annotated[
        list[str] | None,
        typer.Option(
            "--topic", "-t", help="Output topic to show (repeat). Default: every pipeline's."
        ),
    ] = None,
    bootstrap_servers: Annotated[
        str, typer.Option("--bootstrap-servers", "-b", envvar="ANONSTREAM_BOOTSTRAP_SERVERS")
    ] = "127.0.0.1:9092",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8050,
    pipelines_dir: PipelinesDir = Path("pipelines"),
) -> None:
    """A read-only web dashboard: the latest released aggregates of each pipeline as charts,
    read from the output topics. Runs until Ctrl-C."""
    from anonstream.dashboard import run_dashboard

    topics = list(dict.fromkeys(topic or [])) or sorted(
        {o.topic for p in _all_pipelines(pipelines_dir) for o in p.outputs}
    )
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def ready() -> None:
        from rich.markup import escape as esc

        out.print(f"dashboard of {esc(', '.join(topics))} on [bold]{esc(url)}[/] (Ctrl-C to stop)")

    try:
        run_dashboard(bootstrap_servers, topics, host, port, on_ready=ready)
    except OSError as exc:
        fail(f"cannot serve the dashboard on {host}:{port}: {exc}", 1)


Bootstrap = Annotated[
    str | None, typer.Option("--bootstrap-servers", "-b", envvar="ANONSTREAM_BOOTSTRAP_SERVERS")
]
InputPartitions = Annotated[int, typer.Option(min=1, help="Partitions of each input (raw) topic.")]
ReplicationFactor = Annotated[
    int | None,
    typer.Option(
        min=1, envvar="ANONSTREAM_REPLICATION_FACTOR",
        help="Replicas of each topic created. Default: 3, or the number of brokers if fewer.",
    ),
]  # fmt: skip
PipelineNames = Annotated[
    list[str] | None, typer.Option("--pipeline", "-p", help="Only these pipelines.")
]


def _plan_inputs(
    pipelines_dir: Path, pipeline: list[str] | None, **flags: object
) -> tuple[Settings, list[Pipeline]]:
    return _settings(**flags), _all_pipelines(pipelines_dir, pipeline)


@topics_app.command("plan")
def topics_plan_cmd(
    pipeline: PipelineNames = None,
    pipelines_dir: PipelinesDir = Path("pipelines"),
    bootstrap_servers: Bootstrap = None,
    input_partitions: InputPartitions = 6,
    replication_factor: ReplicationFactor = None,
    worker_principal: Annotated[str, typer.Option(help="The worker's principal.")] = (
        "User:anonstream"
    ),
    reader_principal: Annotated[str, typer.Option(help="A partner reading aggregates.")] = (
        "User:partner"
    ),
    dashboard_principal: Annotated[str, typer.Option(help="The dashboard's principal.")] = (
        "User:dashboard"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """List the topics a deployment needs and the ACLs each principal must be granted
    (as kafka-acls commands). Connects to nothing."""
    import json

    from anonstream.broker.plan import Principals, plan_document

    settings, pipes = _plan_inputs(
        pipelines_dir, pipeline, bootstrap_servers=bootstrap_servers,
        replication_factor=replication_factor,
    )  # fmt: skip
    principals = Principals(worker_principal, reader_principal, dashboard_principal)
    doc = plan_document(settings, pipes, principals, input_partitions)
    if as_json:
        out.print_json(json.dumps(doc))
        return
    rf = doc["replication_factor"] or "3 (or the number of brokers if fewer)"
    out.print(f"[bold]Topics[/] (replication factor {rf})", highlight=False)
    for t in doc["topics"]:
        configs = ", ".join(f"{k}={v}" for k, v in t["configs"].items())
        out.print(
            f"  {t['name']}  partitions={t['partitions']}  {t['role']}"
            + (f"  {configs}" if configs else "") + (f"  ({t['note']})" if t["note"] else ""),
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    out.print("[bold]ACLs[/] (allow, any host)", highlight=False)
    for a in doc["acls"]:
        pattern = " (prefix)" if a["pattern_type"] == "prefixed" else ""
        out.print(
            f"  {a['principal']}: {'+'.join(a['operations'])} on {a['resource_type']} "
            f"{a['name']}{pattern}  ({a['why']})",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    out.print("[bold]As kafka-acls commands[/] (admin.properties: the admin's client settings)")
    for line in doc["commands"]:
        out.print(line, markup=False, highlight=False, soft_wrap=True)


@topics_app.command("create")
def topics_create_cmd(
    pipeline: PipelineNames = None,
    pipelines_dir: PipelinesDir = Path("pipelines"),
    bootstrap_servers: Bootstrap = None,
    input_partitions: InputPartitions = 6,
    replication_factor: ReplicationFactor = None,
    only_inputs: Annotated[bool, typer.Option(help="Create only the input (raw) topics.")] = False,
) -> None:
    """Create the topics of `anonstream topics plan` that do not exist yet, with the
    worker's SASL/TLS settings (ANONSTREAM_SECURITY_PROTOCOL, ...). Existing topics are
    left as they are; one with another partition count is an error."""
    from anonstream.broker.local import BrokerError
    from anonstream.broker.plan import deployment_topics
    from anonstream.broker.topics import create_topics

    settings, pipes = _plan_inputs(
        pipelines_dir, pipeline, bootstrap_servers=bootstrap_servers,
        replication_factor=replication_factor,
    )  # fmt: skip
    specs = deployment_topics(settings, pipes, input_partitions)
    if only_inputs:
        specs = [t for t in specs if t.role == "input"]
    try:
        created = create_topics(
            settings.bootstrap_servers, {t.name: t.partitions for t in specs},
            {t.name: t.configs for t in specs if t.configs},
            replication_factor=settings.replication_factor,
            timeout=settings.startup_timeout_seconds,
            client_options=settings.kafka_client_options(),
        )  # fmt: skip
    except (BrokerError, KafkaError, OSError) as exc:
        fail(f"could not create topics on {settings.bootstrap_servers}: {exc}", 1)
    for t in specs:
        state = "created" if t.name in created else "exists"
        out.print(f"{state:8} {t.name} ({t.partitions} partitions)", markup=False, highlight=False)


@kafka_app.command("up")
def kafka_up_cmd(
    port: Annotated[
        int | None,
        typer.Option(help="Client port. Default: 9092 when it is free, else any free port."),
    ] = None,
    topics: Annotated[
        bool, typer.Option(help="Create the pipelines' input topics (see --partitions).")
    ] = True,
    partitions: Annotated[int, typer.Option(min=1, help="Partitions of each input topic.")] = 4,
    pipelines_dir: PipelinesDir = Path("pipelines"),
) -> None:
    """Start a detached local broker (jars fetched once from Maven Central)."""
    from anonstream.broker.local import DEFAULT_PORT, BrokerError, kafka_up, port_is_free

    if port is None and port_is_free("127.0.0.1", DEFAULT_PORT):
        port = DEFAULT_PORT
    try:
        rec = kafka_up(port=port)
    except BrokerError as exc:
        fail(str(exc), 1)
    bootstrap = rec.bootstrap_servers
    out.print(f"Kafka is up: bootstrap servers [bold]{bootstrap}[/]")
    if not bootstrap.endswith(f":{DEFAULT_PORT}"):
        out.print(f"(port {DEFAULT_PORT} was taken: use -b {bootstrap}, or the line below)")
    out.print(f"export ANONSTREAM_BOOTSTRAP_SERVERS={bootstrap}")
    if topics:
        _create_local_inputs(bootstrap, pipelines_dir, partitions)


def _create_local_inputs(bootstrap: str, pipelines_dir: Path, partitions: int) -> None:
    from anonstream.broker.topics import create_topics

    files = sorted(pipelines_dir.glob("*.yaml"))
    if not files:
        out.print(f"no pipeline files in {pipelines_dir}: no input topics created")
        return
    try:
        names = sorted({load_pipeline(f).source_topic for f in files})
        create_topics(bootstrap, dict.fromkeys(names, partitions))
    except (PipelineError, KafkaError, OSError, RuntimeError) as exc:
        fail(f"the broker is up, but the input topics could not be created: {exc}", 1)
    out.print(f"input topics: {', '.join(names)} ({partitions} partitions each)")


@kafka_app.command("down")
def kafka_down_cmd() -> None:
    """Stop the broker started by `anonstream kafka up` and remove its data."""
    from anonstream.broker.local import BrokerError, kafka_down

    try:
        kafka_down()
    except BrokerError as exc:
        fail(str(exc), 1)
    out.print("Kafka is down.")


@kafka_app.command("status")
def kafka_status_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Show the broker started by `anonstream kafka up`, if any (exit 1 if none is running)."""
    import json

    from anonstream.broker.local import BrokerError, kafka_status

    try:
        rec = kafka_status()
    except BrokerError as exc:
        fail(str(exc), 1)
    if as_json:
        out.print_json(json.dumps(rec))
    elif rec is None:
        out.print("no broker started by `anonstream kafka up` is running")
    else:
        state = "running" if rec["running"] else "not running (`kafka down` clears the record)"
        rows = [("state", state), ("bootstrap", rec["bootstrap"]), ("pid", rec["pid"])]
        rows += [(k.replace("_", " "), rec[k]) for k in (
            "kafka_version", "started_at", "data_dir", "log_file") if k in rec]  # fmt: skip
        for key, value in rows:
            out.print(f"{key:<14} {value}", markup=False, highlight=False, soft_wrap=True)
    if rec is None or not rec["running"]:
        raise typer.Exit(1)


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="Synthetic events to produce.")] = 20_000,
    users: Annotated[int, typer.Option(help="Distinct synthetic people.")] = 400,
    pipelines_dir: PipelinesDir = Path("pipelines"),
) -> None:
    """Start a broker and a worker, send a burst of synthetic events, print releases."""
    from anonstream.demo import run_demo

    raise typer.Exit(run_demo(events=events, users=users, pipelines_dir=pipelines_dir))


def main() -> None:
    if sys.argv[1:2] == ["worker"]:  # stops on SIGTERM/SIGINT from the first moment
        from anonstream.runtime.run import stop_on_signals

        stop_on_signals()
    logging.basicConfig(level=os.environ.get("ANONSTREAM_LOG_LEVEL", "WARNING").upper())
    app()


if __name__ == "__main__":
    main()
