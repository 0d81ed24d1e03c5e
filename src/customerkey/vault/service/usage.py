"""Key usage (operations counted per version) and the scheduler's ``tick``: purge what soft
delete's retention has released, then apply rotation policies (rotate, or record that a key is
near expiry once per version). The scheduler rotates through the keys part, so this part builds
on ``KeysMixin``."""

from __future__ import annotations

from sqlalchemy.orm import Session

from customerkey.errors import Forbidden
from customerkey.identity import authorize as authz
from customerkey.storage.models import VaultRow
from customerkey.storage.repositories import KeyRepository, VaultRepository
from customerkey.vault.models import Actor, TickReport, VersionUsage
from customerkey.vault.rotation import due_actions
from customerkey.vault.service.keys import KeysMixin


class UsageMixin(KeysMixin):
    """Usage counts and the scheduler."""

    def key_usage(self, actor: Actor, vault: str, name: str) -> list[VersionUsage]:
        def work(session: Session) -> list[VersionUsage]:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "get")
            key = self._key_row(session, row, name)
            return [
                VersionUsage(
                    version=v.version,
                    seq=v.seq,
                    enabled=v.enabled,
                    created=v.created_at,
                    operation_count=v.operation_count,
                )
                for v in KeyRepository(session).versions(key.id)
            ]

        return self._run(actor, "KeyUsage", work, vault=vault.lower(), key=name)

    def tick(self, actor: Actor) -> TickReport:
        """The scheduler's periodic work: purge what retention has released, apply rotation
        policies. Safe to run from several processes (each step is its own transaction)."""
        if not authz.allowed(actor, authz.Action.PLATFORM_OPERATE, authz.Platform()):
            raise Forbidden("Only the platform operator runs the scheduler.")
        now = self._clock.now()
        purged_keys: list[str] = []
        purged_vaults: list[str] = []
        rotated: list[str] = []
        notified: list[str] = []
        in_token: list[str | None] = []
        with self.db.transaction() as session:
            for key in KeyRepository(session).due_for_purge(now):
                vault = session.get(VaultRow, key.vault_id)
                label = f"{vault.name if vault else '?'}/{key.name}"
                versions = KeyRepository(session).versions(key.id)
                self._private_keys.discard(v.id for v in versions)
                in_token.extend(v.hsm_object_id for v in versions)
                KeyRepository(session).purge(key)
                self._record(
                    session,
                    actor,
                    "KeyPurge",
                    vault=vault,
                    key=label.split("/", 1)[1],
                    details={"reason": "retention ended"},
                )
                purged_keys.append(label)
            for vault in VaultRepository(session).due_for_purge(now):
                versions = self._versions_of_vault(session, vault)
                self._private_keys.discard(v.id for v in versions)
                in_token.extend(v.hsm_object_id for v in versions)
                VaultRepository(session).purge(vault)
                self._record(
                    session,
                    actor,
                    "VaultPurge",
                    vault=vault,
                    details={"reason": "retention ended"},
                )
                purged_vaults.append(vault.name)
        self.destroy_token_objects(in_token)
        with self.db.transaction() as session:
            for key in KeyRepository(session).with_rotation_policy():
                vault_row = session.get(VaultRow, key.vault_id)
                if vault_row is None or vault_row.deleted_at is not None:
                    continue
                policy = self._policy(key)
                newest = KeyRepository(session).newest(key.id)
                if policy is None or newest is None:
                    continue
                actions = due_actions(
                    policy,
                    newest_created=newest.created_at,
                    newest_expires=newest.expires,
                    now=now,
                )
                label = f"{vault_row.name}/{key.name}"
                if "Rotate" in actions:
                    self._rotate(session, actor, vault_row, key)
                    rotated.append(label)
                elif "Notify" in actions:
                    stored = dict(key.rotation_policy or {})
                    if stored.get("_notified_version") != newest.version:
                        stored["_notified_version"] = newest.version
                        key.rotation_policy = stored
                        self._record(
                            session,
                            actor,
                            "KeyNearExpiry",
                            vault=vault_row,
                            key=key.name,
                            version=newest.version,
                        )
                        notified.append(label)
        return TickReport(
            purged_keys=tuple(purged_keys),
            purged_vaults=tuple(purged_vaults),
            rotated_keys=tuple(rotated),
            notified_keys=tuple(notified),
        )
