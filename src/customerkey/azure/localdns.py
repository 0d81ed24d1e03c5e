"""In-process name resolution of a local vault domain to the loopback address.

Owns a wrapper around ``socket.getaddrinfo`` that answers for one or more domains: a host equal
to a domain or ending in ``.`` + a domain resolves to ``127.0.0.1`` (``::1`` when the caller asks
for IPv6 only); every other lookup goes to the resolver that was there before. It exists because
``*.vault.localhost`` names (one per vault, as the Azure SDK needs) are resolved by browsers and
curl but not by every system resolver, so a script can talk to ``customerkey serve`` with the
unmodified SDK. httpx, requests/urllib3 and asyncio all look ``socket.getaddrinfo`` up at call
time, so they see the wrapper.

Installs nest and are counted per domain, under a lock; the original function is put back when
the last one is removed, unless someone patched ``socket.getaddrinfo`` over ours meanwhile, in
which case ours stays in the chain and simply passes everything through.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

_GetAddrInfo = Callable[..., list[Any]]

_lock = threading.Lock()
_counts: dict[str, int] = {}
# Replaced whole under the lock, read without it: lookups must not contend.
_active: frozenset[str] = frozenset()
_original: _GetAddrInfo | None = None
_system_getaddrinfo: _GetAddrInfo = socket.getaddrinfo


def install_loopback_resolver(domain: str) -> None:
    """Resolve ``domain`` and its subdomains to loopback in this process until uninstalled."""
    global _active, _original
    name = _normalize_domain(domain)
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        _active = frozenset(_counts)
        if _original is None:
            _original = socket.getaddrinfo
            socket.getaddrinfo = _loopback_getaddrinfo


def uninstall_loopback_resolver(domain: str) -> None:
    """Undo one ``install_loopback_resolver(domain)``; ``ValueError`` if none is in effect."""
    global _active, _original
    name = _normalize_domain(domain)
    with _lock:
        count = _counts.get(name, 0)
        if count == 0:
            raise ValueError(f"no loopback resolver is installed for {domain!r}")
        if count == 1:
            del _counts[name]
        else:
            _counts[name] = count - 1
        _active = frozenset(_counts)
        if not _counts and _original is not None and socket.getaddrinfo is _loopback_getaddrinfo:
            socket.getaddrinfo = _original
            _original = None


@contextlib.contextmanager
def resolve_to_loopback(domain: str) -> Iterator[None]:
    """Within the ``with`` block, ``domain`` and ``*.domain`` resolve to 127.0.0.1."""
    install_loopback_resolver(domain)
    try:
        yield
    finally:
        uninstall_loopback_resolver(domain)


def resolves_to_loopback(host: str | bytes | None) -> bool:
    """Whether a lookup of ``host`` is currently answered with loopback by this module."""
    name = _normalize_host(host)
    if name is None:
        return False
    return any(name == domain or name.endswith("." + domain) for domain in _active)


def _loopback_getaddrinfo(
    host: bytes | str | None,
    port: bytes | str | int | None,
    family: int = 0,
    type: int = 0,
    proto: int = 0,
    flags: int = 0,
) -> list[Any]:
    original = _original
    if original is None:
        # Only reachable if our wrapper was captured by someone else before we restored.
        original = _system_getaddrinfo
    if resolves_to_loopback(host):
        target = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        return original(target, port, family, type, proto, flags)
    return original(host, port, family, type, proto, flags)


def _normalize_domain(domain: str) -> str:
    name = _normalize_host(domain)
    if not name or name.startswith(".") or ".." in name:
        raise ValueError(f"{domain!r} is not a domain name")
    return name


def _normalize_host(host: str | bytes | None) -> str | None:
    if host is None:
        return None
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return None
    return host.strip().rstrip(".").lower()
