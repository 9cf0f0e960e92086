"""Who a client is, and how many requests it may make (`GATEWAY_CLIENT_RPS`).

A client is its token name when client tokens are on, else its address: the peer address,
or, only when the peer is a trusted proxy (`GATEWAY_TRUSTED_PROXIES`), the right-most
address of `X-Forwarded-For` that is not itself a trusted proxy (the entries left of it
are the client's own words and could be forged).  `ClientQuota` keeps one token bucket per
client in a map bounded in size: a bucket that has refilled is the same as no bucket and
is dropped, and past `max_clients` the least recently seen bucket goes, so a flood of
distinct addresses cannot grow memory without bound.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from aiohttp import web

DEFAULT_MAX_CLIENTS = 65_536
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientQuota:
    """A token bucket per client (per process): `rps` requests/s, a burst of 2 s."""

    def __init__(
        self,
        rps: float,
        *,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rps < 0 or max_clients < 1:
            raise ValueError("rps must be >= 0 and max_clients >= 1")
        self._rps = rps
        self._burst = max(1.0, rps * 2)
        self._refill_time = self._burst / rps if rps > 0 else 0.0
        self._max_clients = max_clients
        # client -> (tokens, last update); least recently updated first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._clock = clock

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float:
        """0 when admitted, else seconds until a token is available."""
        if self._rps <= 0:
            return 0.0
        now = self._clock()
        buckets = self._buckets
        tokens, last = buckets.pop(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rps)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self._rps
        buckets[client] = (tokens, now)
        self._evict(now)
        return wait

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        while len(buckets) > self._max_clients:
            buckets.popitem(last=False)
        # Oldest first: stop at the first bucket that has not refilled yet.
        while buckets:
            tokens, last = next(iter(buckets.values()))
            if tokens + (now - last) * self._rps < self._burst:
                break
            buckets.popitem(last=False)


class ClientAddress:
    """The address a client is known by (see the module docstring)."""

    def __init__(self, trusted_proxies: Iterable[str] = ()) -> None:
        self._trusted = tuple(ipaddress.ip_network(net, strict=False) for net in trusted_proxies)

    def __call__(self, request: web.BaseRequest) -> str:
        peer = request.remote or "-"
        if not self._trusted:
            return peer
        peer_address = _address(peer)
        if peer_address is None or not self._is_trusted(peer_address):
            return peer
        hops = [hop for value in request.headers.getall("X-Forwarded-For", ())
                for hop in value.split(",")]  # fmt: skip
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:  # garbage written by (or past) a trusted proxy: distrust it
                return str(peer_address)
            if not self._is_trusted(address):
                return str(address)
        return str(peer_address)  # every hop is a proxy of ours

    def _is_trusted(self, address: _Address) -> bool:
        return any(address in network for network in self._trusted)


def _address(text: str) -> _Address | None:
    """An IP address from a peer or `X-Forwarded-For` entry (`[v6]:port`, `v4:port` too)."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
