"""docker/kubernetes/: the manifests validate offline against the Kubernetes schemas (the
kubernetes-validate package ships them), and every setting, path, port and name they use is
tied to the code, so that a renamed setting or a moved mount fails here and not in a pod."""

from __future__ import annotations

import http.server
import re
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

from anonstream.settings import Settings
from tests.unit.test_docker_files import check_cli_call, instruction

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "docker" / "kubernetes"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
# The oldest Kubernetes these manifests claim to support, and the newest schemas shipped.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
SETTING_VARS = {f"ANONSTREAM_{name.upper()}" for name in Settings.model_fields}
# Read outside Settings: the secret by core/keys.py (never a setting), the log level by the
# CLI, the SASL password file beside ANONSTREAM_SASL_PASSWORD.
OTHER_VARS = {"ANONSTREAM_SECRET_FILE", "ANONSTREAM_LOG_LEVEL", "ANONSTREAM_SASL_PASSWORD_FILE"}
SECRET_VARS = {"ANONSTREAM_SECRET", "ANONSTREAM_SASL_PASSWORD"}


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


@pytest.fixture(scope="module")
def resources() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for path in MANIFESTS:
        for doc in load(path):
            out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


@pytest.fixture(scope="module")
def sts(resources: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return resources[("StatefulSet", "anonstream")]


@pytest.fixture(scope="module")
def pod(sts: dict[str, Any]) -> dict[str, Any]:
    spec = sts["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (c,) = pod["containers"]
    assert isinstance(c, dict)
    return c


@pytest.fixture(scope="module")
def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container["env"]}


def mounted_file(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str]:
    """(volume kind, source name) of the volume item that provides file `path`."""
    p = PurePosixPath(path)
    volumes = {v["name"]: v for v in pod["volumes"]}
    for m in container["volumeMounts"]:
        if p.parent == PurePosixPath(m["mountPath"]):
            v = volumes[m["name"]]
            for kind, key in (("secret", "secretName"), ("configMap", "name")):
                if kind in v:
                    items = {i["path"] for i in v[kind].get("items", [])}
                    assert not items or p.name in items, f"{path}: not an item of {m['name']}"
                    return kind, v[kind][key]
            return next(iter(set(v) - {"name"})), m["name"]
    raise AssertionError(f"{path} is on no mounted volume")


# --------------------------------------------------------------------------------- schemas


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_validates_against_the_kubernetes_schema(path: Path, version: str) -> None:
    docs = load(path)
    assert docs
    for doc in docs:
        # strict: an unknown (misspelled) field is an error too. No schema: an error.
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_catches_a_misspelled_field_and_a_wrong_type(sts: dict[str, Any]) -> None:
    bad = yaml.safe_load(yaml.safe_dump(sts))
    bad["spec"]["replica"] = bad["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[0], strict=True)
    bad = yaml.safe_load(yaml.safe_dump(sts))
    bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "6066"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[0], strict=True)
    with pytest.raises(SchemaNotFoundError):
        kubernetes_validate.validate({**sts, "kind": "StatefulSett"}, VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    (k,) = load(K8S / "kustomization.yaml")
    assert sorted(k["resources"]) == sorted(p.name for p in MANIFESTS)


# ----------------------------------------------------------------------------- the worker


def test_single_mode_runs_one_replica_and_scale_out_needs_the_setting(
    sts: dict[str, Any], env: dict[str, Any]
) -> None:
    scale_out = env.get("ANONSTREAM_SCALE_OUT", {}).get("value", "false") == "true"
    assert scale_out or sts["spec"]["replicas"] == 1
    # Pods are replaced one at a time and never overlap for one identity.
    assert sts["spec"]["podManagementPolicy"] == "OrderedReady"
    assert sts["spec"]["updateStrategy"]["type"] == "RollingUpdate"


def test_instance_id_is_the_pod_name(env: dict[str, Any]) -> None:
    ref = env["ANONSTREAM_INSTANCE_ID"]["valueFrom"]["fieldRef"]
    assert ref["fieldPath"] == "metadata.name"


def test_the_container_runs_the_cli_worker(container: dict[str, Any]) -> None:
    assert "command" not in container, "the image's ENTRYPOINT is `anonstream`"
    assert container["args"][0] == "worker"
    check_cli_call(container["args"])


def test_image_tag_is_the_project_version(container: dict[str, Any]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert container["image"] == f"anonstream:{project['version']}"


def test_every_variable_is_one_the_worker_reads(env: dict[str, Any]) -> None:
    ours = {n for n in env if n.startswith("ANONSTREAM_")}
    assert ours <= SETTING_VARS | OTHER_VARS, sorted(ours - SETTING_VARS - OTHER_VARS)
    assert not {n for n in env if n.startswith("ANONSTREAM_")} & SECRET_VARS
    for name, e in env.items():
        assert "secretKeyRef" not in e.get("valueFrom", {}), f"{name}: secrets are files here"


def test_secrets_are_files_from_secret_volumes(
    pod: dict[str, Any], container: dict[str, Any], env: dict[str, Any]
) -> None:
    for var in ("ANONSTREAM_SECRET_FILE", "ANONSTREAM_SASL_PASSWORD_FILE", "ANONSTREAM_SSL_CAFILE"):
        kind, _ = mounted_file(pod, container, env[var]["value"])
        assert kind == "secret", var
    _, secret_name = mounted_file(pod, container, env["ANONSTREAM_SECRET_FILE"]["value"])
    _, kafka_name = mounted_file(pod, container, env["ANONSTREAM_SASL_PASSWORD_FILE"]["value"])
    assert secret_name != kafka_name, "the master secret gets a Secret of its own"
    for v in pod["volumes"]:
        if "secret" in v:
            assert v["secret"]["defaultMode"] & 0o007 == 0, "secret files not world-readable"


def test_secret_files_are_readable_by_the_image_user(pod: dict[str, Any]) -> None:
    (useradd,) = [r for r in instruction("RUN") if "useradd" in r]
    uid = int(re.search(r"--uid (\d+)", useradd).group(1))  # type: ignore[union-attr]
    sc = pod["securityContext"]
    assert sc["runAsUser"] == uid and sc["runAsNonRoot"] is True
    assert sc["fsGroup"] == sc["runAsGroup"]
    for v in pod["volumes"]:
        if "secret" in v:
            assert v["secret"]["defaultMode"] & 0o040, "group-readable: fsGroup gives access"


def test_pipelines_come_from_the_configmap_and_equal_the_repository_files(
    pod: dict[str, Any],
    container: dict[str, Any],
    env: dict[str, Any],
    resources: dict[tuple[str, str], dict[str, Any]],
) -> None:
    directory = env["ANONSTREAM_PIPELINES_DIR"]["value"]
    kind, name = mounted_file(pod, container, f"{directory}/web_activity.yaml")
    assert kind == "configMap"
    data = resources[("ConfigMap", name)]["data"]
    files = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "pipelines").glob("*.yaml")}
    assert data == files, "docker/kubernetes/configmap-pipelines.yaml differs from pipelines/"


def test_read_only_root_with_a_writable_tmpdir(
    pod: dict[str, Any], container: dict[str, Any], env: dict[str, Any]
) -> None:
    """Faust's data directory is under $TMPDIR (runtime/worker.py): it must be writable."""
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    tmp = env["TMPDIR"]["value"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == tmp]
    assert "emptyDir" in volumes[mount["name"]] and not mount.get("readOnly")


def test_ports_and_probes_match_the_worker(
    container: dict[str, Any], env: dict[str, Any], resources: dict[tuple[str, str], dict[str, Any]]
) -> None:
    port = Settings.model_fields["web_port"].default
    (web,) = container["ports"]
    assert web["containerPort"] == port == int(env["ANONSTREAM_WEB_PORT"]["value"])
    assert env["ANONSTREAM_WEB_HOST"]["value"] == "0.0.0.0"
    ready = container["readinessProbe"]["httpGet"]
    assert ready["path"] == "/health" and ready["port"] == web["name"]
    for probe in ("startupProbe", "livenessProbe"):
        argv = container[probe]["exec"]["command"]
        assert argv[:2] == ["python", "-c"] and "/health" in argv[2]
    svc = resources[("Service", "anonstream")]
    assert svc["spec"]["ports"][0]["targetPort"] == web["name"]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]


