"""The in-process key provider: our own vault service, called as the workload's principal.

Access policies, key state and audit apply exactly as they do over HTTPS, because it is the
same ``KeyVaultService`` call the keys API makes. The URI's domain is not checked: a DEP
written against ``https://<vault>.vault.azure.net/keys/<name>`` resolves to vault ``<vault>``
of this installation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from customerkey.errors import (
    BadParameter,
    CustomerKeyError,
    Forbidden,
    KeyAccessDenied,
    KeyProviderUnavailable,
    NotFound,
)
from customerkey.keyprovider.base import WRAP_ALGORITHM, KeyUri, RootKeyProperties, WrapResult
from customerkey.vault.models import Actor
from customerkey.vault.service import KeyVaultService

T = TypeVar("T")


class InProcessKeyProvider:
    def __init__(self, vault: KeyVaultService, actor: Actor) -> None:
        self._vault = vault
        self._actor = actor

    def _call(self, uri: KeyUri, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except (Forbidden, NotFound) as refused:
            raise KeyAccessDenied(f"{uri}: {refused.message}") from None
        except BadParameter as bad:
            raise KeyAccessDenied(f"{uri}: {bad.message}") from None
        except CustomerKeyError as failed:
            raise KeyProviderUnavailable(f"{uri}: {failed.message}") from None
        except Exception as exc:  # the database went away, and the like
            raise KeyProviderUnavailable(f"{uri}: {type(exc).__name__}") from exc

    def wrap(self, uri: KeyUri, key: bytes) -> WrapResult:
        result = self._call(
            uri,
            lambda: self._vault.wrap_key(
                self._actor, uri.vault, uri.name, uri.version, WRAP_ALGORITHM, key
            ),
        )
        return WrapResult(uri.with_version(result.kid.version), result.value)

    def unwrap(self, uri: KeyUri, wrapped: bytes) -> bytes:
        if uri.version is None:
            raise ValueError("unwrap needs a versioned key URI")
        result = self._call(
            uri,
            lambda: self._vault.unwrap_key(
                self._actor, uri.vault, uri.name, uri.version, WRAP_ALGORITHM, wrapped
            ),
        )
        return result.value

    def properties(self, uri: KeyUri) -> RootKeyProperties:
        bundle = self._call(
            uri, lambda: self._vault.get_key(self._actor, uri.vault, uri.name, uri.version)
        )
        return RootKeyProperties(
            uri=uri.with_version(bundle.id.version),
            kty=bundle.kty,
            key_size=bundle.key_size,
            enabled=bundle.attributes.enabled,
            not_before=bundle.attributes.not_before,
            expires=bundle.attributes.expires,
            key_ops=bundle.key_ops,
            recovery_level=bundle.attributes.recovery_level,
        )

    def holds(self, uri: KeyUri, permissions: tuple[str, ...]) -> dict[str, bool]:
        return self._call(
            uri,
            lambda: self._vault.has_permissions(uri.vault, self._actor.object_id, permissions),
        )
