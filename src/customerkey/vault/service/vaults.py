"""Vaults: create, read, list, soft-delete, recover and purge them, their access policies (who
holds which key permissions), and the checks other parts ask of a vault (``vault_tenant``,
``has_permissions``). A subscription belongs to the first tenant whose vault names it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from customerkey.errors import BadParameter, Conflict, Forbidden, PrincipalNotFound, PurgeProtected
from customerkey.identity import authorize as authz
from customerkey.rng import new_hex_id
from customerkey.storage.models import (
    AccessPolicyRow,
    KeyVersionRow,
    PrincipalRow,
    SubscriptionRow,
    VaultRow,
)
from customerkey.storage.repositories import PrincipalRepository, VaultRepository
from customerkey.vault.models import Actor, Vault
from customerkey.vault.names import validate_vault_name
from customerkey.vault.permissions import KEY_PERMISSIONS, normalize_permissions
from customerkey.vault.service.base import ServiceBase

MIN_RETENTION_DAYS, MAX_RETENTION_DAYS = 7, 90


class VaultsMixin(ServiceBase):
    """Vault management and access policies."""

    def create_vault(
        self,
        actor: Actor,
        name: str,
        *,
        subscription: str,
        region: str,
        resource_group: str = "customerkey",
        retention_days: int = 90,
        purge_protection: bool = False,
        tenant: str | None = None,
    ) -> Vault:
        canonical = validate_vault_name(name)
        if not MIN_RETENTION_DAYS <= retention_days <= MAX_RETENTION_DAYS:
            raise BadParameter(
                f"Soft-delete retention must be between {MIN_RETENTION_DAYS} and "
                f"{MAX_RETENTION_DAYS} days, got {retention_days}."
            )
        for label, value in (("subscription", subscription), ("region", region)):
            if not value or not value.strip():
                raise BadParameter(f"A vault needs a {label}.")
        owner_tenant = (tenant or actor.tenant).strip().lower()
        if not authz.allowed(actor, authz.Action.VAULT_CREATE, authz.Tenant(owner_tenant)):
            raise Forbidden(
                f"'{actor.principal_id}' cannot create vaults in tenant '{owner_tenant}'."
            )

        def work(session: Session) -> Vault:
            self._claim_subscription(session, owner_tenant, subscription.strip())
            vaults = VaultRepository(session)
            existing = vaults.find(canonical)
            if existing is not None:
                state = " (soft-deleted; recover or purge it)" if existing.deleted_at else ""
                raise Conflict(f"A vault named '{existing.name}' already exists{state}.")
            now = self._clock.now()
            row = VaultRow(
                id=new_hex_id(self._rng),
                name=canonical,
                display_name=name,
                tenant=owner_tenant,
                subscription=subscription.strip(),
                region=region.strip().lower(),
                resource_group=resource_group,
                retention_days=retention_days,
                purge_protection=purge_protection,
                created_by=actor.principal_id,
                created_at=now,
            )
            if actor.kind != "operator" and actor.object_id:
                grant = AccessPolicyRow(object_id=actor.object_id, key_permissions=[])
                grant.key_permissions = list(KEY_PERMISSIONS)
                row.policies.append(grant)
            vaults.add(row)
            self._record(
                session,
                actor,
                "VaultPut",
                vault=row,
                details={
                    "subscription": row.subscription,
                    "region": row.region,
                    "retention_days": retention_days,
                    "purge_protection": purge_protection,
                },
            )
            return self._vault_view(session, row)

        return self._run(actor, "VaultPut", work, vault=canonical)

    def _claim_subscription(self, session: Session, tenant: str, subscription: str) -> None:
        """A subscription belongs to the first tenant whose vault names it, and to it only."""
        owner = session.get(SubscriptionRow, subscription)
        if owner is None:
            session.add(
                SubscriptionRow(id=subscription, tenant=tenant, created_at=self._clock.now())
            )
            session.flush()
        elif owner.tenant != tenant:
            raise Forbidden(f"The subscription '{subscription}' belongs to another tenant.")

    def get_vault(self, actor: Actor, name: str) -> Vault:
        with self.db.transaction() as session:
            row = self._vault_row(session, name)
            resource = authz.Vault(row.tenant, self._granted(session, actor, row))
            if not authz.allowed(actor, authz.Action.VAULT_READ, resource):
                raise Forbidden(
                    f"The client '{actor.principal_id}' does not have authorization to read "
                    f"key vault '{row.name}'."
                )
            return self._vault_view(session, row, actor)

    def list_vaults(self, actor: Actor, *, deleted: bool = False) -> list[Vault]:
        with self.db.transaction() as session:
            rows = VaultRepository(session).all(deleted=deleted)
            own = actor.object_id or "-"

            def granted(row: VaultRow) -> frozenset[str]:
                held = [p.key_permissions for p in row.policies if p.object_id == own]
                return frozenset(held[0]) if held else frozenset()

            visible = [
                r
                for r in rows
                if authz.allowed(actor, authz.Action.VAULT_READ, authz.Vault(r.tenant, granted(r)))
            ]
            return [self._vault_view(session, r, actor) for r in visible]

    def authorize_vault_delete(self, actor: Actor, name: str) -> None:
        """Refuse what ``delete_vault`` would refuse first (no such vault, caller not allowed),
        changing nothing: a front end asks this before it asks for a confirmation."""

        def work(session: Session) -> None:
            self._require_manager(actor, self._vault_row(session, name))

        self._run(actor, "VaultDelete", work, vault=name.lower(), read_only=True)

    def delete_vault(self, actor: Actor, name: str, *, force: bool = False) -> Vault:
        """Soft-delete a vault. Refused (``StillProtectsData``) while a key of it protects
        data, unless ``force``: then the audit record names what it protected."""

        def work(session: Session) -> Vault:
            row = self._vault_row(session, name)
            self._require_manager(actor, row)
            forced = self._refuse_if_needed(session, row.name, None, force=force)
            now = self._clock.now()
            row.deleted_at = now
            row.scheduled_purge_at = now + timedelta(days=row.retention_days)
            details = {"forced": True, "protected": forced} if forced else None
            self._record(session, actor, "VaultDelete", vault=row, details=details)
            return self._vault_view(session, row)

        result = self._run(
            actor, "VaultDelete", self._revoking("vault-deleted", work), vault=name.lower()
        )
        self._notify(result.name, "", "vault-deleted")
        return result

    def recover_vault(self, actor: Actor, name: str) -> Vault:
        def work(session: Session) -> Vault:
            row = self._vault_row(session, name, deleted=True)
            self._require_manager(actor, row)
            row.deleted_at = None
            row.scheduled_purge_at = None
            self._record(session, actor, "VaultRecover", vault=row)
            return self._vault_view(session, row)

        return self._run(actor, "VaultRecover", work, vault=name.lower())

    def purge_vault(self, actor: Actor, name: str) -> None:
        def work(session: Session) -> list[KeyVersionRow]:
            row = self._vault_row(session, name, deleted=True)
            self._require_manager(actor, row)
            now = self._clock.now()
            if row.purge_protection and row.scheduled_purge_at and now < row.scheduled_purge_at:
                raise PurgeProtected(
                    f"Vault '{row.name}' has purge protection; it can be purged only after "
                    f"{row.scheduled_purge_at.isoformat()}."
                )
            versions = self._versions_of_vault(session, row)
            VaultRepository(session).purge(row)
            self._record(session, actor, "VaultPurge", vault=row)
            return versions

        versions = self._run(actor, "VaultPurge", work, vault=name.lower())
        self._private_keys.discard(v.id for v in versions)
        self.destroy_token_objects(v.hsm_object_id for v in versions)

    def set_access_policy(
        self,
        actor: Actor,
        vault: str,
        object_id: str,
        permissions: Iterable[str],
        *,
        replace: bool = False,
    ) -> Vault:
        """Grant key permissions (merged with what the principal holds, unless ``replace``)."""
        try:
            wanted = normalize_permissions(permissions)
        except ValueError as exc:
            raise BadParameter(str(exc)) from None

        def work(session: Session) -> Vault:
            row = self._vault_row(session, vault)
            self._require_manager(actor, row)
            principal = self._grantee(session, actor, row, object_id)
            existing = VaultRepository(session).policy(row, principal.object_id)
            before: tuple[str, ...] = tuple(existing.key_permissions) if existing else ()
            merged = wanted if replace else normalize_permissions((*before, *wanted))
            if existing is None:
                row.policies.append(
                    AccessPolicyRow(object_id=principal.object_id, key_permissions=list(merged))
                )
            else:
                existing.key_permissions = list(merged)
            session.flush()
            self._record(
                session,
                actor,
                "VaultAccessPolicySet",
                vault=row,
                details={
                    "object_id": principal.object_id,
                    "principal": principal.id,
                    "before": list(before),
                    "after": list(merged),
                },
                subject_id=principal.object_id,
            )
            return self._vault_view(session, row)

        result = self._run(
            actor,
            "VaultAccessPolicySet",
            self._revoking("access-changed", work),
            vault=vault.lower(),
        )
        self._notify(result.name, "", "access-changed")
        return result

    def remove_access_policy(self, actor: Actor, vault: str, object_id: str) -> Vault:
        def work(session: Session) -> Vault:
            row = self._vault_row(session, vault)
            self._require_manager(actor, row)
            # A grant of a principal deleted since is removed by its object id.
            known = PrincipalRepository(session).find(object_id)
            target = known.object_id if known is not None else object_id.lower()
            existing = VaultRepository(session).policy(row, target)
            if existing is None:
                raise PrincipalNotFound(
                    f"Vault '{row.name}' has no access policy for '{object_id}'."
                )
            before = list(existing.key_permissions)
            row.policies.remove(existing)
            session.flush()
            self._record(
                session,
                actor,
                "VaultAccessPolicyRemove",
                vault=row,
                details={
                    "object_id": target,
                    "principal": known.id if known is not None else None,
                    "before": before,
                },
                subject_id=target,
            )
            return self._vault_view(session, row)

        result = self._run(
            actor,
            "VaultAccessPolicyRemove",
            self._revoking("access-changed", work),
            vault=vault.lower(),
        )
        self._notify(result.name, "", "access-changed")
        return result

    @staticmethod
    def _grantee(session: Session, actor: Actor, vault: VaultRow, reference: str) -> PrincipalRow:
        """The principal a grant names (sign-in name or object id), looked up in the vault's
        tenant and among the platform's first-party apps; the operator may name any. Another
        tenant's principal is not found, as if it did not exist."""
        principal = PrincipalRepository(session).find(reference)
        if principal is not None and (
            principal.tenant == vault.tenant
            or principal.builtin
            or authz.allowed(actor, authz.Action.PLATFORM_OPERATE, authz.Platform())
        ):
            return principal
        raise PrincipalNotFound(
            f"Cannot find principal '{reference}' in the directory of tenant '{vault.tenant}'."
        )

    def vault_tenant(self, name: str) -> str | None:
        """The tenant a live vault belongs to, or None. Not secret: the 401 challenge names it."""
        try:
            canonical = validate_vault_name(name)
        except BadParameter:
            return None
        with self.db.transaction() as session:
            row = VaultRepository(session).find(canonical)
            return row.tenant if row is not None and row.deleted_at is None else None

    def subscriptions(self, actor: Actor) -> list[str]:
        """The ids of the subscriptions the caller's tenant owns, in order (ARM's list)."""
        with self.db.read() as session:
            rows = session.scalars(
                select(SubscriptionRow.id)
                .where(SubscriptionRow.tenant == actor.tenant)
                .order_by(SubscriptionRow.id)
            )
            return list(rows)

    def has_permissions(
        self, vault: str, object_id: str, permissions: Sequence[str]
    ) -> dict[str, bool]:
        """Which of ``permissions`` the principal holds on the vault (no audit; for checks)."""
        with self.db.transaction() as session:
            row = self._vault_row(session, vault)
            policy = VaultRepository(session).policy(row, object_id)
            held = set(policy.key_permissions) if policy else set()
            return {p: p in held for p in permissions}
