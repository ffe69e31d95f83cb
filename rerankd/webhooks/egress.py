"""Egress policy of webhook deliveries: which callback URLs may be called, and at which address.

A callback URL is refused when it is not ``http``/``https``, carries userinfo (``user:pass@``),
names ``localhost`` or ``*.localhost``, or when its host is, or resolves to, an address that is
not public: unspecified, loopback, private (RFC 1918, CGNAT ``100.64/10``, ULA ``fc00::/7``),
link-local, multicast, broadcast, documentation, benchmarking or otherwise reserved.  IPv4 hosts
are read the way ``inet_aton`` reads them (``2130706433``, ``0x7f000001``, ``0177.0.0.1``,
``127.1``), IPv6 hosts with the IPv4 address they embed (mapped ``::ffff:a.b.c.d``, compatible
``::a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) checked too; IPv6 zone ids
(``[fe80::1%25eth0]``) are refused whatever the address; a trailing dot is ignored.  A name is
refused when *any* address it resolves to is refused.

:meth:`EgressPolicy.resolve` returns a :class:`Target` holding the checked addresses; the
delivery connects to one of those (never resolves again), so DNS rebinding cannot move it.

The allowlist (``RERANKD_WEBHOOK_ALLOW_HOSTS``: hosts as written in the URL, trusted whatever
they resolve to; ``RERANKD_WEBHOOK_ALLOW_CIDRS``: networks whose addresses are allowed) is for
tests and private deployments.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

import httpx

if TYPE_CHECKING:
    from rerankd.config import Settings

__all__ = ["EgressError", "EgressPolicy", "Target", "address_problem", "parse_callback_url", "parse_ip_literal"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_URL_CHARS = 2048

_V4_DENY = tuple(
    (ipaddress.IPv4Network(net), why)
    for net, why in (
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved (6to4 relay)"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
    )
)
_V6_DENY = tuple(
    (ipaddress.IPv6Network(net), why)
    for net, why in (
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("::/8", "reserved"),
        ("64:ff9b:1::/48", "private (local-use NAT64)"),
        ("100::/64", "reserved (discard-only)"),
        ("2001::/23", "reserved (IETF protocol assignments, Teredo, benchmarking)"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("5f00::/16", "reserved (SRv6)"),
        ("fc00::/7", "private (unique local)"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private (site-local)"),
        ("ff00::/8", "multicast"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPAT = ipaddress.IPv6Network("::/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_V4_PART = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


class EgressError(ValueError):
    """A callback URL the policy refuses; the message names only what the tenant sent.
    ``transient``: the host did not resolve (worth another try later)."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, translated, NAT64, 6to4)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or ip in _TRANSLATED or (ip in _COMPAT and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress) -> str | None:
    """Why ``ip`` may not be called (``"loopback"``, ``"private"``, ...), or ``None`` if it is public."""
    if isinstance(ip, ipaddress.IPv4Address):
        if ip == ipaddress.IPv4Address("255.255.255.255"):
            return "broadcast"
        for net, why in _V4_DENY:
            if ip in net:
                return why
        return None
    plain = ipaddress.IPv6Address(int(ip))  # without a zone id
    if plain in _V6_DENY[0][0] or plain in _V6_DENY[1][0]:
        return _V6_DENY[0][1] if plain in _V6_DENY[0][0] else _V6_DENY[1][1]
    inner = _embedded_v4(plain)
    if inner is not None:
        inner_why = address_problem(inner)
        return f"{inner_why} (IPv4 {inner} inside IPv6)" if inner_why else None
    for net6, why6 in _V6_DENY[2:]:
        if plain in net6:
            return why6
    return None


