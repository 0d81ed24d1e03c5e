"""Authenticated public keys: every key version's public half checked against its tag.

A key version's private key is sealed under the master key (``vault.protection``); its public
key sits in the clear in ``key_versions.public_n``/``public_e``. ``public_tag`` binds the two
(``crypto.key_binding``: an HMAC under a key derived from the master key over the vault, key
and version ids, the key type and the public key), so someone who can write the database but
does not hold ``master.key`` cannot replace the key a client is served and wraps under.

EC versions are bound the same way by their curve and public point, oct-HSM versions by their
key size (format 2 of ``crypto.key_binding``); they were all made after tags existed, so an
untagged one can only be a changed row: the backfill leaves it alone and it stays refused.

``PublicKeyBinding.check`` runs before a version's public key is served (every key bundle,
backup) or the version is used (every crypto operation). A version with a tag must match it;
a version without one (made before migration 0005, not yet backfilled) must match the public
key of its sealed private key, which is authenticated by its envelope. A mismatch raises
``KeyIntegrityFailure``, is logged, and changes nothing. What verified is remembered per
version row (the exact fields and tag), so the hot crypto path compares a few strings instead
of recomputing the HMAC; the fields are the whole input of the check, so a row changed in any
way is checked afresh.

``backfill`` (run at every start, see ``runtime``) gives the versions without a tag their tag,
in batches, after checking each against its sealed private key; a version that does not match
is left without one (and refused when asked for). It is idempotent and safe to run from
several processes at once.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from sqlalchemy import CursorResult, and_, bindparam, select, update

from customerkey.crypto.ec import coordinate_size, ec_public_jwk_fields, parse_curve
from customerkey.crypto.key_binding import (
    derive_tag_key,
    jwk_member_to_int,
    public_tag,
    public_tag_matches,
    public_tag_members,
    public_tag_members_match,
)
from customerkey.crypto.key_material import (
    RSA_KTYS,
    PrivateMaterial,
    SymmetricKey,
    key_family,
    key_size_of,
    material_from_bytes,
    public_members,
)
from customerkey.crypto.rsa import b64url_decode, b64url_encode, private_key_from_der
from customerkey.errors import DecryptionFailed, InvalidBackup, KeyIntegrityFailure
from customerkey.storage.database import Database
from customerkey.storage.models import KeyRow, KeyVersionRow, VaultRow
from customerkey.vault.hsm import AesKeySize
from customerkey.vault.protection import KeyProtector

log = logging.getLogger(__name__)

_VAULTS = VaultRow.__table__.c
_KEYS = KeyRow.__table__.c
_VERSIONS = KeyVersionRow.__table__.c
# The versions still without a tag, in id order from a bound (so a refused one is passed over).
_UNTAGGED = (
    select(
        _VERSIONS.id,
        _VERSIONS.version,
        _VERSIONS.kty,
        _VERSIONS.public_n,
        _VERSIONS.public_e,
        _VERSIONS.sealed_private_key,
        _KEYS.id.label("key_row_id"),
        _KEYS.name.label("key_name"),
        _VAULTS.id.label("vault_row_id"),
        _VAULTS.name.label("vault_name"),
    )
    .select_from(KeyVersionRow.__table__)
    .join(KeyRow.__table__, _KEYS.id == _VERSIONS.key_id)
    .join(VaultRow.__table__, _VAULTS.id == _KEYS.vault_id)
    .where(
        _VERSIONS.public_tag.is_(None),
        _VERSIONS.kty.in_(RSA_KTYS),
        _VERSIONS.id > bindparam("after"),
    )
    .order_by(_VERSIONS.id)
    .limit(bindparam("batch"))
)
# Sets a tag only where there is none yet and the public key is still the one checked.
_SET_TAG = (
    update(KeyVersionRow.metadata.tables[KeyVersionRow.__tablename__])
    .where(
        and_(
            _VERSIONS.id == bindparam("row_id"),
            _VERSIONS.public_tag.is_(None),
            _VERSIONS.kty == bindparam("checked_kty"),
            _VERSIONS.public_n == bindparam("checked_n"),
            _VERSIONS.public_e == bindparam("checked_e"),
        )
    )
    .values(public_tag=bindparam("tag"))
)

# vault id, key id, version, kty, n, e, crv, x, y, key size, tag
_Fields = tuple[
    str, str, str, str, str, str, str | None, str | None, str | None, int | None, bytes | None
]


def integrity_message(label: str) -> str:
    return (
        f"Key version '{label}' failed its integrity check: its stored public key is not the "
        "one bound to it under this installation's master key. The version is neither served "
        "nor used; report this to the platform operator (the key store was changed outside "
        "customerkey)."
    )


@dataclass(frozen=True)
class BackfillReport:
    tagged: int  # versions given their tag now
    refused: tuple[str, ...]  # "vault/key/version" of versions whose public key did not match


def _opener(
    protector: KeyProtector, sealed: bytes, vault_id: str, key_id: str, version: str
) -> Callable[[], PrivateMaterial]:
    def opened() -> PrivateMaterial:
        der = protector.open_private_key(sealed, vault_id=vault_id, key_id=key_id, version=version)
        return private_key_from_der(der)

    return opened


class PublicKeyBinding:
    def __init__(self, master_key: bytes, *, capacity: int = 8192) -> None:
        self._tag_key = derive_tag_key(master_key)
        self._verified: OrderedDict[str, _Fields] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ tags

    def tag_for_material(
        self, *, vault_id: str, key_id: str, version: str, kty: str, material: PrivateMaterial
    ) -> bytes:
        """The tag of a new version of any type whose private material is ``material``."""
        if not isinstance(material, RSAPrivateKey):
            return public_tag_members(
                self._tag_key,
                vault_id=vault_id,
                key_id=key_id,
                version=version,
                kty=kty,
                members=_material_members(material),
            )
        return self.tag_for(
            vault_id=vault_id,
            key_id=key_id,
            version=version,
            kty=kty,
            public_key=material.public_key(),
        )

    def tag_for_public(
        self,
        *,
        vault_id: str,
        key_id: str,
        version: str,
        kty: str,
        public_key: RSAPublicKey | EllipticCurvePublicKey | AesKeySize,
    ) -> bytes:
        """The tag of a new version known by its public key only (one held in an HSM; an
        oct-HSM version, which has none, by its size)."""
        if isinstance(public_key, AesKeySize):
            return public_tag_members(
                self._tag_key,
                vault_id=vault_id,
                key_id=key_id,
                version=version,
                kty=kty,
                members={"key_size": str(public_key.bits).encode("ascii")},
            )
        if isinstance(public_key, RSAPublicKey):
            return self.tag_for(
                vault_id=vault_id, key_id=key_id, version=version, kty=kty, public_key=public_key
            )
        return public_tag_members(
            self._tag_key,
            vault_id=vault_id,
            key_id=key_id,
            version=version,
            kty=kty,
            members=_ec_members(ec_public_jwk_fields(public_key)),
        )

    def tag_for(
        self, *, vault_id: str, key_id: str, version: str, kty: str, public_key: RSAPublicKey
    ) -> bytes:
        """The tag of a new version whose public key is ``public_key``."""
        numbers = public_key.public_numbers()
        return public_tag(
            self._tag_key,
            vault_id=vault_id,
            key_id=key_id,
            version=version,
            kty=kty,
            n=numbers.n,
            e=numbers.e,
        )

    def tag_for_restore(
        self,
        *,
        vault_id: str,
        key_id: str,
        version: str,
        kty: str,
        n: str,
        e: str,
        private_der: bytes,
        crv: str | None = None,
        x: str | None = None,
        y: str | None = None,
        key_size: int | None = None,
    ) -> bytes:
        """The tag of a restored version, after checking that the backup's public key is the
        public key of its private key (a backup made from a tampered store is refused)."""
        try:
            material = material_from_bytes(kty, private_der)
            if isinstance(material, SymmetricKey):
                matches = key_size_of(material) == key_size
            elif key_family(kty) == "EC":
                matches = public_members(material) == {"crv": crv, "x": x, "y": y}
            elif isinstance(material, RSAPrivateKey):
                numbers = material.public_key().public_numbers()
                matches = (jwk_member_to_int(n), jwk_member_to_int(e)) == (
                    numbers.n,
                    numbers.e,
                )
            else:
                matches = False
        except ValueError:
            matches = False
        if not matches:
            raise InvalidBackup(
                f"The backup's version {version} holds a public key that is not the public "
                "key of its private key; it was made from a damaged key store and cannot be "
                "restored."
            )
        return self.tag_for_material(
            vault_id=vault_id, key_id=key_id, version=version, kty=kty, material=material
        )

    # ------------------------------------------------------------------ the check

    def check(
        self,
        *,
        row_id: str,
        vault_id: str,
        key_id: str,
        version: str,
        kty: str,
        n: str,
        e: str,
        tag: bytes | None,
        label: str,
        private_key: Callable[[], object],
        crv: str | None = None,
        x: str | None = None,
        y: str | None = None,
        key_size: int | None = None,
    ) -> None:
        """Raise ``KeyIntegrityFailure`` unless the stored public half of version row
        ``row_id`` is bound to it: by its tag, or (no tag yet) by its sealed private key,
        which ``private_key`` opens. ``label`` ("vault/key/version") names it in the error."""
        fields: _Fields = (
            vault_id,
            key_id,
            version,
            kty,
            n,
            e,
            crv,
            x,
            y,
            key_size,
            None if tag is None else bytes(tag),
        )
        with self._lock:
            if self._verified.get(row_id) == fields:
                self._verified.move_to_end(row_id)
                return
        if not self._verify(fields, private_key):
            log.error(
                "key version %s (row %s) failed its public-key integrity check; refused",
                label,
                row_id,
            )
            raise KeyIntegrityFailure(integrity_message(label))
        with self._lock:
            self._verified[row_id] = fields
            self._verified.move_to_end(row_id)
            while len(self._verified) > self._capacity:
                self._verified.popitem(last=False)

    def _verify(self, fields: _Fields, private_key: Callable[[], object]) -> bool:
        vault_id, key_id, version, kty, n_text, e_text, _crv, _x, _y, _size, tag = fields
        try:
            family = key_family(kty)
        except ValueError:
            return False
        if family != "RSA":
            return self._verify_members(fields, family)
        try:
            n, e = jwk_member_to_int(n_text), jwk_member_to_int(e_text)
        except ValueError:
            return False
        if tag is not None:
            return public_tag_matches(
                self._tag_key,
                tag,
                vault_id=vault_id,
                key_id=key_id,
                version=version,
                kty=kty,
                n=n,
                e=e,
            )
        try:
            material = private_key()
        except (DecryptionFailed, ValueError):
            return False
        if not isinstance(material, RSAPrivateKey):
            return False
        numbers = material.public_key().public_numbers()
        return (numbers.n, numbers.e) == (n, e)

    def _verify_members(self, fields: _Fields, family: str) -> bool:
        vault_id, key_id, version, kty, _n, _e, crv, x, y, key_size, tag = fields
        try:
            members = _stored_members(family, crv, x, y, key_size)
        except ValueError:
            return False
        if tag is None:
            # Every EC and oct-HSM version was tagged when it was made: a missing tag is a
            # changed row, refused (and left alone by the backfill).
            return False
        return public_tag_members_match(
            self._tag_key,
            tag,
            vault_id=vault_id,
            key_id=key_id,
            version=version,
            kty=kty,
            members=members,
        )

    # ------------------------------------------------------------------ backfill

    def backfill(
        self, db: Database, protector: KeyProtector, *, batch: int = 200
    ) -> BackfillReport:
        """Tag every version without a tag whose public key is its sealed private key's;
        leave the others untagged (they stay refused). Batches of ``batch`` versions: each
        read in a read transaction, checked outside any, tagged in one short write."""
        after = ""
        tagged = 0
        refused: list[str] = []
        while True:
            with db.read() as session:
                rows = session.execute(_UNTAGGED, {"after": after, "batch": batch}).all()
            if not rows:
                break
            after = rows[-1].id
            updates: list[dict[str, object]] = []
            for row in rows:
                label = f"{row.vault_name}/{row.key_name}/{row.version}"

                opened = _opener(
                    protector, row.sealed_private_key, row.vault_row_id, row.key_row_id, row.version
                )
                fields: _Fields = (
                    row.vault_row_id,
                    row.key_row_id,
                    row.version,
                    row.kty,
                    row.public_n,
                    row.public_e,
                    None,
                    None,
                    None,
                    None,
                    None,
                )
                if not self._verify(fields, opened):
                    log.error(
                        "key version %s (row %s): its public key is not its sealed private "
                        "key's; left without a tag, and refused",
                        label,
                        row.id,
                    )
                    refused.append(label)
                    continue
                n, e = jwk_member_to_int(row.public_n), jwk_member_to_int(row.public_e)
                updates.append(
                    {
                        "row_id": row.id,
                        "checked_kty": row.kty,
                        "checked_n": row.public_n,
                        "checked_e": row.public_e,
                        "tag": public_tag(
                            self._tag_key,
                            vault_id=row.vault_row_id,
                            key_id=row.key_row_id,
                            version=row.version,
                            kty=row.kty,
                            n=n,
                            e=e,
                        ),
                    }
                )
            if updates:
                with db.transaction() as session:
                    for params in updates:
                        result = cast(CursorResult[Any], session.execute(_SET_TAG, params))
                        tagged += result.rowcount or 0
            if len(rows) < batch:
                break
        if tagged or refused:
            log.info("public-key tags: %d key version(s) tagged, %d refused", tagged, len(refused))
        return BackfillReport(tagged=tagged, refused=tuple(refused))


def _material_members(material: PrivateMaterial) -> dict[str, bytes]:
    """The format-2 members of an EC or oct-HSM version, from its private material."""
    if isinstance(material, SymmetricKey):
        return {"key_size": str(material.key_size).encode("ascii")}
    fields = public_members(material)
    if "crv" not in fields:
        raise ValueError("an RSA key has no format-2 members")
    return _ec_members(fields)


def _ec_members(fields: Mapping[str, str]) -> dict[str, bytes]:
    """The format-2 members of an EC key, from its public JWK fields (crv, x, y)."""
    return {
        "crv": fields["crv"].encode("utf-8"),
        "x": b64url_decode(fields["x"]),
        "y": b64url_decode(fields["y"]),
    }


def _stored_members(
    family: str, crv: str | None, x: str | None, y: str | None, key_size: int | None
) -> dict[str, bytes]:
    """The format-2 members a stored EC or oct-HSM row claims, accepting only the canonical
    text of each (``ValueError`` otherwise, so what is served is exactly what is tagged)."""
    if family == "oct":
        if key_size not in (128, 192, 256):
            raise ValueError("not an AES key size")
        return {"key_size": str(key_size).encode("ascii")}
    if crv is None or x is None or y is None:
        raise ValueError("an EC row without its curve or point")
    size = coordinate_size(parse_curve(crv))
    raw_x, raw_y = b64url_decode(x), b64url_decode(y)
    if len(raw_x) != size or len(raw_y) != size:
        raise ValueError("not a full-length coordinate")
    if b64url_encode(raw_x) != x or b64url_encode(raw_y) != y:
        raise ValueError("not canonical base64url")
    return {"crv": crv.encode("utf-8"), "x": raw_x, "y": raw_y}
