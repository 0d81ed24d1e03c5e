"""Chooses the provider for a key URI: a configured remote vault domain, else our own vault."""

from __future__ import annotations

from collections.abc import Mapping

from customerkey.keyprovider.base import KeyProvider, KeyUri, RootKeyProperties, WrapResult


class KeyProviderRouter:
    def __init__(self, local: KeyProvider, remotes: Mapping[str, KeyProvider] | None = None):
        self._local = local
        # "vault.example.com:8443" -> provider; longest suffix wins
        self._remotes = sorted((remotes or {}).items(), key=lambda kv: -len(kv[0]))

    def provider_for(self, uri: KeyUri) -> KeyProvider:
        netloc = uri.netloc
        for suffix, provider in self._remotes:
            if netloc.endswith("." + suffix.lower()):
                return provider
        return self._local

    def add_remote(self, suffix: str, provider: KeyProvider) -> None:
        self._remotes = sorted([*self._remotes, (suffix, provider)], key=lambda kv: -len(kv[0]))

    def wrap(self, uri: KeyUri, key: bytes) -> WrapResult:
        return self.provider_for(uri).wrap(uri, key)

    def unwrap(self, uri: KeyUri, wrapped: bytes) -> bytes:
        return self.provider_for(uri).unwrap(uri, wrapped)

    def properties(self, uri: KeyUri) -> RootKeyProperties:
        return self.provider_for(uri).properties(uri)

    def holds(self, uri: KeyUri, permissions: tuple[str, ...]) -> dict[str, bool]:
        return self.provider_for(uri).holds(uri, permissions)
