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
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from customerkey.clock import from_unix
from customerkey.crypto.aead import open_sealed, seal
from customerkey.crypto.rsa import b64url_decode, b64url_encode
from customerkey.errors import DecryptionFailed, InvalidBackup

MAGIC = b"CKBK"
FORMAT_VERSION = 1
_PREFIX = struct.Struct(">4sBH")
_CORRUPT = "The backup blob is corrupt, truncated, or was not made by this installation."


@dataclass(frozen=True)
class BackupHeader:
    name: str
    subscription: str
    region: str
    created: datetime
    tenant: str | None = None  # the owning tenant's id (authenticated with the envelope)


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
        raise InvalidBackup(_CORRUPT)
    try:
        return from_unix(value)
    except (OverflowError, OSError, ValueError):
        raise InvalidBackup(_CORRUPT) from None


def _optional_text(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidBackup(_CORRUPT)
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
        raise InvalidBackup(_CORRUPT)
    try:
        b64url_decode(value["data"])
    except ValueError:
        raise InvalidBackup(_CORRUPT) from None
    return dict(value)


def _header_bytes(header: BackupHeader) -> bytes:
    body = {
        "name": header.name,
        "subscription": header.subscription,
        "region": header.region,
        "created": header.created.timestamp(),
        **({"tenant": header.tenant} if header.tenant is not None else {}),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def encode_backup(backup: KeyBackup, *, master_key: bytes, master_key_id: str) -> bytes:
    header = _header_bytes(backup.header)
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
                "private_key": b64url_encode(v.private_der),
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
    sealed = seal(
        master_key,
        json.dumps(payload, separators=(",", ":")).encode(),
        key_id=master_key_id,
        key_version="backup-1",
        context={"purpose": "key-backup", "header": header.decode("latin-1")},
    )
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header + sealed


def _split(blob: bytes) -> tuple[bytes, bytes]:
    if len(blob) < _PREFIX.size:
        raise InvalidBackup(_CORRUPT)
    magic, version, header_len = _PREFIX.unpack_from(blob)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise InvalidBackup(_CORRUPT)
    end = _PREFIX.size + header_len
    if len(blob) <= end:
        raise InvalidBackup(_CORRUPT)
    return blob[_PREFIX.size : end], blob[end:]


def read_backup_header(blob: bytes) -> BackupHeader:
    """The clear header: which key, subscription and geography the backup belongs to."""
    header, _ = _split(blob)
    try:
        body = json.loads(header)
        created = _dt(body["created"])
        name, subscription, region = body["name"], body["subscription"], body["region"]
    except (ValueError, KeyError, TypeError):
        raise InvalidBackup(_CORRUPT) from None
    if created is None or not all(isinstance(x, str) for x in (name, subscription, region)):
        raise InvalidBackup(_CORRUPT)
    tenant = body.get("tenant")
    if tenant is not None and not isinstance(tenant, str):
        raise InvalidBackup(_CORRUPT)
    return BackupHeader(
        name=name, subscription=subscription, region=region, created=created, tenant=tenant
    )


def decode_backup(blob: bytes, *, master_key: bytes) -> KeyBackup:
    header_bytes, sealed = _split(blob)
    header = read_backup_header(blob)
    try:
        payload = json.loads(
            open_sealed(
                master_key,
                sealed,
                context={"purpose": "key-backup", "header": header_bytes.decode("latin-1")},
            )
        )
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
                private_der=b64url_decode(str(v["private_key"])),
                crv=_optional_text(v.get("crv")),
                x=_optional_text(v.get("x")),
                y=_optional_text(v.get("y")),
                release_policy=_release_policy(v.get("release_policy")),
            )
            for v in payload["versions"]
        )
    except DecryptionFailed:
        raise InvalidBackup(_CORRUPT) from None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvalidBackup(_CORRUPT) from None
    if not versions:
        raise InvalidBackup(_CORRUPT)
    policy = payload.get("rotation_policy")
    return KeyBackup(header=header, rotation_policy=policy, versions=versions)
