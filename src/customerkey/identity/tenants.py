"""Tenants of the service: an id (a lower-case name the operator gives, never changed) and
its verified mail domain. Only the operator creates them; the platform tenant's name is
reserved, and a domain already used by another tenant's users cannot be verified."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from customerkey.actor import PLATFORM_TENANT, Actor
from customerkey.audit.log import AuditLog
from customerkey.clock import Clock
from customerkey.errors import BadParameter, Conflict, Forbidden, NotFound
from customerkey.identity import authorize as authz
from customerkey.storage.database import Database
from customerkey.storage.models import PrincipalRow, TenantRow

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DOMAIN = re.compile(r"^(?=.{3,253}$)([a-z0-9-]{1,63}\.)+[a-z]{2,63}$")


class TenantNotFound(NotFound):
    code = "TenantNotFound"


@dataclass(frozen=True)
class Tenant:
    id: str
    display_name: str
    mail_domain: str
    created_at: datetime


def _tenant(row: TenantRow) -> Tenant:
    return Tenant(row.id, row.display_name, row.mail_domain, row.created_at)


class TenantService:
    def __init__(self, db: Database, *, clock: Clock, audit: AuditLog) -> None:
        self.db = db
        self._clock = clock
        self._audit = audit

    def create(
        self, actor: Actor, name: str, *, mail_domain: str, display_name: str | None = None
    ) -> Tenant:
        if not authz.allowed(actor, authz.Action.PLATFORM_OPERATE, authz.Platform()):
            raise Forbidden("Only the platform operator can create tenants.")
        tenant_id = name.strip().lower()
        if not _NAME.match(tenant_id):
            raise BadParameter(
                f"Tenant name '{name}' is invalid: use letters, digits and hyphens (max 63)."
            )
        if tenant_id == PLATFORM_TENANT:
            raise Conflict(f"The tenant name '{tenant_id}' is reserved by the platform.")
        domain = mail_domain.strip().lower()
        if not _DOMAIN.match(domain):
            raise BadParameter(f"'{mail_domain}' is not a mail domain like contoso.com.")
        with self.db.transaction() as session:
            if session.get(TenantRow, tenant_id) is not None:
                raise Conflict(f"Tenant '{tenant_id}' already exists.")
            if session.scalar(select(TenantRow).where(TenantRow.mail_domain == domain)):
                raise Conflict(f"The mail domain '{domain}' belongs to another tenant.")
            squatter = session.scalar(
                select(PrincipalRow.id).where(
                    PrincipalRow.kind == "user",
                    PrincipalRow.id.like(f"%@{domain}"),
                    PrincipalRow.tenant != tenant_id,
                )
            )
            if squatter is not None:
                raise Conflict(
                    f"The mail domain '{domain}' is used by a user of another tenant "
                    f"('{squatter}'); it cannot be verified for '{tenant_id}'."
                )
            row = TenantRow(
                id=tenant_id,
                display_name=display_name or name,
                mail_domain=domain,
                created_at=self._clock.now(),
            )
            session.add(row)
            self._audit.append(
                session,
                principal=actor.audit_name,
                operation="TenantCreate",
                request_id=actor.request_id,
                tenant=tenant_id,
                actor_id=actor.object_id or None,
                details={"tenant": tenant_id, "mail_domain": domain},
            )
            return _tenant(row)

    def get(self, name: str) -> Tenant:
        with self.db.transaction() as session:
            row = session.get(TenantRow, name.strip().lower())
            if row is None:
                raise TenantNotFound(f"No tenant named '{name}'.")
            return _tenant(row)

    def for_domain(self, domain: str) -> Tenant:
        with self.db.transaction() as session:
            row = session.scalar(select(TenantRow).where(TenantRow.mail_domain == domain.lower()))
            if row is None:
                raise TenantNotFound(f"No tenant has the mail domain '{domain}'.")
            return _tenant(row)

    def list(self) -> list[Tenant]:
        with self.db.transaction() as session:
            return [_tenant(r) for r in session.scalars(select(TenantRow).order_by(TenantRow.id))]

    def visible(self, actor: Actor) -> Sequence[Tenant]:
        """The tenants ``actor`` may read: every one for the operator, its own for a tenant's
        admins and purge approvers, none for anyone else."""
        return [
            t
            for t in self.list()
            if authz.allowed(actor, authz.Action.TENANT_READ, authz.Tenant(t.id))
        ]
