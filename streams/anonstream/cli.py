"""The `anonstream` command line: one command per job, help on each, no tracebacks for
user mistakes. Settings come from ANONSTREAM_* environment variables and flags."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from anonstream.core.keys import SecretError, load_secret
from anonstream.core.pipeline import Pipeline, PipelineError, find_pipeline, load_pipeline

app = typer.Typer(
    help="anonstream: de-identified, k-anonymous aggregates from raw event streams.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(help="Run a local single-node Apache Kafka broker (KRaft).")
app.add_typer(kafka_app, name="kafka")
err = Console(stderr=True)
out = Console()

PipelinesDir = Annotated[
    Path, typer.Option("--pipelines-dir", envvar="ANONSTREAM_PIPELINES_DIR", help="Pipeline files.")
]


def fail(message: str, code: int = 2) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _pipeline(name: str, directory: Path) -> Pipeline:
    try:
        return find_pipeline(name, directory)
    except PipelineError as exc:
        fail(str(exc))


def _all_pipelines(directory: Path, names: list[str] | None = None) -> list[Pipeline]:
    if names:
        return [_pipeline(n, directory) for n in names]
    files = sorted(directory.glob("*.yaml"))
    if not files:
        fail(f"no pipeline files (*.yaml) in {directory}")
    try:
        return [load_pipeline(f) for f in files]
    except PipelineError as exc:
        fail(str(exc))


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
    pipeline: Annotated[list[str] | None, typer.Option("--pipeline", "-p")] = None,
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
    pipeline: Annotated[str, typer.Option("--pipeline", "-p", help="Name or YAML path.")],
    pipelines_dir: PipelinesDir = Path("pipelines"),
) -> None:
    """A readable report of what a pipeline does to each field and what it releases."""
    from anonstream.explain import explain_pipeline

    out.print(explain_pipeline(_pipeline(pipeline, pipelines_dir)), markup=False, highlight=False)


@app.command()
def replay(
    pipeline: Annotated[str, typer.Option("--pipeline", "-p", help="Name or YAML path.")],
    input: Annotated[Path, typer.Option("--input", "-i", help="JSONL file of raw events.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="JSONL file of releases.")],
    rejects: Annotated[
        Path | None,
        typer.Option(help="JSONL file for rejected lines. SENSITIVE: holds raw events."),
    ] = None,
    pipelines_dir: PipelinesDir = Path("pipelines"),
    demo: Annotated[bool, typer.Option(help="Allow a throwaway key.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
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
    from anonstream.runtime.replay import replay_file

    p = _pipeline(pipeline, pipelines_dir)
    secret = _secret(demo)
    assert isinstance(secret, MasterSecret)
    if not input.is_file():
        fail(f"input file not found: {input}")
    for path in (output, rejects):
        if path is not None and path.resolve() == input.resolve():
            fail(f"{path} is the input file: replay would overwrite the events it reads")
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
    engine = PipelineEngine(p, secret, ledger=book)
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
        list[str] | None, typer.Option("--pipeline", "-p", help="Run only these pipelines.")
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
) -> None:
    """Run the Kafka worker: raw topics in, de-identified aggregates out."""
    from anonstream.core.keys import MasterSecret
    from anonstream.settings import Settings

    overrides = {
        k: v
        for k, v in {
            "bootstrap_servers": bootstrap_servers, "group_id": group_id, "web_port": web_port,
            "idle_close_seconds": idle_close_seconds, "instance_id": instance_id,
        }.items()
        if v is not None
    }  # fmt: skip
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"ANONSTREAM_{'_'.join(str(x) for x in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        fail(f"bad setting: {problems}")
    pipes = _all_pipelines(pipelines_dir, pipeline)
    secret = _secret(demo)
    assert isinstance(secret, MasterSecret)
    from anonstream.runtime.run import run_worker

    raise typer.Exit(
        run_worker(settings, pipes, secret, log_level=log_level, stop_at_end=stop_at_end)
    )


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
) -> None:
    """Produce synthetic raw events (fake identifiers) to the raw topics."""
    from anonstream_load.produce import main as produce_main

    code = produce_main(
        ["--bootstrap", bootstrap_servers, "--count", str(count), "--kind", kind,
         "--rate", str(rate), "--users", str(users), "--seed", str(seed)]
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
) -> None:
    """Re-check a stream of releases on its own: k, identifiers, duplicates, differencing."""
    from anonstream.audit import run_audit_cli

    raise typer.Exit(run_audit_cli(input, topic, bootstrap_servers, k, assume_totals, as_json))


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """The load benchmark (ceiling, naive Faust, quixstreams, anonstream, and a scale run of
    1, 2, 3 scale-out workers) on a local broker. Options are those of
    `python -m anonstream_load.bench --help` (--events, --users, --partitions, --runs,
    --scale, --soak, ...)."""
    from anonstream_load.bench import main as bench_main

    raise typer.Exit(bench_main(ctx.args))


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


@kafka_app.command("up")
def kafka_up_cmd() -> None:
    """Start a detached local broker (jars fetched once from Maven Central)."""
    from anonstream.broker.local import BrokerError, kafka_up

    try:
        rec = kafka_up()
    except BrokerError as exc:
        fail(str(exc), 1)
    info = rec if isinstance(rec, dict) else {"bootstrap": getattr(rec, "bootstrap_servers", "")}
    out.print(f"Kafka is up: bootstrap servers [bold]{info.get('bootstrap')}[/]")
    out.print(f"export ANONSTREAM_BOOTSTRAP_SERVERS={info.get('bootstrap')}")


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
def kafka_status_cmd() -> None:
    """Show the broker started by `anonstream kafka up`, if any."""
    from anonstream.broker.local import BrokerError, kafka_status

    try:
        rec = kafka_status()
    except BrokerError as exc:
        fail(str(exc), 1)
    if rec is None:
        out.print("no broker started by `anonstream kafka up` is running")
        raise typer.Exit(1)
    out.print(rec)


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
    logging.basicConfig(level=os.environ.get("ANONSTREAM_LOG_LEVEL", "WARNING").upper())
    app()


if __name__ == "__main__":
    main()
