"""Start-up checks, and the deadlines that make a worker fail loudly and always stop.

A worker that cannot start must say why in one line and exit non-zero within a bounded
time, so that a supervisor restarts it or a person fixes it; a worker asked to stop must
stop. Neither may depend on a healthy event loop (Faust's host can hang in its own stop),
so the deadlines are kept by a thread of their own that ends the process when one passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import errors as kerrors

from anonstream.runtime.kafka_compat import probe_metadata
from anonstream.settings import Settings

log = logging.getLogger("anonstream.worker")

UNKNOWN_TOPIC = 3
TOPIC_AUTHORIZATION_FAILED = 29
RETRY_LOG_INTERVAL_S = 5.0


class StartupError(Exception):
    """A reason the worker cannot start, in one line; the worker exits 1."""


@dataclass
class ClusterCheck:
    brokers: int
    missing: list[str] = field(default_factory=list)


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    hosts = []
    for item in bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise StartupError(f"bad bootstrap server {item.strip()!r}: expected host:port")
        hosts.append((host.strip("[]"), int(port)))
    return hosts


def _reason(exc: BaseException, settings: Settings) -> tuple[str, bool]:
    """(one-line reason, whether trying again may help)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate was not accepted ({exc.verify_message})", False
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})", False
    if isinstance(exc, kerrors.UnsupportedSaslMechanismError):
        return str(exc), False
    if isinstance(exc, (kerrors.AuthenticationFailedError, kerrors.SaslAuthenticationFailed)):
        return (
            f"authentication failed for SASL user {settings.sasl_username!r} "
            f"({settings.sasl_mechanism}): wrong user name or password",
            False,
        )
    if isinstance(exc, kerrors.IllegalSaslStateError):
        return f"SASL handshake failed: {exc}", False
    if isinstance(exc, (ConnectionError, OSError, asyncio.TimeoutError, TimeoutError)):
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        return f"cannot connect ({text})", True
    if isinstance(exc, kerrors.KafkaConnectionError):
        hint = ""
        if settings.security_protocol != "PLAINTEXT":
            hint = f"; is the listener {settings.security_protocol}?"
        return f"connection closed by the broker ({exc}){hint}", True
    return f"{type(exc).__name__}: {exc}", True


async def _probe(host: str, port: int, settings: Settings, topics: list[str], timeout: float):
    opts = settings.kafka_client_options()
    return await probe_metadata(
        host, port, topics, timeout,
        ssl_context=opts.get("ssl_context"), security_protocol=settings.security_protocol,
        sasl_mechanism=opts.get("sasl_mechanism"),
        sasl_plain_username=opts.get("sasl_plain_username"),
        sasl_plain_password=opts.get("sasl_plain_password"),
    )  # fmt: skip


