"""Request bodies and response shapes of the Azure-Key-Vault-compatible keys API.

Request models follow keys.json (api-version 7.4+): unknown fields are ignored, as Key
Vault does; wrong types (strictly: ``"yes"`` is not a boolean, ``"2048"`` not an integer) and
strings that are not valid Unicode (lone surrogates, which JSON escapes can carry) are a 400
``BadParameter``. Responses are built as plain dicts by
the ``*_json`` functions so they match Key Vault byte for byte in field names: base64url
without padding for key material and ``value``, unix seconds for times.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from customerkey.clock import to_unix
from customerkey.vault.key_documents import (
    key_attributes_json,
    key_bundle_json,
    key_json,
    release_policy_json,
)
from customerkey.vault.models import DeletedKeyBundle, KeyBundle, RotationPolicy
from customerkey.vault.rotation import policy_to_json

__all__ = [
    "DB_INT_MAX",
    "JsonWebKeyIn",
    "KeyAttributesIn",
    "KeyCreateBody",
    "KeyImportBody",
    "KeyOperationBody",
    "KeyReleaseBody",
    "KeyReleasePolicyIn",
    "KeyRestoreBody",
    "KeySignBody",
    "KeyUpdateBody",
    "KeyVerifyBody",
    "LifetimeActionIn",
    "LifetimeActionTypeIn",
    "LifetimeTriggerIn",
    "RandomBytesBody",
    "RotationPolicyAttributesIn",
    "RotationPolicyBody",
    "UnicodeBody",
    "deleted_fields",
    "key_attributes_json",
    "key_bundle_json",
    "key_item_json",
    "key_json",
    "release_policy_json",
    "rotation_policy_json",
]

# The largest integer a database column holds (SQLite and PostgreSQL store 64-bit integers; a
# larger one is an OverflowError in the driver, never an empty result). Query and path
# parameters that reach a query are declared within it, so they are a 400 before they get there.
DB_INT_MAX = 2**63 - 1


def _reject_lone_surrogates(value: Any) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("strings must be valid Unicode (no lone surrogates)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_lone_surrogates(key)
            _reject_lone_surrogates(item)
    elif isinstance(value, list):
        for item in value:
            _reject_lone_surrogates(item)


class UnicodeBody(BaseModel):
    """A request body whose strings can all be stored, audited and echoed back as UTF-8."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        _reject_lone_surrogates(data)
        return data


class _Body(UnicodeBody):
    model_config = ConfigDict(extra="ignore", strict=True)


class KeyAttributesIn(_Body):
    enabled: bool | None = None
    nbf: int | None = None
    exp: int | None = None
    exportable: bool | None = None


class KeyReleasePolicyIn(_Body):
    """``KeyReleasePolicy`` (api-version 7.3+): the policy's bytes in ``data`` (base64url),
    their content type, and whether the policy may never change again."""

    contentType: str | None = None
    data: str | None = None
    immutable: bool | None = None


class KeyCreateBody(_Body):
    kty: str
    key_size: int | None = None
    public_exponent: int | None = None
    key_ops: list[str] | None = None
    attributes: KeyAttributesIn | None = None
    tags: dict[str, str] | None = None
    crv: str | None = None
    release_policy: KeyReleasePolicyIn | None = None


class JsonWebKeyIn(_Body):
    kty: str
    key_ops: list[str] | None = None
    n: str | None = None
    e: str | None = None
    d: str | None = None
    p: str | None = None
    q: str | None = None
    dp: str | None = None
    dq: str | None = None
    qi: str | None = None
    crv: str | None = None
    x: str | None = None
    y: str | None = None
    k: str | None = None
    key_hsm: str | None = None  # a BYOK key transfer blob, base64url (``vault.byok``)


class KeyImportBody(_Body):
    key: JsonWebKeyIn
    hsm: bool | None = Field(default=None, alias="Hsm")
    attributes: KeyAttributesIn | None = None
    tags: dict[str, str] | None = None
    release_policy: KeyReleasePolicyIn | None = None


class KeyUpdateBody(_Body):
    key_ops: list[str] | None = None
    attributes: KeyAttributesIn | None = None
    tags: dict[str, str] | None = None
    release_policy: KeyReleasePolicyIn | None = None


class KeyOperationBody(_Body):
    """encrypt, decrypt, wrapKey, unwrapKey (``KeyOperationsParameters``): ``iv``, ``aad`` and
    ``tag`` (base64url) only for the AES algorithms."""

    alg: str
    value: str
    iv: str | None = None
    aad: str | None = None
    tag: str | None = None


class KeySignBody(_Body):
    """sign (``KeySignParameters``): ``value`` is the digest."""

    alg: str
    value: str


class KeyVerifyBody(_Body):
    """verify (``KeyVerifyParameters``): ``digest`` and the signature in ``value``."""

    alg: str
    digest: str
    value: str


class KeyReleaseBody(_Body):
    """release (``KeyReleaseParameters``): the attestation token of the target environment in
    ``target``, an optional ``nonce`` echoed in the result, and the export algorithm ``enc``
    (``CKM_RSA_AES_KEY_WRAP`` by default)."""

    target: str
    nonce: str | None = None
    enc: str | None = None


class RandomBytesBody(_Body):
    """getRandomBytes (``GetRandomBytesRequest``)."""

    count: int


class KeyRestoreBody(_Body):
    value: str


class LifetimeTriggerIn(_Body):
    timeAfterCreate: str | None = None
    timeBeforeExpiry: str | None = None


class LifetimeActionTypeIn(_Body):
    type: str


class LifetimeActionIn(_Body):
    trigger: LifetimeTriggerIn
    action: LifetimeActionTypeIn


class RotationPolicyAttributesIn(_Body):
    expiryTime: str | None = None


class RotationPolicyBody(_Body):
    lifetimeActions: list[LifetimeActionIn] | None = None
    attributes: RotationPolicyAttributesIn | None = None


def key_item_json(bundle: KeyBundle, kid: str) -> dict[str, Any]:
    return {"kid": kid, "attributes": key_attributes_json(bundle), "tags": dict(bundle.tags)}


def deleted_fields(deleted: DeletedKeyBundle, recovery_id: str) -> dict[str, Any]:
    return {
        "recoveryId": recovery_id,
        "deletedDate": to_unix(deleted.deleted_date),
        "scheduledPurgeDate": to_unix(deleted.scheduled_purge_date),
    }


def rotation_policy_json(policy: RotationPolicy, policy_id: str) -> dict[str, Any]:
    body = policy_to_json(policy)
    attributes: dict[str, Any] = {}
    if policy.expiry_time is not None:
        attributes["expiryTime"] = policy.expiry_time
    if policy.created is not None:
        attributes["created"] = to_unix(policy.created)
    if policy.updated is not None:
        attributes["updated"] = to_unix(policy.updated)
    return {"id": policy_id, "lifetimeActions": body["lifetimeActions"], "attributes": attributes}
