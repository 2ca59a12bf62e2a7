"""Fetching image URLs without becoming a proxy into the gateway's own network (SSRF).

Callers may pass image URLs, and upstreams return them; both are fetched by the gateway
from inside its network. So every hop is checked: only http(s), and the host must resolve
to public addresses only. The connection then goes to the very address that was checked
(the Host header and TLS SNI keep the name), so a DNS answer that changes between the
check and the connect (rebinding) cannot redirect it. Redirects are followed by hand and
re-checked; the body is streamed under a byte cap, and one deadline covers everything.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable

import httpx

from imagegate.core.errors import InvalidRequest, PayloadTooLarge

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
_METADATA_NAMES = frozenset({"metadata", "metadata.google.internal", "metadata.goog"})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _classes(*pairs: tuple[str, str]) -> tuple[tuple[Network, str], ...]:
    return tuple((ipaddress.ip_network(net), label) for net, label in pairs)


_V4_CLASSES = _classes(
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("10.0.0.0/8", "private"),
    ("172.16.0.0/12", "private"),
    ("192.168.0.0/16", "private"),
    ("100.64.0.0/10", "shared (CGNAT)"),
    ("192.0.0.0/24", "reserved"),  # IETF protocol assignments
    ("192.0.2.0/24", "reserved"),  # documentation (TEST-NET-1..3)
    ("198.51.100.0/24", "reserved"),
    ("203.0.113.0/24", "reserved"),
    ("198.18.0.0/15", "reserved"),  # benchmarking
    ("192.88.99.0/24", "reserved"),  # 6to4 relay anycast
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # includes 255.255.255.255
)
_V6_CLASSES = _classes(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("fc00::/7", "private"),
    ("64:ff9b:1::/48", "private"),  # local-use NAT64
    ("ff00::/8", "multicast"),
    ("100::/64", "reserved"),  # discard-only
    ("2001:db8::/32", "reserved"),  # documentation
    ("2001::/23", "reserved"),  # IETF protocol assignments (Teredo, ORCHID, ...)
    ("5f00::/16", "reserved"),  # SRv6 SIDs
    ("3fff::/20", "reserved"),  # documentation
)
# IPv6 forms that carry an IPv4 address; each is judged by the address it carries.
_V4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # ::a.b.c.d (deprecated)
_V4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")  # ::ffff:0:a.b.c.d (SIIT)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")
_HOSTNAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def disallowed_address_class(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be fetched from ("loopback", "private", ...), or None if public.

    Every IPv6 form that embeds an IPv4 address (IPv4-mapped, IPv4-compatible,
    IPv4-translated, NAT64, 6to4, Teredo's client and server) is judged by the address it
    carries, then by the explicit denied ranges above; ``is_global`` is only a last
    belt for ranges the tables might miss.
    """
    if ip in _METADATA_ADDRESSES:
        return "cloud metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        for net, label in _V6_CLASSES[:2]:  # :: and ::1 before the ::/96 unwrap
            if ip in net:
                return label
        for embedded in _embedded_ipv4(ip):
            reason = disallowed_address_class(embedded)
            if reason is not None:
                return reason
    for net, label in _V6_CLASSES if ip.version == 6 else _V4_CLASSES:
        if ip in net:
            return label
    return None if ip.is_global else "reserved"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries, by every transition form."""
    last4 = ipaddress.IPv4Address(ip.packed[-4:])
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _V4_COMPATIBLE or ip in _V4_TRANSLATED or ip in _NAT64:
        return [last4]
    if ip in _SIX_TO_FOUR and ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip in _TEREDO and ip.teredo is not None:
        return list(ip.teredo)
    return []


def _normalize_host(host: str) -> str:
    host = host.strip("[]").lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _parse_allow_entry(entry: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]:port``, bare ``v6`` or a URL -> (host, port or None)."""
    entry = entry.strip()
    if "://" in entry:
        url = httpx.URL(entry)
        return _normalize_host(url.raw_host.decode("ascii")), url.port
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":") or None
    elif entry.count(":") == 1:
        host, port = entry.split(":")
    else:
        host, port = entry, None
    if not host or (port is not None and not port.isdigit()):
        raise ValueError(f"bad allowed host {entry!r}: use host, host:port or [v6]:port")
    return _normalize_host(host), int(port) if port is not None else None


