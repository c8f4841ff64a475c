"""TCP ports on this machine: free ones to bind a broker or a server to, and whether a port
is free or accepts connections. The one free-port helper of the project."""

from __future__ import annotations

import contextlib
import socket


def free_ports(count: int = 2, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free TCP ports, found by binding port 0 (all bound at once)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
    return ports


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tcp_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