def _v4_number(part: str) -> int:
    if part.startswith("0x"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        if not set(part) <= set("01234567"):
            raise ValueError(part)
        return int(part, 8)
    return int(part, 10)


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a URL host denotes when it is an IP literal in any notation, else ``None``.

    ``host`` is lower case, without brackets or a trailing dot.  Raises :class:`EgressError`
    for something that looks numeric but is no address (``1.2.3.999``)."""
    if ":" in host:
        try:
            return ipaddress.IPv6Address(unquote(host))
        except ValueError:
            raise EgressError(f"host {host!r} is not a valid IPv6 address") from None
    parts = host.split(".")
    if not all(_V4_PART.match(p) for p in parts):
        return None
    try:
        nums = [_v4_number(p) for p in parts]
        if len(nums) > 4 or any(n > 255 for n in nums[:-1]) or nums[-1] >= 256 ** (5 - len(nums)):
            raise ValueError(host)
    except ValueError:
        raise EgressError(f"host {host!r} is not a valid IPv4 address") from None
    value = nums[-1]
    for i, n in enumerate(nums[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


@dataclass(frozen=True)
class CallbackUrl:
    """A callback URL that passed the syntax checks."""

    url: httpx.URL
    host: str
    """Lower case, IDNA-encoded, without a trailing dot."""
    port: int
    literal: IPAddress | None


def parse_callback_url(url: str) -> CallbackUrl:
    """Syntax checks that need no settings: http(s), no userinfo, a host name or address, a port."""
    if len(url) > MAX_URL_CHARS:
        raise EgressError(f"longer than {MAX_URL_CHARS} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as e:
        raise EgressError(f"not a valid URL ({e})") from None
    if parsed.scheme not in ("http", "https"):
        raise EgressError(f"must be an http(s) URL, got scheme {parsed.scheme!r}")
    if parsed.userinfo:
        raise EgressError("must not carry credentials (user:password@)")
    host = parsed.raw_host.decode("ascii").lower()
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]
    if not host:
        raise EgressError("has no host")
    port = parsed.port if parsed.port is not None else (443 if parsed.scheme == "https" else 80)
    if not 0 < port < 65536:
        raise EgressError(f"port {port} is out of range")
    literal = parse_ip_literal(host)
    if isinstance(literal, ipaddress.IPv6Address) and literal.scope_id is not None:
        raise EgressError(f"host {host!r} carries an IPv6 zone id, which a callback URL may not")
    if literal is None and (len(host) > 253 or not all(_LABEL.match(label) for label in host.split("."))):
        raise EgressError(f"host {host!r} is not a valid host name")
    return CallbackUrl(url=parsed, host=host, port=port, literal=literal)


@dataclass(frozen=True)
class Target:
    """Where a delivery goes: the URL as given and the checked addresses to connect to."""

    url: httpx.URL
    host: str
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")

    @property
    def sni_hostname(self) -> str | None:
        """The name TLS verifies (``None`` for an IP literal: the connection's own address)."""
        return self.host if self.url.scheme == "https" and parse_ip_literal(self.host) is None else None

    def pinned_url(self, address: str) -> httpx.URL:
        return self.url.copy_with(host=address)


Resolver = Callable[[str, int], Awaitable[list[str]]]


RESOLVER_THREADS = 4
"""Threads that resolve callback hosts.  Their own pool: a tenant's callback hosts whose DNS
hangs (each lookup outlives the policy's timeout in its thread) must not fill the event loop's
default executor, which also resolves the Redis host when a connection is (re)made."""
_resolver_pool = concurrent.futures.ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="rerankd-egress-dns")


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``getaddrinfo`` gives for ``host`` (TCP), in its order, without repeats."""
    loop = asyncio.get_running_loop()
    infos = await loop.run_in_executor(
        _resolver_pool,
        functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP),
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class EgressPolicy:
    """The policy with its allowlist; see the module docstring."""

    def __init__(
        self,
        allow_hosts: Iterable[str] = (),
        allow_cidrs: Iterable[str] = (),
        resolve_timeout_s: float = 5.0,
        resolver: Resolver | None = None,
    ) -> None:
        self.allow_hosts = frozenset(h.strip().lower().rstrip(".") for h in allow_hosts if h.strip())
        self.allow_cidrs = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in allow_cidrs if c.strip())
        self.resolve_timeout_s = resolve_timeout_s
        self.resolver = resolver or system_resolver

    @classmethod
    def from_settings(cls, settings: Settings) -> EgressPolicy:
        return cls(
            settings.webhook_allow_hosts.split(","),
            settings.webhook_allow_cidrs.split(","),
            resolve_timeout_s=min(5.0, settings.webhook_timeout_s),
        )

    def _problem(self, ip: IPAddress) -> str | None:
        plain = ipaddress.IPv4Address(int(ip)) if ip.version == 4 else ipaddress.IPv6Address(int(ip))
        if any(plain.version == net.version and plain in net for net in self.allow_cidrs):
            return None
        return address_problem(ip)

    def check_url(self, url: str) -> CallbackUrl:
        """All checks that need no DNS: syntax, localhost names and IP literals."""
        cb = parse_callback_url(url)
        if cb.host in self.allow_hosts:
            return cb
        if cb.host == "localhost" or cb.host.endswith(".localhost"):
            raise EgressError(f"host {cb.host!r} is a loopback name")
        if cb.literal is not None and (why := self._problem(cb.literal)) is not None:
            raise EgressError(f"host {cb.host!r} is the address {cb.literal}, which is {why}")
        return cb

    async def resolve(self, url: str) -> Target:
        """Check ``url`` and resolve its host; every address must pass (see the module docstring)."""
        cb = self.check_url(url)
        if cb.literal is not None:
            return Target(cb.url, cb.host, (str(cb.literal),))
        try:
            addresses = await asyncio.wait_for(self.resolver(cb.host, cb.port), self.resolve_timeout_s)
        except (OSError, TimeoutError, UnicodeError):
            raise EgressError(f"host {cb.host!r} does not resolve", transient=True) from None
        if not addresses:
            raise EgressError(f"host {cb.host!r} does not resolve", transient=True)
        if cb.host not in self.allow_hosts:
            for a in addresses:
                if self._problem(ipaddress.ip_address(a)) is not None:
                    raise EgressError(f"host {cb.host!r} resolves to a non-public address")
        return Target(cb.url, cb.host, tuple(addresses))
