"""Mailboxes and mail users: create one (its first mailbox key under the DEP it is given, or
the service-managed key), read and list them, and their statistics (Get-MailboxStatistics:
item count, size, whether every item is under a customer key, the re-key job's progress)."""

from __future__ import annotations

from sqlalchemy import func, select

from customerkey.errors import BadParameter, Conflict, NotFound
from customerkey.storage.models import MailboxKeyRow, MailboxRow, MailItemRow, TenantRow
from customerkey.vault.models import Actor
from customerkey.workloads.mail.base import MailServiceBase
from customerkey.workloads.mail.jobs import REKEY_JOB
from customerkey.workloads.mail.models import Mailbox, MailboxStatistics


class MailboxesMixin(MailServiceBase):
    """Mailboxes: create, get, list, statistics."""

    def create_mailbox(
        self,
        actor: Actor,
        tenant: str,
        upn: str,
        *,
        alias: str | None = None,
        display_name: str | None = None,
        kind: str = "user",
        policy: str | None = None,
    ) -> Mailbox:
        """A mailbox (kind user or shared) or a mail user not yet migrated (kind mailuser)."""
        tenant = tenant.lower()
        self._may_manage(actor, tenant)
        if kind not in ("user", "shared", "mailuser"):
            raise BadParameter("A mailbox kind is user, shared or mailuser.")
        upn_l = upn.strip().lower()
        if "@" not in upn_l or upn_l.startswith("@") or " " in upn_l:
            raise BadParameter(f"'{upn}' is not a user principal name (name@domain).")
        with self.db.transaction() as session:
            tenant_row = session.get(TenantRow, tenant)
            if tenant_row is None:
                raise NotFound(f"No tenant named '{tenant}'.")
            if upn_l.split("@", 1)[1] != tenant_row.mail_domain:
                raise BadParameter(
                    f"'{upn}' is not in tenant '{tenant}''s mail domain {tenant_row.mail_domain}."
                )
            if session.scalar(select(MailboxRow).where(MailboxRow.upn == upn_l)) is not None:
                raise Conflict(f"A mailbox or mail user '{upn_l}' already exists.")
        policy_id, generation_id = self._resolve_policy(tenant, policy)
        _, wrapped = self.keys.new_key(tenant, generation_id)
        now = self._clock.now()
        with self.db.transaction() as session:
            if session.scalar(select(MailboxRow).where(MailboxRow.upn == upn_l)) is not None:
                raise Conflict(f"A mailbox or mail user '{upn_l}' already exists.")
            row = MailboxRow(
                id=self._uuid(),
                tenant_id=tenant,
                upn=upn_l,
                alias=(alias or upn_l.split("@", 1)[0]).lower(),
                display_name=display_name or upn_l.split("@", 1)[0],
                kind=kind,
                state="active",
                policy_id=policy_id,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            key = self._add_key(session, row, generation_id, wrapped)
            row.current_key_id = key.id
            self._audit.append(
                session,
                tenant=tenant,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="MailUserCreate" if kind == "mailuser" else "MailboxCreate",
                request_id=actor.request_id,
                details={"mailbox": row.id, "upn": upn_l, "kind": kind, "policy": policy_id},
            )
            return self._view(session, row)

    def get(self, actor: Actor, identity: str) -> Mailbox:
        with self.db.transaction() as session:
            row = self._find(session, actor, identity)
            self._may_use(session, actor, row)
            return self._view(session, row)

    def list_mailboxes(
        self, actor: Actor, tenant: str, *, kind: str | None = None
    ) -> list[Mailbox]:
        tenant = tenant.lower()
        self._may_manage(actor, tenant)
        with self.db.transaction() as session:
            query = select(MailboxRow).where(
                MailboxRow.tenant_id == tenant, MailboxRow.state.not_in(("deleted", "purged"))
            )
            if kind is not None:
                query = query.where(MailboxRow.kind == kind)
            return [self._view(session, r) for r in session.scalars(query.order_by(MailboxRow.upn))]

    def statistics(self, actor: Actor, identity: str) -> MailboxStatistics:
        with self.db.transaction() as session:
            row = self._find(session, actor, identity)
            self._may_use(session, actor, row)
            count, size = session.execute(
                select(func.count(), func.coalesce(func.sum(MailItemRow.size), 0)).where(
                    MailItemRow.mailbox_id == row.id
                )
            ).one()
            current = session.get(MailboxKeyRow, row.current_key_id) if row.current_key_id else None
            unprotected = session.scalar(
                select(func.count())
                .select_from(MailItemRow)
                .join(MailboxKeyRow, MailboxKeyRow.id == MailItemRow.key_id)
                .where(MailItemRow.mailbox_id == row.id, MailboxKeyRow.generation_id.is_(None))
            )
            customer = current is not None and current.generation_id is not None
            job = self.jobs.active_for(session, REKEY_JOB, row.id)
            percent = None
            if job is not None:
                percent = (
                    100.0 * job.progress_done / job.progress_total if job.progress_total else 0.0
                )
            return MailboxStatistics(
                mailbox=self._view(session, row),
                item_count=int(count),
                total_size=int(size),
                is_encrypted=customer and int(unprotected or 0) == 0,
                data_encryption_policy_id=current.generation_id if customer and current else None,
                job_state=job.state if job is not None else None,
                percent_complete=percent,
            )