def test_resources_are_requested_and_memory_is_limited(container: dict[str, Any]) -> None:
    def mib(q: str) -> float:
        units = {"Mi": 1, "Gi": 1024}
        return float(q[:-2]) * units[q[-2:]]

    res = container["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"]
    # The benchmark's peak resident memory was 274 MiB; soaks level off below 230 MiB.
    assert mib(res["requests"]["memory"]) >= 2 * 230
    assert mib(res["limits"]["memory"]) >= 2 * mib(res["requests"]["memory"])


def test_selectors_and_service_name_agree(
    sts: dict[str, Any], resources: dict[tuple[str, str], dict[str, Any]]
) -> None:
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert ("Service", sts["spec"]["serviceName"]) in resources
    for (kind, _), doc in resources.items():
        selector = {
            "Service": lambda d: d["spec"]["selector"],
            "PodDisruptionBudget": lambda d: d["spec"]["selector"]["matchLabels"],
            "NetworkPolicy": lambda d: d["spec"]["podSelector"]["matchLabels"],
        }.get(kind)
        if selector:
            assert selector(doc).items() <= labels.items(), kind
    assert sts["spec"]["template"]["spec"]["serviceAccountName"] in {
        name for kind, name in resources if kind == "ServiceAccount"
    }


def test_no_service_link_variable_can_shadow_a_setting(
    pod: dict[str, Any], resources: dict[tuple[str, str], dict[str, Any]]
) -> None:
    """Kubernetes' service links set <SERVICE>_SERVICE_HOST, <SERVICE>_PORT, ... for every
    Service of the namespace: a Service named anonstream-web would set ANONSTREAM_WEB_PORT."""
    assert pod["enableServiceLinks"] is False
    for (kind, _), doc in resources.items():
        if kind != "Service":
            continue
        prefix = doc["metadata"]["name"].upper().replace("-", "_")
        links = {f"{prefix}_SERVICE_HOST", f"{prefix}_SERVICE_PORT", f"{prefix}_PORT"}
        for port in doc["spec"]["ports"]:
            base = f"{prefix}_PORT_{port['port']}_TCP"
            links |= {base, f"{base}_PROTO", f"{base}_PORT", f"{base}_ADDR"}
            links.add(f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}")
        assert not links & (SETTING_VARS | OTHER_VARS | SECRET_VARS), sorted(links)
    assert "ANONSTREAM_WEB_PORT" in SETTING_VARS  # what a Service named anonstream-web sets


# ----------------------------------------------------------------------- the probe script


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def _serve(status: int) -> Iterator[int]:
    handler = type("H", (_Health,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def _probe(container: dict[str, Any], port: int) -> int:
    argv = container["livenessProbe"]["exec"]["command"]
    return subprocess.run(
        [sys.executable, *argv[1:]], env={"ANONSTREAM_WEB_PORT": str(port)},
        capture_output=True, timeout=30, check=False,
    ).returncode  # fmt: skip


@pytest.mark.parametrize("status", [200, 503])
def test_liveness_passes_while_health_answers(container: dict[str, Any], status: int) -> None:
    for port in _serve(status):
        assert _probe(container, port) == 0


def test_liveness_fails_with_nothing_listening(container: dict[str, Any]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        assert _probe(container, port) != 0


def test_liveness_fails_when_the_event_loop_hangs(container: dict[str, Any]) -> None:
    """A listening socket that never answers (a blocked event loop): the kernel accepts the
    connection, so only a request with a timeout finds out."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        assert _probe(container, s.getsockname()[1]) != 0