class SafeFetcher:
    """Fetches image bytes from untrusted URLs, refusing internal destinations.

    ``allow_hosts`` names hosts (``host`` or ``host:port``) exempt from the address check,
    e.g. a provider's own configured upstream. A ``client`` passed in is shared, not closed,
    and must carry no default credentials; the fetcher's own client ignores proxy settings
    from the environment, since a proxy would connect somewhere other than what was checked.
    """

    def __init__(
        self,
        *,
        allow_hosts: Iterable[str] = (),
        max_bytes: int,
        timeout_s: float = 10.0,
        max_redirects: int = 3,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if max_bytes <= 0 or timeout_s <= 0 or max_redirects < 0:
            raise ValueError("max_bytes and timeout_s must be positive, max_redirects >= 0")
        self._allow_entries = tuple(allow_hosts)
        self._allowed = frozenset(_parse_allow_entry(h) for h in self._allow_entries)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(trust_env=False, timeout=timeout_s)

    def with_extra_allowed_hosts(self, hosts: Iterable[str]) -> SafeFetcher:
        """A fetcher with the same limits and client that also trusts ``hosts``."""
        return SafeFetcher(
            allow_hosts=(*self._allow_entries, *hosts),
            max_bytes=self.max_bytes,
            timeout_s=self.timeout_s,
            max_redirects=self.max_redirects,
            client=self._client,
        )

    async def fetch(self, url: str, *, param: str) -> bytes:
        """The bytes at ``url``; failures raise ``InvalidRequest`` or ``PayloadTooLarge``."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch(url, param)
        except (TimeoutError, httpx.TimeoutException):
            raise InvalidRequest(
                f"Timed out fetching the image URL after {self.timeout_s:g}s",
                param=param,
                code="image_url_timeout",
            ) from None
        except httpx.InvalidURL:
            raise _invalid_url(param) from None
        except httpx.HTTPError as exc:
            message = f"Could not fetch the image URL ({type(exc).__name__})"
            raise _unreachable(message, param) from exc

    async def _fetch(self, url: str, param: str) -> bytes:
        current = _checked_url(httpx.URL(url), param)
        for _ in range(self.max_redirects + 1):
            response = await self._open(current, param)
            try:
                if response.status_code in _REDIRECT_STATUSES and "location" in response.headers:
                    current = _checked_url(current.join(response.headers["location"]), param)
                    continue
                if not response.is_success:
                    raise _unreachable(f"The image URL returned HTTP {response.status_code}", param)
                return await self._read_body(response, param)
            finally:
                await response.aclose()
        raise InvalidRequest(
            f"The image URL redirected more than {self.max_redirects} times",
            param=param,
            code="too_many_redirects",
        )

    async def _open(self, url: httpx.URL, param: str) -> httpx.Response:
        """Check ``url``'s destination and send the request to the checked address."""
        host = _normalize_host(url.raw_host.decode("ascii"))
        port = url.port or (443 if url.scheme == "https" else 80)
        allowed = (host, None) in self._allowed or (host, port) in self._allowed
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            if not allowed and (host == "localhost" or host.endswith(".localhost")):
                raise _not_allowed("loopback", param)
            if not allowed and host in _METADATA_NAMES:
                raise _not_allowed("cloud metadata", param)
            addresses = await _resolve(host, port, param)
        if not allowed:
            for ip in addresses:
                reason = disallowed_address_class(ip)
                if reason is not None:
                    raise _not_allowed(reason, param)

        # Identity encoding: the byte cap then bounds what we hold, not a compressed size.
        headers = {"Accept": "image/*", "Accept-Encoding": "identity"}
        extensions: dict[str, str] = {}
        # Pinned requests pool by IP: a kept-alive TLS connection verified for one name may
        # carry a later request for another name that resolved to the same checked address.
        # The address check, which is what stops SSRF, holds either way.
        if literal is None:
            headers["Host"] = url.netloc.decode("ascii")
            if url.scheme == "https":
                extensions["sni_hostname"] = host
        last_error: httpx.ConnectError | None = None
        for ip in addresses:
            target = url if literal is not None else url.copy_with(host=str(ip))
            request = self._client.build_request(
                "GET", target, headers=headers, extensions=extensions, timeout=self.timeout_s
            )
            try:
                return await self._client.send(request, stream=True, follow_redirects=False)
            except httpx.ConnectError as exc:
                last_error = exc  # try the next checked address (say, IPv4 after IPv6)
        raise _unreachable("Could not connect to the image URL's host", param) from last_error

    async def _read_body(self, response: httpx.Response, param: str) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise _too_large(self.max_bytes, param)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self.max_bytes:
                raise _too_large(self.max_bytes, param)
        return bytes(body)

    async def aclose(self) -> None:
        """Close the HTTP client if this fetcher created it."""
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> SafeFetcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _resolve(host: str, port: int, param: str) -> list[IPAddress]:
    """All addresses ``host`` resolves to, resolved off the event loop's thread."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise _unreachable("Could not resolve the image URL's host", param) from None
    addresses: list[IPAddress] = []
    for info in infos:
        try:
            ip = ipaddress.ip_address(info[4][0])
        except ValueError:
            raise _not_allowed("unrecognised", param) from None
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise _unreachable("Could not resolve the image URL's host", param)
    return addresses


def _checked_url(url: httpx.URL, param: str) -> httpx.URL:
    """Only http(s) with a plausible host: odd names (``exa%20mple``) never reach DNS."""
    host = url.raw_host.decode("ascii")
    if (
        url.scheme not in ("http", "https")
        or not (_HOSTNAME_RE.fullmatch(host) or ":" in host)  # IPv6 literals were parsed
        or not 0 < (url.port or 80) < 65536
    ):
        raise _invalid_url(param)
    return url


def _invalid_url(param: str) -> InvalidRequest:
    return InvalidRequest(
        "Image URLs must be absolute http:// or https:// URLs",
        param=param,
        code="invalid_image_url",
    )


def _not_allowed(reason: str, param: str) -> InvalidRequest:
    return InvalidRequest(
        f"The image URL's host resolves to {_article(reason)} {reason} address, "
        "which is not allowed",
        param=param,
        code="url_not_allowed",
    )


def _article(word: str) -> str:
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def _unreachable(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code="image_url_unreachable")


def _too_large(max_bytes: int, param: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The image at the URL is larger than the {max_bytes}-byte limit", param=param
    )
