"""A secured local broker: a SASL_SSL listener (SCRAM-SHA-512) and the standard authorizer.

Used by the tests to run the worker the way a production cluster makes it run: TLS with a
certificate of a CA made for the occasion (openssl), SCRAM users stored in the cluster
metadata when the storage is formatted (``kafka-storage format --add-scram``, KIP-900),
and ACLs checked by ``StandardAuthorizer`` with only the admin as super user.

The controller listener cannot use SCRAM (its credentials live in the metadata the
controller serves), so it uses SASL PLAIN with the admin's password, on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MECHANISM = "SCRAM-SHA-512"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
CERT_DAYS = 2

# Kafka's protocol codes (org.apache.kafka.common.acl / resource).
RESOURCE_TYPES = {"topic": 2, "group": 3, "cluster": 4, "transactional-id": 5}
PATTERN_TYPES = {"literal": 3, "prefixed": 4}
OPERATIONS = {
    "All": 2, "Read": 3, "Write": 4, "Create": 5, "Delete": 6, "Alter": 7, "Describe": 8,
    "ClusterAction": 9, "DescribeConfigs": 10, "AlterConfigs": 11, "IdempotentWrite": 12,
}  # fmt: skip
ALLOW = 3


class SecurityError(RuntimeError):
    """Certificates could not be made, or ACLs could not be created."""


@dataclass
class Scram:
    """SCRAM users of the broker ({name: password}); ``admin`` is the super user, also used
    between the broker and itself."""

    users: dict[str, str]
    admin: str = "admin"
    tls_dir: Path | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.admin not in self.users:
            raise ValueError(f"the admin user {self.admin!r} needs a password in users")
        for name, password in self.users.items():
            # kafka-storage's --add-scram syntax has no escaping; keep to safe characters
            if not (name + password).replace("-", "").replace("_", "").isalnum():
                raise ValueError("SCRAM user names and passwords: letters, digits, - and _")

    @property
    def ca_file(self) -> Path:
        assert self.tls_dir is not None, "make_certificates() first"
        return self.tls_dir / "ca.pem"

    def make_certificates(self, directory: Path, host: str) -> None:
        """A CA and a server certificate for ``host`` (IP and localhost), PEM, via openssl."""
        openssl = shutil.which("openssl")
        if not openssl:
            raise SecurityError("openssl was not found; it makes the test certificates")
        directory.mkdir(parents=True, exist_ok=True)
        d = directory

        def run(*args: str) -> None:
            proc = subprocess.run(
                [openssl, *args], cwd=d, capture_output=True, text=True, check=False, timeout=60
            )
            if proc.returncode != 0:
                raise SecurityError(f"openssl {args[0]} failed: {proc.stderr.strip()[-500:]}")

        days = str(CERT_DAYS)
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", days, "-subj", "/CN=anonstream test CA")  # fmt: skip
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", f"/CN={host}")  # fmt: skip
        (d / "san.ext").write_text(
            f"subjectAltName=IP:{host},DNS:localhost\nextendedKeyUsage=serverAuth\n"
        )
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", days,
            "-extfile", "san.ext")  # fmt: skip
        # Kafka's PEM key store: an unencrypted PKCS#8 key followed by the certificate chain.
        run("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server.pk8")
        (d / "server.pem").write_text(
            (d / "server.pk8").read_text() + (d / "server.crt").read_text()
        )
        for leftover in ("ca.key", "server.key", "server.pk8", "server.csr", "ca.srl"):
            (d / leftover).unlink(missing_ok=True)
        self.tls_dir = d

    def broker_overrides(self, port: int, controller_port: int, host: str) -> dict[str, str]:
        """server.properties entries of the secured listeners (after make_certificates)."""
        assert self.tls_dir is not None, "make_certificates() first"
        admin, pw = self.admin, self.users[self.admin]
        return {
            "listeners": f"SASL_SSL://{host}:{port},CONTROLLER://{host}:{controller_port}",
            "advertised.listeners": f"SASL_SSL://{host}:{port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:SASL_PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": MECHANISM,
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{admin}" password="{pw}";'
            ),
            "listener.name.controller.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="{admin}" password="{pw}" user_{admin}="{pw}";'
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self.tls_dir / "server.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "authorizer.class.name": AUTHORIZER,
            "super.users": f"User:{admin}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def format_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that store the users' SCRAM credentials."""
        args = []
        for name, password in self.users.items():
            args += ["--add-scram", f"{MECHANISM}=[name={name},password={password}]"]
        return args

    def client_options(
        self, user: str | None = None, password: str | None = None
    ) -> dict[str, Any]:
        """aiokafka options for ``user`` (default: the admin)."""
        user = user or self.admin
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": MECHANISM,
            "sasl_plain_username": user,
            "sasl_plain_password": password if password is not None else self.users[user],
            "ssl_context": ssl.create_default_context(cafile=str(self.ca_file)),
        }

    def client_env(self, user: str, password: str | None = None) -> dict[str, str]:
        """ANONSTREAM_* variables that make a worker (or any command) connect as ``user``."""
        return {
            "ANONSTREAM_SECURITY_PROTOCOL": "SASL_SSL",
            "ANONSTREAM_SASL_MECHANISM": MECHANISM,
            "ANONSTREAM_SASL_USERNAME": user,
            "ANONSTREAM_SASL_PASSWORD": password if password is not None else self.users[user],
            "ANONSTREAM_SSL_CAFILE": str(self.ca_file),
        }


async def acreate_acls(
    bootstrap: str, entries: Sequence[Mapping[str, Any]], client_options: Mapping[str, Any]
) -> None:
    """Create ALLOW ACLs, each ``{principal, resource_type, name, pattern_type, operations}``
    (the entries of `anonstream topics plan --json`), through aiokafka's protocol classes:
    its admin client has no ACL method, and Kafka 4's kafka-acls tool is not in the jars
    the local broker uses."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import for_code

    from anonstream.runtime.kafka_compat import create_acls_request, send_admin_request

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="anonstream-acls", **client_options
    )
    await admin.start()
    try:
        requests = [
            create_acls_request(
                RESOURCE_TYPES[e["resource_type"]], e["name"],
                PATTERN_TYPES[e.get("pattern_type", "literal")], e["principal"], "*",
                OPERATIONS[op], ALLOW,
            )
            for e in entries
            for op in e["operations"]
        ]  # fmt: skip
        responses = await asyncio.gather(*(send_admin_request(admin, r) for r in requests))
        problems = [
            f"{code_and_message[1] or for_code(code_and_message[0]).__name__}"
            for resp in responses
            for code_and_message in resp.creation_responses
            if code_and_message[0] != 0
        ]
        if problems:
            raise SecurityError("could not create ACLs: " + "; ".join(sorted(set(problems))))
    finally:
        await admin.close()
