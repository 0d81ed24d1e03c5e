"""The keys API (data plane), Azure Key Vault compatible: every route of keys.json we serve.

Each handler is thin: authenticate (``vault_actor``), check ``api-version``, call the vault
service, shape the answer like Key Vault. Vault-specific routes only answer on vault hosts.
Secure key release (``POST /keys/{name}[/{version}]/release``, api-version 7.3 and later) is
registered before the generic ``/keys/{name}/{version}/{operation}`` route so that it wins.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, TypeVar

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from customerkey.api.deps import (
    SUPPORTED_API_VERSIONS,
    ApiContext,
    api,
    check_api_version,
    generates_key,
    throttle_keys_call,
    vault_actor,
    vault_base_url,
    vault_name,
    vault_throttle,
)
from customerkey.api.schemas import (
    KeyAttributesIn,
    KeyCreateBody,
    KeyImportBody,
    KeyOperationBody,
    KeyReleaseBody,
    KeyReleasePolicyIn,
    KeyRestoreBody,
    KeySignBody,
    KeyUpdateBody,
    KeyVerifyBody,
    RandomBytesBody,
    RotationPolicyBody,
    deleted_fields,
    key_bundle_json,
    key_item_json,
    rotation_policy_json,
)
from customerkey.clock import from_unix
from customerkey.crypto.rsa import b64url_decode, b64url_encode
from customerkey.errors import BadParameter
from customerkey.vault.attestation import trusted_authorities
from customerkey.vault.models import Actor, DeletedKeyBundle, KeyBundle, KeyReleasePolicy
from customerkey.vault.release_policy import POLICY_CONTENT_TYPE

router = APIRouter(
    tags=["keys"], dependencies=[Depends(check_api_version), Depends(throttle_keys_call)]
)
M = TypeVar("M", bound=BaseModel)

DEFAULT_PAGE = 25
# Longest duration a rotation policy may name. Unbounded ones overflowed timedelta (a 500) or,
# stored, the dates computed from them at every rotation and scheduler tick.


def _base(request: Request) -> str:
    return vault_base_url(request)


def _kid(request: Request, bundle: KeyBundle) -> str:
    return f"{_base(request)}/keys/{bundle.id.name}/{bundle.id.version}"


def _bundle(request: Request, bundle: KeyBundle) -> dict[str, Any]:
    vault_throttle(request).learn(bundle.id.vault, bundle.id.name, bundle.kty, bundle.key_size)
    body = key_bundle_json(bundle, _kid(request, bundle))
    if "release_policy" in body and not _has_release(request):
        del body["release_policy"]  # keys.json has it from 7.3 on
    return body


# The first api-version whose keys.json has release and release policies (7.3 made them GA).
_RELEASE_SINCE = SUPPORTED_API_VERSIONS.index("7.3")


def _has_release(request: Request) -> bool:
    version = request.query_params.get("api-version", "")
    return (
        version in SUPPORTED_API_VERSIONS
        and SUPPORTED_API_VERSIONS.index(version) >= _RELEASE_SINCE
    )


def _deleted(request: Request, deleted: DeletedKeyBundle) -> dict[str, Any]:
    recovery_id = f"{_base(request)}/deletedkeys/{deleted.key.id.name}"
    return {**deleted_fields(deleted, recovery_id), **_bundle(request, deleted.key)}


def _deleted_item(request: Request, deleted: DeletedKeyBundle) -> dict[str, Any]:
    recovery_id = f"{_base(request)}/deletedkeys/{deleted.key.id.name}"
    return {
        **deleted_fields(deleted, recovery_id),
        **key_item_json(deleted.key, _kid(request, deleted.key)),
    }


def _times(attributes: KeyAttributesIn | None) -> dict[str, Any]:
    if attributes is None:
        return {}
    out: dict[str, Any] = {}
    try:
        if attributes.nbf is not None:
            out["not_before"] = from_unix(attributes.nbf)
        if attributes.exp is not None:
            out["expires"] = from_unix(attributes.exp)
    except (OverflowError, OSError, ValueError):
        raise BadParameter("'nbf' and 'exp' must be unix times in seconds.") from None
    return out


def _page(
    request: Request, items: list[dict[str, Any]], maxresults: int | None, skiptoken: str | None
) -> dict[str, Any]:
    size = DEFAULT_PAGE if maxresults is None else maxresults
    if not 1 <= size <= 25:
        raise BadParameter("maxresults must be between 1 and 25.")
    start = 0
    if skiptoken:
        try:
            start = int(base64.urlsafe_b64decode(skiptoken.encode() + b"==").decode())
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise BadParameter("The $skiptoken is not valid.") from None
        if start < 0:
            raise BadParameter("The $skiptoken is not valid.")
    page = items[start : start + size]
    next_link = None
    if start + size < len(items):
        token = base64.urlsafe_b64encode(str(start + size).encode()).decode().rstrip("=")
        version = request.query_params.get("api-version", "7.5")
        next_link = (
            f"{_base(request)}{request.url.path}?api-version={version}"
            f"&$skiptoken={token}&maxresults={size}"
        )
    return {"value": page, "nextLink": next_link}


def _decode_value(value: str, field: str = "value") -> bytes:
    try:
        return b64url_decode(value)
    except ValueError:
        raise BadParameter(f"'{field}' must be base64url encoded.") from None


def _decode_optional(value: str | None, field: str) -> bytes | None:
    return None if value is None else _decode_value(value, field)


def _release_policy(policy: KeyReleasePolicyIn | None) -> KeyReleasePolicy | None:
    if policy is None:
        return None
    if not policy.data:
        raise BadParameter("'release_policy.data' (the base64url policy document) is missing.")
    return KeyReleasePolicy(
        data=_decode_value(policy.data, "release_policy.data"),
        content_type=policy.contentType or POLICY_CONTENT_TYPE,
        immutable=bool(policy.immutable),
    )


def _parse(model: type[M], body: Any) -> M:
    """``body`` as ``model``, refused like any invalid request body (400 BadParameter)."""
    try:
        return model.model_validate({} if body is None else body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


# ------------------------------------------------------------------ keys


@router.post("/keys/{name}/create")
@generates_key
def create_key(
    name: str,
    body: KeyCreateBody,
    request: Request,
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    attrs = body.attributes or KeyAttributesIn()
    bundle = api(request).runtime.vault.create_key(
        actor,
        vault,
        name,
        kty=body.kty,
        size=body.key_size,
        public_exponent=body.public_exponent or 65537,
        key_ops=body.key_ops,
        enabled=True if attrs.enabled is None else attrs.enabled,
        tags=body.tags,
        crv=body.crv,
        exportable=bool(attrs.exportable),
        release_policy=_release_policy(body.release_policy),
        **_times(body.attributes),
    )
    return _bundle(request, bundle)


@router.put("/keys/{name}")
def import_key(
    name: str,
    body: KeyImportBody,
    request: Request,
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    attrs = body.attributes or KeyAttributesIn()
    bundle = api(request).runtime.vault.import_key(
        actor,
        vault,
        name,
        body.key.model_dump(exclude_none=True),
        hsm=bool(body.hsm),
        enabled=True if attrs.enabled is None else attrs.enabled,
        tags=body.tags,
        exportable=bool(attrs.exportable),
        release_policy=_release_policy(body.release_policy),
        **_times(body.attributes),
    )
    return _bundle(request, bundle)


@router.get("/keys")
def list_keys(
    request: Request,
    maxresults: int | None = Query(None, ge=1, le=DEFAULT_PAGE),
    skiptoken: str | None = Query(None, alias="$skiptoken"),
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    keys = api(request).runtime.vault.list_keys(actor, vault)
    return _page(request, [key_item_json(k, _kid(request, k)) for k in keys], maxresults, skiptoken)


@router.get("/keys/{name}/versions")
def list_key_versions(
    name: str,
    request: Request,
    maxresults: int | None = Query(None, ge=1, le=DEFAULT_PAGE),
    skiptoken: str | None = Query(None, alias="$skiptoken"),
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    versions = api(request).runtime.vault.list_versions(actor, vault, name)
    items = [key_item_json(v, _kid(request, v)) for v in versions]
    return _page(request, items, maxresults, skiptoken)


@router.get("/keys/{name}/rotationpolicy")
def get_rotation_policy(
    name: str,
    request: Request,
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    policy = api(request).runtime.vault.get_rotation_policy(actor, vault, name)
    return rotation_policy_json(policy, f"{_base(request)}/keys/{name}/rotationpolicy")


@router.put("/keys/{name}/rotationpolicy")
def set_rotation_policy(
    name: str,
    body: RotationPolicyBody,
    request: Request,
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    policy = api(request).runtime.vault.set_rotation_policy(
        actor, vault, name, body.model_dump(exclude_none=True)
    )
    return rotation_policy_json(policy, f"{_base(request)}/keys/{name}/rotationpolicy")


@router.post("/keys/{name}/rotate")
@generates_key
def rotate_key(
    name: str,
    request: Request,
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    return _bundle(request, api(request).runtime.vault.rotate_key(actor, vault, name))


@router.post("/keys/{name}/backup")
def backup_key(
    name: str,
    request: Request,
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    blob = api(request).runtime.vault.backup_key(actor, vault, name)
    return {"value": b64url_encode(blob)}


@router.post("/keys/restore")
def restore_key(
    body: KeyRestoreBody,
    request: Request,
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    blob = _decode_value(body.value)
    return _bundle(request, api(request).runtime.vault.restore_key(actor, vault, blob))


@router.get("/keys/{name}")
@router.get("/keys/{name}/", include_in_schema=False)
@router.get("/keys/{name}/{version}")
def get_key(
    name: str,
    request: Request,
    version: str | None = None,
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    return _bundle(request, api(request).runtime.vault.get_key(actor, vault, name, version))


@router.patch("/keys/{name}")
@router.patch("/keys/{name}/", include_in_schema=False)
@router.patch("/keys/{name}/{version}")
def update_key(
    name: str,
    body: KeyUpdateBody,
    request: Request,
    version: str | None = None,
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    attrs = body.attributes or KeyAttributesIn()
    bundle = api(request).runtime.vault.update_key(
        actor,
        vault,
        name,
        version,
        enabled=attrs.enabled,
        key_ops=body.key_ops,
        tags=body.tags,
        exportable=attrs.exportable,
        release_policy=_release_policy(body.release_policy),
        **_times(body.attributes),
    )
    return _bundle(request, bundle)


@router.delete("/keys/{name}")
def delete_key(
    name: str,
    request: Request,
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    # Key Vault's own API has no way to refuse for what depends on a key (nor to force it):
    # Azure clients get Azure's behaviour; the audit record names what the key protected.
    deleted = api(request).runtime.vault.delete_key(actor, vault, name, force=True)
    return _deleted(request, deleted)


# ------------------------------------------------------------------ secure key release


def _release(
    request: Request, actor: Actor, vault: str, name: str, version: str | None, body: Any
) -> dict[str, Any]:
    api_version = request.query_params.get("api-version", "")
    if not _has_release(request):
        raise BadParameter(
            f"Key release is not part of api-version {api_version}; use 7.3 or later."
        )
    parsed = _parse(KeyReleaseBody, body)
    context = api(request)
    value = context.runtime.vault.release_key(
        actor,
        vault,
        name,
        version,
        parsed.target,
        authorities=trusted_authorities(context.runtime.settings.release_authorities),
        vault_url=_base(request),
        api_version=api_version,
        nonce=parsed.nonce,
        enc=parsed.enc,
    )
    return {"value": value}


@router.post("/keys/{name}/{version}/release")
def release_key(
    name: str,
    version: str,
    request: Request,
    body: Any = Body(None),
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    """release: the key wrapped for the attested environment, in a JWS signed by the vault."""
    return _release(request, actor, vault, name, version, body)


@router.post("/keys/{name}/release")
@router.post("/keys/{name}//release", include_in_schema=False)
def release_newest_key(
    name: str,
    request: Request,
    body: Any = Body(None),
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    return _release(request, actor, vault, name, None, body)


# ------------------------------------------------------------------ crypto operations

# The operation names of the path (Key Vault spells wrapkey/unwrapkey in lower case).
_OPERATIONS = {
    "wrapkey": "wrapKey",
    "unwrapkey": "unwrapKey",
    "encrypt": "encrypt",
    "decrypt": "decrypt",
    "sign": "sign",
    "verify": "verify",
}


def _crypto(
    request: Request,
    context: ApiContext,
    actor: Actor,
    vault: str,
    name: str,
    version: str | None,
    operation: str,
    body: Any,
) -> dict[str, Any]:
    """One crypto operation. The operation name is checked before the body, so an unknown one
    is named as such whatever the body holds."""
    canonical = _OPERATIONS.get(operation.lower())
    if canonical is None:
        raise BadParameter(
            f"Unknown key operation '{operation}'; the key operations are: "
            + ", ".join(_OPERATIONS)
            + "."
        )
    service = context.runtime.vault
    if canonical == "verify":
        verify = _parse(KeyVerifyBody, body)
        result = service.verify(
            actor,
            vault,
            name,
            version,
            verify.alg,
            _decode_value(verify.digest, "digest"),
            _decode_value(verify.value),
        )
        return {"value": bool(result.verified)}
    if canonical == "sign":
        sign = _parse(KeySignBody, body)
        result = service.sign(actor, vault, name, version, sign.alg, _decode_value(sign.value))
    else:
        parsed = _parse(KeyOperationBody, body)
        result = service.crypto(
            actor,
            canonical,
            vault,
            name,
            version,
            parsed.alg,
            _decode_value(parsed.value),
            iv=_decode_optional(parsed.iv, "iv"),
            aad=_decode_optional(parsed.aad, "aad"),
            tag=_decode_optional(parsed.tag, "tag"),
        )
    kid = f"{_base(request)}/keys/{result.kid.name}/{result.kid.version}"
    answer: dict[str, Any] = {"kid": kid, "value": b64url_encode(result.value)}
    for field, raw in (("iv", result.iv), ("tag", result.tag), ("aad", result.aad)):
        if raw is not None:
            answer[field] = b64url_encode(raw)
    return answer


# response_model=None: FastAPI would otherwise validate the returned dict against its
# ``dict[str, Any]`` annotation in its thread pool, one more hand-off on the hottest route.
@router.post("/keys/{name}/{version}/{operation}", response_model=None)
def key_operation(
    name: str,
    version: str,
    operation: str,
    request: Request,
    body: Any = Body(None),
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    """encrypt, decrypt, wrapkey, unwrapkey, sign, verify (``vault.key_types``)."""
    return _crypto(request, api(request), actor, vault, name, version, operation, body)


@router.post("/keys/{name}//{operation}", include_in_schema=False, response_model=None)
def key_operation_newest(
    name: str,
    operation: str,
    request: Request,
    body: Any = Body(None),
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    return _crypto(request, api(request), actor, vault, name, None, operation, body)


@router.post("/rng")
def get_random_bytes(
    body: RandomBytesBody,
    request: Request,
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    """getRandomBytes: ``{"count": 1..128}`` answers ``{"value": base64url}``."""
    value = api(request).runtime.vault.random_bytes(actor, vault, body.count)
    return {"value": b64url_encode(value)}


# ------------------------------------------------------------------ deleted keys


@router.get("/deletedkeys")
def list_deleted_keys(
    request: Request,
    maxresults: int | None = Query(None, ge=1, le=DEFAULT_PAGE),
    skiptoken: str | None = Query(None, alias="$skiptoken"),
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    deleted = api(request).runtime.vault.list_deleted_keys(actor, vault)
    return _page(request, [_deleted_item(request, d) for d in deleted], maxresults, skiptoken)


@router.get("/deletedkeys/{name}")
def get_deleted_key(
    name: str,
    request: Request,
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    return _deleted(request, api(request).runtime.vault.get_deleted_key(actor, vault, name))


@router.post("/deletedkeys/{name}/recover")
def recover_deleted_key(
    name: str,
    request: Request,
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> dict[str, Any]:
    return _bundle(request, api(request).runtime.vault.recover_deleted_key(actor, vault, name))


@router.delete("/deletedkeys/{name}", status_code=204)
def purge_deleted_key(
    name: str,
    request: Request,
    vault: str = Depends(vault_name),
    actor: Actor = Depends(vault_actor),
) -> Response:
    api(request).runtime.vault.purge_deleted_key(actor, vault, name)
    return Response(status_code=204)
