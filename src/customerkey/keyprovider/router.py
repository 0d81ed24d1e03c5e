"""Chooses the provider for a key URI: a configured remote vault domain, else our own vault;
and says whether a key URI may be named by a tenant (its own vaults, or a remote vault domain
configured for it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from customerkey.keyprovider.base import KeyProvider, KeyUri, RootKeyProperties, WrapResult


class KeyProviderRouter:
    def __init__(
        self,
        local: KeyProvider,
        remotes: Mapping[str, KeyProvider] | None = None,
        *,
        local_tenant_of: Callable[[KeyUri], str | None] | None = None,
    ):
        self._local = local
        self._local_tenant_of = local_tenant_of
        # "vault.example.com:8443" -> provider; longest suffix wins
        self._remotes = sorted((remotes or {}).items(), key=lambda kv: -len(kv[0]))
        # remote suffix -> the tenants that may name keys there (empty: every tenant)
        self._remote_tenants: dict[str, frozenset[str]] = {}

    def belongs_to(self, uri: KeyUri, tenant: str) -> bool:
        """Whether ``tenant`` may name this key: a vault of its own here, or a remote vault
        domain the operator configured for it (or for every tenant)."""
        netloc = uri.netloc
        for suffix, _provider in self._remotes:
            if netloc.endswith("." + suffix.lower()):
                allowed = self._remote_tenants.get(suffix, frozenset())
                return not allowed or tenant in allowed
        if self._local_tenant_of is None:
            return True
        return self._local_tenant_of(uri) == tenant

    def provider_for(self, uri: KeyUri) -> KeyProvider:
        netloc = uri.netloc
        for suffix, provider in self._remotes:
            if netloc.endswith("." + suffix.lower()):
                return provider
        return self._local

    def add_remote(
        self, suffix: str, provider: KeyProvider, *, tenants: Iterable[str] = ()
    ) -> None:
        self._remotes = sorted([*self._remotes, (suffix, provider)], key=lambda kv: -len(kv[0]))
        self._remote_tenants[suffix] = frozenset(t.lower() for t in tenants)

    def wrap(self, uri: KeyUri, key: bytes) -> WrapResult:
        return self.provider_for(uri).wrap(uri, key)

    def unwrap(self, uri: KeyUri, wrapped: bytes) -> bytes:
        return self.provider_for(uri).unwrap(uri, wrapped)

    def properties(self, uri: KeyUri) -> RootKeyProperties:
        return self.provider_for(uri).properties(uri)

    def holds(self, uri: KeyUri, permissions: tuple[str, ...]) -> dict[str, bool]:
        return self.provider_for(uri).holds(uri, permissions)
