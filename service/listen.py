"""Where `serve` listens: the address its links point at by default, and a port checked before anything starts."""

from __future__ import annotations

import errno
import ipaddress
import socket

# links must point somewhere a browser on this machine reaches: a wildcard address is not one
WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


class ListenError(Exception):
    """The address cannot be listened on; the message is one line for the operator."""


def listen_url(host: str, port: int) -> str:
    """`http://host:port` for a server listening there (loopback for a wildcard, brackets for IPv6)."""
    host = WILDCARDS.get(host, host)
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a name, such as localhost
    return f"http://{host}:{port}"


def check_listenable(host: str, port: int) -> None:
    """Bind (and release) every address `host` names on `port`, as the server will, or raise ListenError."""
    try:
        addresses = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            # as asyncio's server does: a port left in TIME_WAIT is free, a listening one is not
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise ListenError(describe(exc, host, port)) from None


def describe(exc: OSError, host: str, port: int) -> str:
    """One line for a failed bind."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is already in use on {host or '*'}: stop what listens there or choose another --port"
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
