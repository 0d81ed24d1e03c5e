"""Keys: create (or roll), import, read, list, update and rotate versioned RSA keys, with the
validation of their type, size, operations and tags, and their rotation policies (a new
version's expiry follows its key's policy; the scheduler in ``usage`` applies them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from sqlalchemy.orm import Session

from customerkey.crypto.rsa import (
    generate_rsa_key,
    private_key_from_jwk,
    private_key_to_der,
    public_jwk_fields,
)
from customerkey.errors import BadParameter, Conflict
from customerkey.rng import new_hex_id
from customerkey.storage.models import KeyRow, KeyVersionRow, VaultRow
from customerkey.storage.repositories import KeyRepository
from customerkey.vault.models import Actor, KeyBundle, RotationPolicy
from customerkey.vault.names import validate_key_name
from customerkey.vault.rotation import expiry_for_new_version, policy_from_json, policy_to_json
from customerkey.vault.service.base import ServiceBase

KEY_TYPES = ("RSA", "RSA-HSM")
KEY_SIZES = (2048, 3072, 4096)
RSA_KEY_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")


class KeysMixin(ServiceBase):
    """Key versions and rotation policies."""

    def _validate_new_key(
        self,
        kty: str,
        size: int | None,
        key_ops: Sequence[str] | None,
        not_before: datetime | None,
        expires: datetime | None,
    ) -> tuple[str, int, tuple[str, ...]]:
        normalized = kty.upper()
        if normalized not in KEY_TYPES:
            raise BadParameter(
                f"Key type '{kty}' is not supported; use one of: {', '.join(KEY_TYPES)}."
            )
        key_size = 2048 if size is None else size
        if key_size not in KEY_SIZES:
            raise BadParameter(f"RSA key size {key_size} is not supported; use 2048, 3072 or 4096.")
        ops = self._validate_ops(key_ops)
        if not_before and expires and expires <= not_before:
            raise BadParameter("The key's expiry must be after its not-before time.")
        return normalized, key_size, ops

    @staticmethod
    def _validate_ops(key_ops: Sequence[str] | None) -> tuple[str, ...]:
        if key_ops is None:
            return RSA_KEY_OPS
        by_lower = {op.lower(): op for op in RSA_KEY_OPS}
        ops: list[str] = []
        for op in key_ops:
            canonical = by_lower.get(op.lower())
            if canonical is None:
                raise BadParameter(
                    f"Key operation '{op}' is not valid for an RSA key; use: "
                    + ", ".join(RSA_KEY_OPS)
                    + "."
                )
            if canonical not in ops:
                ops.append(canonical)
        return tuple(ops)

    @staticmethod
    def _validate_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
        tags = dict(tags or {})
        if len(tags) > 15:
            raise BadParameter("A key can carry at most 15 tags.")
        for k, v in tags.items():
            if not isinstance(k, str) or not isinstance(v, str) or not k or len(k) > 512:
                raise BadParameter("Tag names must be 1-512 characters and values strings.")
            if len(v) > 256:
                raise BadParameter(f"Tag '{k}' is longer than 256 characters.")
        return tags

    def _add_version(
        self,
        session: Session,
        actor: Actor,
        vault: VaultRow,
        name: str,
        private_key: RSAPrivateKey,
        *,
        kty: str,
        key_ops: tuple[str, ...],
        enabled: bool,
        not_before: datetime | None,
        expires: datetime | None,
        tags: dict[str, str],
        imported: bool,
        operation: str,
    ) -> KeyBundle:
        keys = KeyRepository(session)
        key = keys.find(vault.id, name)
        if key is not None and key.deleted_at is not None:
            raise Conflict(
                f"Key {key.name} is currently in a deleted but recoverable state, and its name "
                "cannot be reused; in this state, the key can only be recovered or purged."
            )
        now = self._clock.now()
        if key is None:
            key = KeyRow(
                id=new_hex_id(self._rng),
                vault_id=vault.id,
                name=name,
                name_lower=name.lower(),
                created_at=now,
            )
            keys.add(key)
        policy = self._policy(key)
        if expires is None and policy is not None:
            expires = expiry_for_new_version(policy, now)
        version = new_hex_id(self._rng)
        fields = public_jwk_fields(private_key.public_key())
        row = KeyVersionRow(
            id=new_hex_id(self._rng),
            key_id=key.id,
            version=version,
            seq=keys.next_seq(key.id),
            kty=kty,
            key_size=private_key.key_size,
            key_ops=list(key_ops),
            enabled=enabled,
            not_before=not_before,
            expires=expires,
            created_at=now,
            updated_at=now,
            tags=tags,
            exportable=False,
            imported=imported,
            public_n=fields["n"],
            public_e=fields["e"],
            sealed_private_key=self._protector.seal_private_key(
                private_key_to_der(private_key), vault_id=vault.id, key_id=key.id, version=version
            ),
            public_tag=self._binding.tag_for(
                vault_id=vault.id,
                key_id=key.id,
                version=version,
                kty=kty,
                public_key=private_key.public_key(),
            ),
        )
        keys.add_version(row)
        self._record(
            session,
            actor,
            operation,
            vault=vault,
            key=key.name,
            version=version,
            details={"kty": kty, "size": row.key_size, "ops": list(key_ops)},
        )
        return self._bundle(vault, key, row)

    def create_key(
        self,
        actor: Actor,
        vault: str,
        name: str,
        *,
        kty: str = "RSA",
        size: int | None = None,
        public_exponent: int = 65537,
        key_ops: Sequence[str] | None = None,
        enabled: bool = True,
        not_before: datetime | None = None,
        expires: datetime | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> KeyBundle:
        """Create a key, or a new version when the name exists (that is a key roll)."""
        validate_key_name(name)
        normalized, key_size, ops = self._validate_new_key(kty, size, key_ops, not_before, expires)
        clean_tags = self._validate_tags(tags)
        if public_exponent not in (3, 65537):
            raise BadParameter("The public exponent must be 65537 (or 3).")
        private_key = generate_rsa_key(key_size, public_exponent)

        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "create")
            return self._add_version(
                session,
                actor,
                row,
                name,
                private_key,
                kty=normalized,
                key_ops=ops,
                enabled=enabled,
                not_before=not_before,
                expires=expires,
                tags=clean_tags,
                imported=False,
                operation="KeyCreate",
            )

        return self._run(actor, "KeyCreate", work, vault=vault.lower(), key=name)

    def import_key(
        self,
        actor: Actor,
        vault: str,
        name: str,
        jwk: Mapping[str, Any],
        *,
        hsm: bool = False,
        enabled: bool = True,
        not_before: datetime | None = None,
        expires: datetime | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> KeyBundle:
        validate_key_name(name)
        kty = str(jwk.get("kty", "")).upper()
        if kty not in KEY_TYPES:
            raise BadParameter(f"Key type '{jwk.get('kty')}' cannot be imported; use RSA.")
        try:
            private_key = private_key_from_jwk(jwk)
        except ValueError as exc:
            raise BadParameter(f"The key material is not a valid RSA private key: {exc}") from None
        if private_key.key_size not in KEY_SIZES:
            raise BadParameter(
                f"RSA key size {private_key.key_size} is not supported; use 2048, 3072 or 4096."
            )
        raw_ops = jwk.get("key_ops")
        if raw_ops is not None and not (
            isinstance(raw_ops, list) and all(isinstance(o, str) for o in raw_ops)
        ):
            raise BadParameter("'key_ops' must be a list of strings.")
        ops = self._validate_ops(raw_ops)
        if not_before and expires and expires <= not_before:
            raise BadParameter("The key's expiry must be after its not-before time.")
        clean_tags = self._validate_tags(tags)
        final_kty = "RSA-HSM" if hsm or kty == "RSA-HSM" else "RSA"

        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "import")
            return self._add_version(
                session,
                actor,
                row,
                name,
                private_key,
                kty=final_kty,
                key_ops=ops,
                enabled=enabled,
                not_before=not_before,
                expires=expires,
                tags=clean_tags,
                imported=True,
                operation="KeyImport",
            )

        return self._run(actor, "KeyImport", work, vault=vault.lower(), key=name)

    def get_key(self, actor: Actor, vault: str, name: str, version: str | None = None) -> KeyBundle:
        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "get")
            key = self._key_row(session, row, name)
            return self._bundle(row, key, self._version_row(session, key, version))

        return self._run(actor, "KeyGet", work, vault=vault.lower(), key=name)

    def list_keys(self, actor: Actor, vault: str) -> list[KeyBundle]:
        """The newest version of each active key, by name."""

        def work(session: Session) -> list[KeyBundle]:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "list")
            keys = KeyRepository(session)
            result = []
            for key in keys.all(row.id):
                newest = keys.newest(key.id)
                if newest is not None:
                    result.append(self._bundle(row, key, newest))
            return result

        return self._run(actor, "KeyList", work, vault=vault.lower())

    def list_versions(self, actor: Actor, vault: str, name: str) -> list[KeyBundle]:
        def work(session: Session) -> list[KeyBundle]:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "list")
            key = self._key_row(session, row, name)
            return [self._bundle(row, key, v) for v in KeyRepository(session).versions(key.id)]

        return self._run(actor, "KeyListVersions", work, vault=vault.lower(), key=name)

    def update_key(
        self,
        actor: Actor,
        vault: str,
        name: str,
        version: str | None = None,
        *,
        enabled: bool | None = None,
        not_before: datetime | None = None,
        expires: datetime | None = None,
        key_ops: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> KeyBundle:
        """Change a version's attributes, operations or tags (the newest when no version)."""
        ops = self._validate_ops(key_ops) if key_ops is not None else None
        clean_tags = self._validate_tags(tags) if tags is not None else None

        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "update")
            key = self._key_row(session, row, name)
            target = self._version_row(session, key, version)
            changes: dict[str, Any] = {}
            if enabled is not None and enabled != target.enabled:
                target.enabled = enabled
                changes["enabled"] = enabled
            if not_before is not None:
                target.not_before = not_before
                changes["nbf"] = not_before.isoformat()
            if expires is not None:
                target.expires = expires
                changes["exp"] = expires.isoformat()
            if target.not_before and target.expires and target.expires <= target.not_before:
                raise BadParameter("The key's expiry must be after its not-before time.")
            if ops is not None:
                target.key_ops = list(ops)
                changes["key_ops"] = list(ops)
            if clean_tags is not None:
                target.tags = clean_tags
                changes["tags"] = clean_tags
            if not changes:
                return self._bundle(row, key, target)
            target.updated_at = self._clock.now()
            self._record(
                session,
                actor,
                "KeyUpdate",
                vault=row,
                key=key.name,
                version=target.version,
                details=changes,
            )
            return self._bundle(row, key, target)

        result = self._run(
            actor, "KeyUpdate", self._revoking("key-updated", work), vault=vault.lower(), key=name
        )
        self._notify(result.id.vault, result.id.name, "key-updated")
        return result

    def rotate_key(self, actor: Actor, vault: str, name: str) -> KeyBundle:
        """A new version with the newest version's type, size, operations and tags."""

        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "rotate")
            key = self._key_row(session, row, name)
            return self._rotate(session, actor, row, key)

        return self._run(actor, "KeyRotate", work, vault=vault.lower(), key=name)

    def _rotate(self, session: Session, actor: Actor, vault: VaultRow, key: KeyRow) -> KeyBundle:
        newest = self._version_row(session, key, None)
        return self._add_version(
            session,
            actor,
            vault,
            key.name,
            generate_rsa_key(newest.key_size),
            kty=newest.kty,
            key_ops=tuple(newest.key_ops),
            enabled=True,
            not_before=None,
            expires=None,
            tags=dict(newest.tags),
            imported=False,
            operation="KeyRotate",
        )

    @staticmethod
    def _policy(key: KeyRow) -> RotationPolicy | None:
        if key.rotation_policy is None:
            return None
        stored = {k: v for k, v in key.rotation_policy.items() if not k.startswith("_")}
        policy = policy_from_json(stored)
        return RotationPolicy(
            lifetime_actions=policy.lifetime_actions,
            expiry_time=policy.expiry_time,
            created=key.rotation_policy_created,
            updated=key.rotation_policy_updated,
        )

    def get_rotation_policy(self, actor: Actor, vault: str, name: str) -> RotationPolicy:
        def work(session: Session) -> RotationPolicy:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "getrotationpolicy")
            key = self._key_row(session, row, name)
            return self._policy(key) or RotationPolicy()

        return self._run(actor, "KeyRotationPolicyGet", work, vault=vault.lower(), key=name)

    def set_rotation_policy(
        self, actor: Actor, vault: str, name: str, policy_json: Mapping[str, Any]
    ) -> RotationPolicy:
        policy = policy_from_json(policy_json)

        def work(session: Session) -> RotationPolicy:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "setrotationpolicy")
            key = self._key_row(session, row, name)
            now = self._clock.now()
            key.rotation_policy = policy_to_json(policy)
            key.rotation_policy_created = key.rotation_policy_created or now
            key.rotation_policy_updated = now
            self._record(
                session,
                actor,
                "KeyRotationPolicySet",
                vault=row,
                key=key.name,
                details=policy_to_json(policy),
            )
            return self._policy(key) or RotationPolicy()

        return self._run(actor, "KeyRotationPolicySet", work, vault=vault.lower(), key=name)
