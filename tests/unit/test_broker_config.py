"""The local broker's generated configuration and jar cache, without starting Kafka."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from anonstream.broker import local
from anonstream.broker.local import (
    BrokerError,
    LocalKafka,
    ensure_jars,
    free_ports,
    kafka_down,
    kafka_status,
    random_cluster_id,
)


def read_properties(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            props[key] = value
    return props


def assert_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_server_properties_single_node() -> None:
    kafka = LocalKafka(overrides={"message.max.bytes": 2_000_000, "log.cleaner.enable": False})
    data_dir = kafka.prepare()
    try:
        assert data_dir.name.startswith("anonstream-kafka-")
        props = read_properties(data_dir / "server.properties")
        port, cport = kafka.port, kafka.controller_port
        assert port is not None and cport is not None
        assert port != cport
        assert kafka.bootstrap_servers == f"127.0.0.1:{port}"
        expected = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.num.partitions": "4",
            # overrides win and are stringified
            "message.max.bytes": "2000000",
            "log.cleaner.enable": "false",
        }
        assert {k: props.get(k) for k in expected} == expected
        log_dir = Path(props["log.dirs"])
        assert log_dir.parent == data_dir and log_dir.is_dir()
        # Nothing listens on the chosen ports yet: both are free.
        assert_free(port)
        assert_free(cport)
        log4j = (data_dir / "log4j2.properties").read_text()
        assert "${sys:kafka.logs.dir}/server.log" in log4j
        assert "Console" not in log4j
        assert (data_dir / "logs").is_dir()
    finally:
        kafka.stop()
    assert not data_dir.exists()
    assert kafka.pid is None


def test_fixed_port_is_used() -> None:
    (port,) = free_ports(1)
    kafka = LocalKafka(port=port)
    try:
        kafka.prepare()
        assert kafka.bootstrap_servers == f"127.0.0.1:{port}"
        assert kafka.controller_port != port
    finally:
        kafka.stop()


def test_free_ports_distinct() -> None:
    ports = free_ports(4)
    assert len(set(ports)) == 4
    for port in ports:
        assert_free(port)


def test_bootstrap_before_start_is_an_error() -> None:
    with pytest.raises(BrokerError, match="start"):
        _ = LocalKafka().bootstrap_servers


def test_random_cluster_id_is_a_kafka_uuid() -> None:
    for _ in range(200):
        cid = random_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


# -- jar cache ------------------------------------------------------------------------------


def fake_bin(tmp_path: Path, mvn_script: str) -> Path:
    """A PATH dir holding the real java and a fake mvn."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    java = local.find_java()
    (bindir / "java").symlink_to(java)
    mvn = bindir / "mvn"
    mvn.write_text("#!/bin/sh\nPATH=/usr/bin:/bin\n" + mvn_script)
    mvn.chmod(mvn.stat().st_mode | stat.S_IEXEC)
    return bindir


FAKE_MVN_OK = """\
echo run >> "$(dirname "$0")/calls"
for arg in "$@"; do
  case "$arg" in -DoutputDirectory=*) out="${arg#-DoutputDirectory=}";; esac
done
mkdir -p "$out"
touch "$out/kafka_2.13-4.1.1.jar" "$out/log4j-slf4j-impl-2.24.3.jar" "$out/kafka-clients-4.1.1.jar"
"""


def test_fetch_once_then_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = fake_bin(tmp_path, FAKE_MVN_OK)
    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("ANONSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    libs = ensure_jars(quiet=True)
    assert libs == tmp_path / "cache" / "kafka-4.1.1" / "libs"
    marker = json.loads((libs.parent / ".complete").read_text())
    assert "kafka_2.13-4.1.1.jar" in marker["jars"]
    assert ensure_jars(quiet=True) == libs
    assert (bindir / "calls").read_text().count("run") == 1
    # A copy without the marker (interrupted fetch) is fetched again.
    (libs.parent / ".complete").unlink()
    ensure_jars(quiet=True)
    assert (bindir / "calls").read_text().count("run") == 2


def test_fetch_prints_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, FAKE_MVN_OK)))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    ensure_jars(tmp_path / "cache")
    err = capsys.readouterr().err
    assert "fetching Kafka 4.1.1 jars with Maven into" in err
    assert "(first run only)" in err


def test_maven_failure_is_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = 'for i in $(seq 1 100); do echo "line $i"; done\necho "[ERROR] no network"\nexit 1\n'
    monkeypatch.setenv("PATH", str(fake_bin(tmp_path, script)))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(BrokerError) as info:
        ensure_jars(tmp_path / "cache", quiet=True)
    message = str(info.value)
    assert "exit code 1" in message and "[ERROR] no network" in message
    assert "line 1\n" not in message  # only the tail
    assert not (tmp_path / "cache" / "kafka-4.1.1" / ".complete").exists()


def test_missing_maven_and_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(BrokerError, match="Maven was not found"):
        ensure_jars(tmp_path / "cache", quiet=True)
    with pytest.raises(BrokerError, match="Java was not found"):
        local.find_java()


# -- kafka up/down state file ---------------------------------------------------------------


def test_status_and_down_without_state(tmp_path: Path) -> None:
    assert kafka_status(tmp_path / "none.json") is None
    assert kafka_down(tmp_path / "none.json") is None


def test_down_never_signals_a_foreign_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "anonstream-kafka-test"
    data_dir.mkdir()
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state = tmp_path / "kafka-up.json"
        record = {
            "pid": foreign.pid,
            "bootstrap": "127.0.0.1:1",
            "data_dir": str(data_dir),
            "started_at": "2020-01-01T00:00:00+00:00",
        }
        state.write_text(json.dumps(record))
        status = kafka_status(state)
        assert status is not None and status["running"] is False
        result = kafka_down(state)
        assert result is not None and result["was_running"] is False
        assert foreign.poll() is None and psutil.pid_exists(foreign.pid)
        assert not state.exists() and not data_dir.exists()
    finally:
        foreign.kill()
        foreign.wait()


def test_state_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANONSTREAM_STATE_DIR", str(tmp_path))
    assert local.default_state_file() == tmp_path / "kafka-up.json"
    monkeypatch.delenv("ANONSTREAM_STATE_DIR")
    expected = Path(os.path.expanduser("~/.cache/anonstream")) / "kafka-up.json"
    assert local.default_state_file() == expected


def test_clean_stale_data_dirs_keeps_young_and_used_dirs() -> None:
    old = Path(tempfile.mkdtemp(prefix="anonstream-kafka-"))
    used = Path(tempfile.mkdtemp(prefix="anonstream-kafka-"))
    young = Path(tempfile.mkdtemp(prefix="anonstream-kafka-"))
    for path in (old, used):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(used)])
    try:
        removed = local.clean_stale_data_dirs(min_age=3600)
        assert old in removed and not old.exists()
        assert used.exists() and young.exists()
    finally:
        holder.kill()
        holder.wait()
        for path in (old, used, young):
            shutil.rmtree(path, ignore_errors=True)
