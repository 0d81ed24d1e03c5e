"""Keys: create (or roll), import, read, list, update and rotate versioned keys of every Key
Vault type (RSA, RSA-HSM, EC, EC-HSM, oct-HSM; the rules are ``vault.key_types``'), with the
validation of their type, size or curve, operations and tags, and their rotation policies (a
new version's expiry follows its key's policy; the scheduler in ``usage`` applies them).
Exportable versions and their release policies follow the rules of ``release`` (secure key
release), and key exchange keys and BYOK imports those of ``byok``, which this part builds on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from customerkey.crypto.ec import EC_CURVES, curve_bits, generate_ec_key
from customerkey.crypto.key_material import (
    PrivateMaterial,
    SymmetricKey,
    key_size_of,
    material_to_bytes,
    public_members,
)
from customerkey.crypto.rsa import generate_rsa_key
from customerkey.errors import BadParameter, Conflict
from customerkey.rng import new_hex_id
from customerkey.storage.models import KeyRow, KeyVersionRow, VaultRow
from customerkey.storage.repositories import KeyRepository
from customerkey.vault.byok import KEK_OPS, is_kek_request
from customerkey.vault.hsm import GeneratedKey, public_fields
from customerkey.vault.key_types import (
    KEY_OPS_BY_FAMILY,
    KEY_TYPES,
    family_of,
    key_ops_for,
    known_key_ops,
    normalize_kty,
)
from customerkey.vault.models import Actor, KeyBundle, KeyReleasePolicy, RotationPolicy
from customerkey.vault.names import validate_key_name
from customerkey.vault.rotation import expiry_for_new_version, policy_from_json, policy_to_json
from customerkey.vault.service.byok import ByokMixin
from customerkey.vault.service.jwk_material import material_from_jwk

__all__ = [
    "AES_KEY_SIZES",
    "EC_DEFAULT_CURVE",
    "KEY_SIZES",
    "KEY_TYPES",
    "RSA_KEY_OPS",
    "KeysMixin",
]

KEY_SIZES = (2048, 3072, 4096)  # RSA
AES_KEY_SIZES = (128, 192, 256)  # oct-HSM
RSA_KEY_OPS = KEY_OPS_BY_FAMILY["RSA"]
EC_DEFAULT_CURVE = "P-256"  # of an EC key created without ``crv``, as Azure does


class KeysMixin(ByokMixin):
    """Key versions and rotation policies."""

    def _validate_new_key(
        self,
        kty: str,
        size: int | None,
        crv: str | None,
        key_ops: Sequence[str] | None,
        not_before: datetime | None,
        expires: datetime | None,
    ) -> tuple[str, int | str, tuple[str, ...]]:
        """(kty, RSA/AES size in bits or EC curve, key_ops) of a key to create."""
        normalized = normalize_kty(kty)
        family = family_of(normalized)
        shape: int | str
        if family == "EC":
            curve = crv if crv is not None else EC_DEFAULT_CURVE
            if curve not in EC_CURVES:
                raise BadParameter(
                    f"Curve '{curve}' is not supported; use one of: {', '.join(EC_CURVES)}."
                )
            if size is not None and size != curve_bits(curve):
                raise BadParameter(
                    f"key_size {size} does not match curve {curve} ({curve_bits(curve)} bits)."
                )
            shape = curve
        else:
            if crv is not None:
                raise BadParameter(
                    f"'crv' names the curve of an EC key; a {normalized} key has none."
                )
            if family == "oct":
                if size is None:
                    raise BadParameter(
                        f"Key type '{normalized}' needs a key_size of 128, 192 or 256; an "
                        "oct-HSM key without one is not supported."
                    )
                if size not in AES_KEY_SIZES:
                    raise BadParameter(
                        f"AES key size {size} is not supported; use 128, 192 or 256."
                    )
                shape = size
            else:
                shape = 2048 if size is None else size
                if shape not in KEY_SIZES:
                    raise BadParameter(
                        f"RSA key size {shape} is not supported; use 2048, 3072 or 4096."
                    )
        ops = key_ops_for(family, key_ops)
        if not_before and expires and expires <= not_before:
            raise BadParameter("The key's expiry must be after its not-before time.")
        return normalized, shape, ops

    def _held_in_hsm(self, kty: str) -> bool:
        return self._hsm is not None and kty in self._hsm.serves

    def _new_material(
        self, kty: str, shape: int | str, public_exponent: int, *, label: str, kek: bool = False
    ) -> PrivateMaterial | GeneratedKey:
        """A new version's key: made in the HSM for the key types it serves (``label`` names
        the token object; ``kek``: a BYOK key exchange key), else in software."""
        if kek:
            return self._new_kek(int(shape), label=label)
        if self._hsm is not None and kty in self._hsm.serves:
            if public_exponent != 65537:
                raise BadParameter("A key made in the HSM has the public exponent 65537.")
            return self._hsm.generate(kty, shape, label=label)
        family = family_of(kty)
        if family == "EC":
            return generate_ec_key(str(shape))
        if family == "oct":
            return SymmetricKey(self._rng.token_bytes(int(shape) // 8))
        return generate_rsa_key(int(shape), public_exponent)

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
        private_key: PrivateMaterial | GeneratedKey,
        *,
        kty: str,
        key_ops: tuple[str, ...],
        enabled: bool,
        not_before: datetime | None,
        expires: datetime | None,
        tags: dict[str, str],
        imported: bool,
        operation: str,
        exportable: bool = False,
        release_policy: KeyReleasePolicy | None = None,
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
        if isinstance(private_key, GeneratedKey):
            # Held in the HSM: the row names the token object and seals nothing.
            fields, key_size = public_fields(private_key.public)
            sealed, object_id = b"", private_key.object_id
            tag = self._binding.tag_for_public(
                vault_id=vault.id,
                key_id=key.id,
                version=version,
                kty=kty,
                public_key=private_key.public,
            )
        else:
            fields, key_size = public_members(private_key), key_size_of(private_key)
            object_id = None
            sealed = self._protector.seal_private_key(
                material_to_bytes(private_key), vault_id=vault.id, key_id=key.id, version=version
            )
            tag = self._binding.tag_for_material(
                vault_id=vault.id, key_id=key.id, version=version, kty=kty, material=private_key
            )
        row = KeyVersionRow(
            id=new_hex_id(self._rng),
            key_id=key.id,
            version=version,
            seq=keys.next_seq(key.id),
            kty=kty,
            key_size=key_size,
            key_ops=list(key_ops),
            enabled=enabled,
            not_before=not_before,
            expires=expires,
            created_at=now,
            updated_at=now,
            tags=tags,
            exportable=False,
            imported=imported,
            public_n=fields.get("n", ""),
            public_e=fields.get("e", ""),
            crv=fields.get("crv"),
            public_x=fields.get("x"),
            public_y=fields.get("y"),
            sealed_private_key=sealed,
            public_tag=tag,
            hsm_object_id=object_id,
        )
        self._set_release(
            row, vault_id=vault.id, key_id=key.id, exportable=exportable, policy=release_policy
        )
        keys.add_version(row)
        details: dict[str, Any] = {"kty": kty, "size": row.key_size, "ops": list(key_ops)}
        if row.crv is not None:
            details["crv"] = row.crv
        if exportable:
            details["exportable"] = True
        self._record(
            session,
            actor,
            operation,
            vault=vault,
            key=key.name,
            version=version,
            details=details,
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
        crv: str | None = None,
        exportable: bool = False,
        release_policy: KeyReleasePolicy | None = None,
    ) -> KeyBundle:
        """Create a key, or a new version when the name exists (that is a key roll)."""
        validate_key_name(name)
        kek = self._kek_requested(kty, key_ops)
        normalized, shape, ops = self._validate_new_key(
            kty, size, crv, None if kek else key_ops, not_before, expires
        )
        ops = KEK_OPS if kek else ops
        policy = self._release_settings(normalized, exportable, release_policy)
        clean_tags = self._validate_tags(tags)
        if public_exponent not in (3, 65537):
            raise BadParameter("The public exponent must be 65537 (or 3).")
        if exportable and self._held_in_hsm(normalized):
            raise BadParameter(
                f"{normalized} keys are made in this installation's HSM, where they are not "
                "extractable; an exportable key cannot be made."
            )
        private_key = self._new_material(
            normalized, shape, public_exponent, label=f"customerkey {vault.lower()}/{name}", kek=kek
        )

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
                exportable=exportable,
                release_policy=policy,
            )

        return self._run(actor, "KeyCreate", work, vault=vault.lower(), key=name)

    _material_from_jwk = staticmethod(material_from_jwk)

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
        exportable: bool = False,
        release_policy: KeyReleasePolicy | None = None,
    ) -> KeyBundle:
        validate_key_name(name)
        byok = jwk.get("key_hsm") is not None
        private_key: PrivateMaterial | GeneratedKey
        if byok:
            final_kty = normalize_kty(str(jwk.get("kty")))
        else:
            final_kty, private_key = self._material_from_jwk(jwk, hsm)
        in_token = byok or self._held_in_hsm(final_kty)
        if in_token and exportable:
            raise BadParameter(
                f"{final_kty} keys are kept in this installation's HSM, where they are not "
                "extractable; an exportable key cannot be imported."
            )
        policy = self._release_settings(final_kty, exportable, release_policy)
        raw_ops = jwk.get("key_ops")
        if raw_ops is not None and not (
            isinstance(raw_ops, list) and all(isinstance(o, str) for o in raw_ops)
        ):
            raise BadParameter("'key_ops' must be a list of strings.")
        if is_kek_request(raw_ops):
            raise BadParameter("A key exchange key (key_ops 'import') is made, never imported.")
        ops = key_ops_for(family_of(final_kty), raw_ops)
        if not_before and expires and expires <= not_before:
            raise BadParameter("The key's expiry must be after its not-before time.")
        clean_tags = self._validate_tags(tags)
        if byok:
            final_kty, private_key = self._unwrap_byok(actor, vault, name, jwk)
        elif in_token:
            assert self._hsm is not None and not isinstance(private_key, GeneratedKey)

            def may_import(session: Session) -> None:
                self._require(session, actor, self._vault_row(session, vault), "import")

            # Nothing is made in the token for a caller who may not import here.
            self._run(actor, "KeyImport", may_import, vault=vault.lower(), key=name, read_only=True)
            # Held in the token from here on; the plaintext was only ever in this request.
            private_key = self._hsm.import_material(
                final_kty, private_key, label=f"customerkey {vault.lower()}/{name}"
            )

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
                exportable=exportable,
                release_policy=policy,
            )

        try:
            return self._run(actor, "KeyImport", work, vault=vault.lower(), key=name)
        except BaseException:
            if isinstance(private_key, GeneratedKey) and self._hsm is not None:
                self._hsm.destroy(private_key.object_id)  # not stored: not kept in the token
            raise

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
        exportable: bool | None = None,
        release_policy: KeyReleasePolicy | None = None,
    ) -> KeyBundle:
        """Change a version's attributes, operations, tags or release policy (the newest when
        no version); ``exportable`` can only be confirmed, never changed."""
        if key_ops is not None and not is_kek_request(key_ops):
            known_key_ops(key_ops)
        clean_tags = self._validate_tags(tags) if tags is not None else None
        policy = self.checked_release_policy(release_policy) if release_policy is not None else None

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
            if key_ops is not None:
                self._refuse_kek_ops_change(target.key_ops, key_ops)
                kek = tuple(target.key_ops) == KEK_OPS
                ops = KEK_OPS if kek else key_ops_for(family_of(target.kty), key_ops)
                target.key_ops = list(ops)
                changes["key_ops"] = list(ops)
            if clean_tags is not None:
                target.tags = clean_tags
                changes["tags"] = clean_tags
            self._update_release(
                row, key, target, exportable=exportable, policy=policy, changes=changes
            )
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
        """A new version with the newest version's type, size or curve, operations and tags."""

        def work(session: Session) -> KeyBundle:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "rotate")
            key = self._key_row(session, row, name)
            return self._rotate(session, actor, row, key)

        return self._run(actor, "KeyRotate", work, vault=vault.lower(), key=name)

    def _rotate(self, session: Session, actor: Actor, vault: VaultRow, key: KeyRow) -> KeyBundle:
        newest = self._version_row(session, key, None)
        # An exportable newest version passes on its policy, once its settings are checked.
        policy = self._stored_release_policy(vault, key, newest)
        return self._add_version(
            session,
            actor,
            vault,
            key.name,
            self._new_material(
                newest.kty,
                newest.crv if newest.crv is not None else newest.key_size,
                65537,
                label=f"customerkey {vault.name}/{key.name}",
                kek=tuple(newest.key_ops) == KEK_OPS,
            ),
            kty=newest.kty,
            key_ops=tuple(newest.key_ops),
            enabled=True,
            not_before=None,
            expires=None,
            tags=dict(newest.tags),
            imported=False,
            operation="KeyRotate",
            exportable=newest.exportable,
            release_policy=policy,
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
