"""A key bundle as Key Vault's JSON: the JWK, its attributes, tags and release policy.

The keys API answers with these documents (``api.schemas`` re-exports them), and secure key
release signs one (``vault.service.release``), so both say the same about a key. Field names
are Key Vault's: base64url without padding for key material and policy data, unix seconds for
times.
"""

from __future__ import annotations

from typing import Any

from customerkey.clock import to_unix
from customerkey.crypto.rsa import b64url_encode
from customerkey.vault.models import KeyBundle, KeyReleasePolicy

__all__ = ["key_attributes_json", "key_bundle_json", "key_json", "release_policy_json"]


def key_attributes_json(bundle: KeyBundle) -> dict[str, Any]:
    attrs = bundle.attributes
    body: dict[str, Any] = {
        "enabled": attrs.enabled,
        "created": to_unix(attrs.created),
        "updated": to_unix(attrs.updated),
        "recoveryLevel": attrs.recovery_level,
        "recoverableDays": attrs.recoverable_days,
        "exportable": attrs.exportable,
    }
    if attrs.not_before is not None:
        body["nbf"] = to_unix(attrs.not_before)
    if attrs.expires is not None:
        body["exp"] = to_unix(attrs.expires)
    return body


def key_json(bundle: KeyBundle, kid: str) -> dict[str, Any]:
    """The JWK of a key bundle: n/e for RSA, crv/x/y for EC, no public member for oct-HSM."""
    key: dict[str, Any] = {"kid": kid, "kty": bundle.kty, "key_ops": list(bundle.key_ops)}
    if bundle.crv is not None:
        key.update(crv=bundle.crv, x=bundle.x, y=bundle.y)
    elif bundle.n:
        key.update(n=bundle.n, e=bundle.e)
    return key


def release_policy_json(policy: KeyReleasePolicy) -> dict[str, Any]:
    """``KeyReleasePolicy`` of keys.json: ``contentType``, ``data`` (base64url), ``immutable``."""
    return {
        "contentType": policy.content_type,
        "data": b64url_encode(policy.data),
        "immutable": policy.immutable,
    }


def key_bundle_json(bundle: KeyBundle, kid: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "key": key_json(bundle, kid),
        "attributes": key_attributes_json(bundle),
        "tags": dict(bundle.tags),
    }
    if bundle.release_policy is not None:
        body["release_policy"] = release_policy_json(bundle.release_policy)
    return body
