"""Key backup blobs: every version and all metadata of one key, sealed for this installation.

Wire format, version 1 (integers big-endian)::

    b"CKBK" | format u8 = 1 | header length u16 | header | envelope

``header`` is UTF-8 JSON ``{"name", "subscription", "region", "created", "tenant"}`` in the
clear, so a restore into the wrong tenant, subscription or geography is refused with a clear
message before any decryption (``tenant`` is absent from backups made before tenants owned
their backups; those restore only within their subscription, which one tenant owns).
``envelope`` is ``crypto.aead.seal`` under the master key with context ``{"purpose":
"key-backup", "header": <the header bytes, latin-1>}``, over the UTF-8 JSON
payload ``{"name", "created", "rotation_policy", "versions": [...]}``; each version carries
its attributes, tags, public key and base64url private key: PKCS#8 for RSA and EC, the raw AES
key for oct-HSM. An EC version also carries ``crv``, ``x`` and ``y`` (its ``n`` and ``e`` are
""); versions without ``crv`` are RSA or oct-HSM, so backups made before other key types
existed read exactly as they always did (the format number stays 1). An exportable version also
carries its ``release_policy`` (``{"contentType", "data": base64url, "immutable"}``); versions
without one read as before. The API hands the whole blob out base64url-encoded. Only an
installation holding the same master key can open it.

Version 2 carries keys held in an HSM (``hsm.security_domain``), and opens in any installation
whose token holds the same security domain, whatever its master key::

    b"CKBK" | format u8 = 2 | header length u16 | header
            | wrapped key length u16 | wrapped key | nonce (12) | ciphertext

``header`` is version 1's plus ``"security_domain"`` (the domain's identifier, so a restore
under another domain is refused before anything is opened). ``wrapped key`` is the backup's
AES-256 key wrapped under the security domain in the token (``CKM_AES_KEY_WRAP_PAD``);
``ciphertext`` is AES-256-GCM (tag appended) under that key, computed in the token, with
``nonce`` and the header bytes as associated data, over version 1's payload in which each
version carries ``"wrapped"`` (its private key wrapped under the security domain in the token,
base64url) instead of ``"private_key"``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from customerkey.clock import from_unix
from customerkey.crypto.aead import open_sealed, seal
from customerkey.crypto.rsa import b64url_decode, b64url_encode
from customerkey.errors import DecryptionFailed, InvalidBackup
from customerkey.vault.hsm import SealedBackup

MAGIC = b"CKBK"
FORMAT_VERSION = 1
FORMAT_HSM = 2
_PREFIX = struct.Struct(">4sBH")
_LENGTH = struct.Struct(">H")
_NONCE = 12
CORRUPT = "The backup blob is corrupt, truncated, or was not made by this installation."


@dataclass(frozen=True)
class BackupHeader:
    name: str
    subscription: str
    region: str
    created: datetime
    tenant: str | None = None  # the owning tenant's id (authenticated with the envelope)
    security_domain: str | None = None  # format 2: the identifier of the domain it is under


@dataclass(frozen=True)
class BackupVersion:
    version: str
    seq: int
    kty: str
    key_size: int
    key_ops: tuple[str, ...]
    enabled: bool
    not_before: datetime | None
    expires: datetime | None
    created: datetime
    updated: datetime
    tags: Mapping[str, str]
    exportable: bool
    imported: bool
    n: str
    e: str
    private_der: bytes = field(repr=False)
    crv: str | None = None
    x: str | None = None
    y: str | None = None
    # An exportable version's release policy: {"contentType", "data" (base64url), "immutable"}.
    release_policy: Mapping[str, Any] | None = None
    # Format 2: the private key wrapped under the security domain (``private_der`` is empty).
    wrapped: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class KeyBackup:
    header: BackupHeader
    rotation_policy: Mapping[str, Any] | None
    versions: tuple[BackupVersion, ...]


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, int | float):
        raise InvalidBackup(CORRUPT)
    try:
        return from_unix(value)
    except (OverflowError, OSError, ValueError):
        raise InvalidBackup(CORRUPT) from None


def _optional_text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidBackup(CORRUPT)
    return value


def _release_policy(value: Any) -> Mapping[str, Any] | None:
    if value is None:
        return None
    if (
        not isinstance(value, dict)
        or set(value) != {"contentType", "data", "immutable"}
        or not isinstance(value["contentType"], str)
        or not isinstance(value["data"], str)
        or not isinstance(value["immutable"], bool)
    ):
        raise InvalidBackup(CORRUPT)
    try:
        b64url_decode(value["data"])
    except ValueError:
        raise InvalidBackup(CORRUPT) from None
    return dict(value)


def _header_bytes(header: BackupHeader) -> bytes:
    body = {
        "name": header.name,
        "subscription": header.subscription,
        "region": header.region,
        "created": header.created.timestamp(),
        **({"tenant": header.tenant} if header.tenant is not None else {}),
        **(
            {"security_domain": header.security_domain}
            if header.security_domain is not None
            else {}
        ),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _payload(backup: KeyBackup) -> bytes:
    payload = {
        "rotation_policy": backup.rotation_policy,
        "versions": [
            {
                "version": v.version,
                "seq": v.seq,
                "kty": v.kty,
                "key_size": v.key_size,
                "key_ops": list(v.key_ops),
                "enabled": v.enabled,
                "nbf": _ts(v.not_before),
                "exp": _ts(v.expires),
                "created": _ts(v.created),
                "updated": _ts(v.updated),
                "tags": dict(v.tags),
                "exportable": v.exportable,
                "imported": v.imported,
                "n": v.n,
                "e": v.e,
                **(
                    {"private_key": b64url_encode(v.private_der)}
                    if v.wrapped is None
                    else {"wrapped": b64url_encode(v.wrapped)}
                ),
                **({"crv": v.crv, "x": v.x, "y": v.y} if v.crv is not None else {}),
                **(
                    {"release_policy": dict(v.release_policy)}
                    if v.release_policy is not None
                    else {}
                ),
            }
            for v in backup.versions
        ],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def encode_backup(backup: KeyBackup, *, master_key: bytes, master_key_id: str) -> bytes:
    if backup.header.security_domain is not None or any(
        v.wrapped is not None for v in backup.versions
    ):
        raise ValueError("a backup of HSM keys is format 2 (encode_hsm_backup)")
    header = _header_bytes(backup.header)
    sealed = seal(
        master_key,
        _payload(backup),
        key_id=master_key_id,
        key_version="backup-1",
        context={"purpose": "key-backup", "header": header.decode("latin-1")},
    )
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header + sealed


def encode_hsm_backup(
    backup: KeyBackup, *, seal_in_token: Callable[[bytes, bytes], SealedBackup]
) -> bytes:
    """Format 2: ``seal_in_token(payload, header)`` seals under the security domain."""
    domain = backup.header.security_domain
    if domain is None or any(v.wrapped is None for v in backup.versions):
        raise ValueError("format 2 holds HSM key versions wrapped under a security domain")
    header = _header_bytes(backup.header)
    sealed = seal_in_token(_payload(backup), header)
    if sealed.domain != domain or len(sealed.nonce) != _NONCE:
        raise ValueError("sealed under another security domain than the header names")
    return (
        _PREFIX.pack(MAGIC, FORMAT_HSM, len(header))
        + header
        + _LENGTH.pack(len(sealed.key))
        + sealed.key
        + sealed.nonce
        + sealed.ciphertext
    )


def _split(blob: bytes) -> tuple[int, bytes, bytes]:
    if len(blob) < _PREFIX.size:
        raise InvalidBackup(CORRUPT)
    magic, version, header_len = _PREFIX.unpack_from(blob)
    if magic != MAGIC or version not in (FORMAT_VERSION, FORMAT_HSM):
        raise InvalidBackup(CORRUPT)
    end = _PREFIX.size + header_len
    if len(blob) <= end:
        raise InvalidBackup(CORRUPT)
    return version, blob[_PREFIX.size : end], blob[end:]


def _sealed_hsm(header: BackupHeader, rest: bytes) -> SealedBackup:
    if header.security_domain is None or len(rest) < _LENGTH.size:
        raise InvalidBackup(CORRUPT)
    (key_len,) = _LENGTH.unpack_from(rest)
    key_end = _LENGTH.size + key_len
    if len(rest) <= key_end + _NONCE:
        raise InvalidBackup(CORRUPT)
    return SealedBackup(
        domain=header.security_domain,
        key=rest[_LENGTH.size : key_end],
        nonce=rest[key_end : key_end + _NONCE],
        ciphertext=rest[key_end + _NONCE :],
    )


def read_backup_header(blob: bytes) -> BackupHeader:
    """The clear header: which key, subscription and geography the backup belongs to (and,
    format 2, under which security domain)."""
    version, header, _ = _split(blob)
    try:
        body = json.loads(header)
        created = _dt(body["created"])
        name, subscription, region = body["name"], body["subscription"], body["region"]
    except (ValueError, KeyError, TypeError):
        raise InvalidBackup(CORRUPT) from None
    if created is None or not all(isinstance(x, str) for x in (name, subscription, region)):
        raise InvalidBackup(CORRUPT)
    tenant = body.get("tenant")
    if tenant is not None and not isinstance(tenant, str):
        raise InvalidBackup(CORRUPT)
    domain = body.get("security_domain")
    if (version == FORMAT_HSM) != isinstance(domain, str):
        raise InvalidBackup(CORRUPT)
    return BackupHeader(
        name=name,
        subscription=subscription,
        region=region,
        created=created,
        tenant=tenant,
        security_domain=domain,
    )


def is_hsm_backup(blob: bytes) -> bool:
    """Whether ``blob`` is format 2 (HSM keys under a security domain)."""
    return _split(blob)[0] == FORMAT_HSM


def decode_backup(
    blob: bytes,
    *,
    master_key: bytes,
    open_in_token: Callable[[SealedBackup, bytes], bytes] | None = None,
) -> KeyBackup:
    """Format 1 opens under ``master_key``; format 2 with ``open_in_token(sealed, header)``
    (whose ``SecurityDomainMismatch`` passes through; any other failure is ``InvalidBackup``)."""
    version, header_bytes, sealed = _split(blob)
    header = read_backup_header(blob)
    try:
        if version == FORMAT_HSM:
            if open_in_token is None:
                raise InvalidBackup(CORRUPT)
            plaintext = open_in_token(_sealed_hsm(header, sealed), header_bytes)
        else:
            plaintext = open_sealed(
                master_key,
                sealed,
                context={"purpose": "key-backup", "header": header_bytes.decode("latin-1")},
            )
        payload = json.loads(plaintext)
        versions = tuple(
            BackupVersion(
                version=str(v["version"]),
                seq=int(v["seq"]),
                kty=str(v["kty"]),
                key_size=int(v["key_size"]),
                key_ops=tuple(str(op) for op in v["key_ops"]),
                enabled=bool(v["enabled"]),
                not_before=_dt(v["nbf"]),
                expires=_dt(v["exp"]),
                created=_dt(v["created"]) or header.created,
                updated=_dt(v["updated"]) or header.created,
                tags={str(k): str(val) for k, val in dict(v["tags"]).items()},
                exportable=bool(v["exportable"]),
                imported=bool(v["imported"]),
                n=str(v["n"]),
                e=str(v["e"]),
                private_der=(
                    b"" if version == FORMAT_HSM else b64url_decode(str(v["private_key"]))
                ),
                wrapped=b64url_decode(str(v["wrapped"])) if version == FORMAT_HSM else None,
                crv=_optional_text(v.get("crv")),
                x=_optional_text(v.get("x")),
                y=_optional_text(v.get("y")),
                release_policy=_release_policy(v.get("release_policy")),
            )
            for v in payload["versions"]
        )
    except DecryptionFailed:
        raise InvalidBackup(CORRUPT) from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvalidBackup(CORRUPT) from None
    if not versions:
        raise InvalidBackup(CORRUPT)
    policy = payload.get("rotation_policy")
    return KeyBackup(header=header, rotation_policy=policy, versions=versions)
