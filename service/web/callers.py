"""The client's address: the socket's peer, or what a trusted proxy says in X-Forwarded-For."""

from __future__ import annotations

import functools
import ipaddress

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=8)
def _networks(proxies: frozenset[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(request: web.Request, proxies: frozenset[str]) -> str:
    """Whom to count a request against.

    X-Forwarded-For is read only when the peer is a trusted proxy, from the right: each trusted
    proxy appends the address it saw, so the first hop that is not a trusted proxy is the client
    (what is left of it, the client may have written itself).
    """
    peer = request.remote or "unknown"
    networks = _networks(proxies)
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [h.strip() for value in request.headers.getall("X-Forwarded-For", ()) for h in value.split(",")]
    hops = [h for h in hops if h]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            return hop[:64]  # what the nearest trusted proxy wrote, even if it is not an address
    return hops[0][:64] if hops else peer
