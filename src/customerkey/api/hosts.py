"""Which Host headers this server answers, so no URL it hands out can name another server.

Owns the rule: the URLs in answers (key ids, recovery ids, next links, the sign-in authority)
are built from the configured domain and public port (``ApiContext.vault_url``,
``ApiContext.url_for``), never copied from the Host header, and a request whose Host header
names another server or port is refused before any route runs (``HostCheckMiddleware``):

- a missing or malformed Host header (userinfo such as ``vault:8443@evil.example``, a path,
  a port that is not a number) is 400 ``BadParameter``;
- a well-formed one naming another host or port is 404 ``NotFound``.

Accepted host names: ``<vault>.<domain>`` (one label: the vault), the domain itself, and the
bare host names ``localhost``, ``127.0.0.1``, ``[::1]``, the listen address when it is a
specific one, and each of ``public_hosts``. Accepted ports: ``port`` and ``public_port``; a Host
without a port means 443. The refusals never quote the header.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from customerkey.config import Settings

# A DNS name (labels of letters, digits, hyphens) or a bracketed IPv6 address, then a port.
_HOST = re.compile(
    r"^(?P<name>[0-9a-z-]{1,63}(?:\.[0-9a-z-]{1,63})*\.?|\[[0-9a-f:.]{2,45}\])"
    r"(?::(?P<port>[0-9]{1,5}))?$",
    re.IGNORECASE,
)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_UNSPECIFIED = ("0.0.0.0", "::", "[::]", "")


@dataclass(frozen=True)
class ParsedHost:
    name: str  # lower case, no trailing dot; IPv6 in brackets
    port: int


def parse_host(value: str) -> ParsedHost | None:
    """The host name and port of a Host header value (443 when it names none), or None when
    the value is not ``name[:port]``."""
    match = _HOST.match(value.strip())
    if match is None:
        return None
    name = match["name"].lower().rstrip(".")
    if name.startswith("["):
        try:
            ipaddress.IPv6Address(name[1:-1])
        except ValueError:
            return None
    port = int(match["port"]) if match["port"] is not None else 443
    if not 1 <= port <= 65535 or not name:
        return None
    return ParsedHost(name, port)


def bare_name(host: str) -> str:
    """A host name or address as it appears in a Host header (IPv6 in brackets, lower case)."""
    text = host.strip().lower().rstrip(".")
    if ":" in text and not text.startswith("["):
        return f"[{text}]"
    return text


@dataclass(frozen=True)
class HostPolicy:
    """The host names and ports this server answers as."""

    domain: str
    public_port: int
    ports: frozenset[int]
    bare_hosts: frozenset[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> HostPolicy:
        public_port = settings.public_port or settings.port
        bare = {bare_name(h) for h in (*LOOPBACK_NAMES, *settings.public_hosts)}
        if settings.host.strip() not in _UNSPECIFIED:
            bare.add(bare_name(settings.host))
        return cls(
            domain=settings.domain.lower().rstrip("."),
            public_port=public_port,
            ports=frozenset({settings.port, public_port}),
            bare_hosts=frozenset(bare),
        )

    def refusal(self, host: str | None) -> tuple[int, str, str] | None:
        """None when ``host`` (a Host header value) names this server, else the status, error
        code and message to answer with."""
        parsed = parse_host(host) if host else None
        if parsed is None:
            return (
                400,
                "BadParameter",
                "The Host header must be a host name and port of this server, such as "
                f"<vault>.{self.domain}{self._example_port}.",
            )
        if parsed.port not in self.ports or not self._answers_as(parsed.name):
            return (
                404,
                "NotFound",
                "This server does not answer for that host and port. Vaults answer at "
                f"https://<vault>.{self.domain}{self._example_port}/.",
            )
        return None

    def _answers_as(self, name: str) -> bool:
        if name == self.domain or name in self.bare_hosts:
            return True
        label, dot, rest = name.partition(".")
        return bool(label) and dot == "." and rest == self.domain

    @property
    def _example_port(self) -> str:
        return "" if self.public_port == 443 else f":{self.public_port}"