async def check_cluster(settings: Settings, input_topics: Iterable[str]) -> ClusterCheck:
    """Connect and authenticate to a bootstrap server and look the input topics up.

    Retries an unreachable cluster until ``startup_timeout_seconds`` have passed; a TLS or
    authentication failure, or topics this principal may not describe, fail at once.
    Returns the broker count and the input topics that do not exist.
    """
    topics = sorted(set(input_topics))
    hosts = _hosts(settings.bootstrap_servers)
    deadline = time.monotonic() + settings.startup_timeout_seconds
    last_said = 0.0
    while True:
        reasons = []
        for host, port in hosts:
            remaining = max(0.5, min(10.0, deadline - time.monotonic()))
            try:
                resp = await _probe(host, port, settings, topics, remaining)
            except Exception as exc:
                reason, retry = _reason(exc, settings)
                if not retry:
                    raise StartupError(f"Kafka at {host}:{port}: {reason}") from None
                reasons.append(f"{host}:{port}: {reason}")
                continue
            unauthorized = [t[1] for t in resp.topics if t[0] == TOPIC_AUTHORIZATION_FAILED]
            if unauthorized:
                raise StartupError(
                    f"not authorized to describe input topics {', '.join(unauthorized)} "
                    f"as {_principal(settings)}: grant the ACLs `anonstream topics plan` prints"
                )
            missing = [t[1] for t in resp.topics if t[0] == UNKNOWN_TOPIC]
            return ClusterCheck(brokers=len(resp.brokers), missing=missing)
        now = time.monotonic()
        if now >= deadline:
            raise StartupError(
                f"no Kafka broker reachable within {settings.startup_timeout_seconds:g} s "
                f"({'; '.join(reasons)})"
            )
        if now - last_said >= RETRY_LOG_INTERVAL_S:
            last_said = now
            log.warning("waiting for Kafka: %s", "; ".join(reasons))
        await asyncio.sleep(min(1.0, max(0.0, deadline - now)))


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type, and its message when it has one."""
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text}" if text and not text.startswith(name) else text or name


def failure_line(exc: BaseException) -> str:
    """``one_line``, with what to do about a missing ACL."""
    hint = ""
    if "Authorization" in type(exc).__name__:
        hint = " (grant the ACLs that `anonstream topics plan` prints)"
    return one_line(exc) + hint


def _principal(settings: Settings) -> str:
    if settings.security_protocol.startswith("SASL"):
        return f"User:{settings.sasl_username}"
    return "this client"


def missing_topics_message(missing: Iterable[str]) -> str:
    return (
        f"input topics missing: {', '.join(sorted(missing))}. Create them with "
        "`anonstream topics create` (or your own tooling, with the partition count you want)"
    )


# ----------------------------------------------------------------------------------------
# Deadlines
# ----------------------------------------------------------------------------------------


def exit_now(code: int, message: str | None = None) -> None:
    """End the process at once (no clean-up: the caller knows there is none left to do)."""
    if message:
        log.log(logging.ERROR if code else logging.WARNING, "%s", message)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # exiting anyway
            handler.flush()
    sys.stderr.flush()
    os._exit(code)


class Deadlines:
    """Start-up and stop deadlines, watched from a daemon thread.

    ``phase(name)`` names what start-up is doing (said in the error if it takes too long);
    ``pause()`` stops the start-up clock while the worker waits for something the operator
    has been told about (missing topics), ``phase()`` starts it again, afresh. ``started()``
    ends start-up. ``stopping(code)`` arms the stop deadline; ``signalled(name)`` does too,
    and a second signal (SIGTERM or Ctrl-C again) exits at once.
    """

    def __init__(self, startup_s: float, stop_s: float) -> None:
        self.startup_s = startup_s
        self.stop_s = stop_s
        self._lock = threading.Lock()
        self._phase = "starting"
        self._start_deadline: float | None = time.monotonic() + startup_s
        self._stop_deadline: float | None = None
        self._stop_code = 0
        self._signalled = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="deadlines", daemon=True)
        self._thread.start()

    def phase(self, name: str) -> None:
        with self._lock:
            self._phase = name
            if self._start_deadline is None and self._stop_deadline is None:
                self._start_deadline = time.monotonic() + self.startup_s

    def pause(self) -> None:
        with self._lock:
            self._start_deadline = None

    def started(self) -> None:
        with self._lock:
            self._start_deadline = None
            self._phase = "running"

    @property
    def is_stopping(self) -> bool:
        return self._stop_deadline is not None

    def stopping(self, code: int = 0) -> None:
        """Arm the stop deadline (once); a failure's non-zero code wins over a 0."""
        with self._lock:
            self._start_deadline = None
            if self._stop_deadline is None:
                self._stop_deadline = time.monotonic() + self.stop_s
            self._stop_code = self._stop_code or code
        self._wake.set()

    def signalled(self, name: str) -> None:
        """SIGTERM or SIGINT: stop within the deadline; the second one exits at once."""
        with self._lock:
            again, self._signalled = self._signalled, True
        if again:
            exit_now(self._stop_code, f"{name} again while stopping: exiting now")
        log.info("%s: stopping", name)
        self.stopping(0)

    def _watch(self) -> None:
        while True:
            self._wake.wait(0.2)
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                start, stop, phase = self._start_deadline, self._stop_deadline, self._phase
            if start is not None and now > start:
                exit_now(1, f"start-up did not finish within {self.startup_s:g} s (while {phase})")
            if stop is not None and now > stop:
                exit_now(1, f"the worker did not stop within {self.stop_s:g} s; exiting")
