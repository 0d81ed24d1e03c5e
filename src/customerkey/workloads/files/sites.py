"""Sites and OneDrives: create one (its site key wrapped by the tenant's current TIK, or the
service-managed key), read and list them, and one site's encryption state
(Get-SPOSiteDataEncryptionPolicy)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from customerkey.crypto.wrap import aes_kwp_wrap
from customerkey.errors import BadParameter, Conflict, NotFound
from customerkey.keys.generations import current_generation_row
from customerkey.storage.models import SiteKeyRow, SiteRow, TenantRow
from customerkey.vault.models import Actor
from customerkey.workloads.files.base import FilesServiceBase
from customerkey.workloads.files.models import Site, SiteEncryptionStatus
from customerkey.workloads.files.urls import parse_site_url


class SitesMixin(FilesServiceBase):
    """Sites: create, get, list, status."""

    def create_site(
        self, actor: Actor, url: str, *, title: str | None = None, tenant: str | None = None
    ) -> Site:
        canonical, url_tenant, kind = parse_site_url(url, self.domain)
        if tenant is not None and tenant.lower() != url_tenant:
            raise BadParameter(f"The site {canonical} belongs to tenant '{url_tenant}'.")
        self._may_manage(actor, url_tenant)
        name = canonical.rsplit("/", 1)[-1] if canonical.count("/") > 2 else url_tenant
        title = (title if title is not None else name).strip()
        if not title or len(title) > 256:
            raise BadParameter("A site title is 1 to 256 characters.")

        def check(session: Session) -> str | None:
            if session.get(TenantRow, url_tenant) is None:
                raise NotFound(f"No tenant named '{url_tenant}'.")
            if session.scalar(select(SiteRow).where(SiteRow.url == canonical)) is not None:
                raise Conflict(f"A site {canonical} already exists.")
            policy = self._policy_row(session, url_tenant)
            if policy is None:
                return None
            if policy.state != "active":
                raise Conflict(
                    f"A permanent data purge of tenant '{url_tenant}''s files is requested; no "
                    "new sites can be created."
                )
            current = current_generation_row(session, policy.id)
            if current is None:
                raise Conflict("The tenant's files policy has no usable key generation.")
            return current.id

        with self.db.transaction() as session:
            generation_id = check(session)
        site_key = self._rng.token_bytes(32)
        wrapped = aes_kwp_wrap(
            self.keys.kek(url_tenant, generation_id, request_id=actor.request_id), site_key
        )
        now = self._clock.now()
        with self.db.transaction() as session:
            if check(session) != generation_id:
                raise Conflict("The tenant's files keys changed meanwhile; try again.")
            site_id = self._uuid()
            row = SiteRow(
                id=site_id,
                tenant_id=url_tenant,
                url=canonical,
                title=title,
                kind=kind,
                state="active",
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            session.flush()
            key = SiteKeyRow(
                id=self._uuid(),
                site_id=site_id,
                seq=1,
                generation_id=generation_id,
                wrapped=wrapped,
                state="active",
                created_at=now,
                updated_at=now,
            )
            session.add(key)
            session.flush()
            row.current_key_id = key.id
            self._audit.append(
                session,
                tenant=url_tenant,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="SiteCreate",
                request_id=actor.request_id,
                details={
                    "site": site_id,
                    "url": canonical,
                    "tenant": url_tenant,
                    "generation": generation_id,
                },
            )
            return self._site_view(session, row)

    def get_site(self, actor: Actor, url: str) -> Site:
        with self.db.transaction() as session:
            row = self._site_row(session, url)
            self._may_manage(actor, row.tenant_id)
            return self._site_view(session, row)

    def list_sites(self, actor: Actor, tenant: str) -> list[Site]:
        tenant = tenant.lower()
        self._may_manage(actor, tenant)
        with self.db.transaction() as session:
            rows = session.scalars(
                select(SiteRow)
                .where(SiteRow.tenant_id == tenant, SiteRow.state == "active")
                .order_by(SiteRow.url)
            )
            return [self._site_view(session, r) for r in rows]

    def site_status(self, actor: Actor, url: str) -> SiteEncryptionStatus:
        """Get-SPOSiteDataEncryptionPolicy: the state of one site."""
        with self.db.transaction() as session:
            row = self._site_row(session, url)
            self._may_manage(actor, row.tenant_id)
            site = self._site_view(session, row)
            policy = self._policy_row(session, row.tenant_id)
            if policy is None:
                return SiteEncryptionStatus(site, "Unregistered", None, None, None)
            current = current_generation_row(session, policy.id)
            current_id = current.id if current else None
            if policy.state == "purge-requested":
                state = "PurgeRequested"
            elif policy.state == "purging":
                state = "Purging"
            elif site.generation_id is not None and site.generation_id == current_id:
                state = "Registered"
            elif site.generation_id is None:
                state = "Registering"
            else:
                state = "Rolling"
            return SiteEncryptionStatus(site, state, policy.id, site.generation_id, current_id)
