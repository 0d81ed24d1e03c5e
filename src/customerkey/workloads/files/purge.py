"""The files data purge path: the request (refused while SharePoint still holds wrapKey or
unwrapKey), the second tenant admin's approval, and the purge job (``keys.purge.run_purge``)
destroying every site, site key, chunk key, file row and blob, then the TIK generations."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from customerkey.errors import Conflict
from customerkey.identity.workload_principals import SHAREPOINT
from customerkey.jobs.queue import Job
from customerkey.jobs.worker import JobContext
from customerkey.keys.purge import PurgeSteps, run_purge
from customerkey.keys.purge_approval import queue_purge
from customerkey.storage.models import FileRow, PolicyRow, SiteKeyRow, SiteRow
from customerkey.vault.models import Actor
from customerkey.workloads.files import blobs as blob_names
from customerkey.workloads.files.jobs import PURGE_JOB
from customerkey.workloads.files.models import _ACTIVE, FILES_POLICY_NAME, FilesPolicyStatus
from customerkey.workloads.files.status import StatusMixin


class PurgeMixin(StatusMixin):
    """Purge request, approval and the purge job."""

    def request_purge(
        self, actor: Actor, tenant: str, *, reason: str, contact: str
    ) -> FilesPolicyStatus:
        """Start the files data purge path; refused while the SharePoint principal still holds
        wrapKey or unwrapKey on either vault."""
        tenant = tenant.lower()
        self._may_manage(actor, tenant)
        with self.db.transaction() as session:
            status = self._policy_for_change(session, tenant)
            if status.job_state in _ACTIVE:
                raise Conflict(
                    f"Job {status.job_id} ({status.state}) of tenant '{tenant}' is still running; "
                    "wait for it before requesting a purge."
                )
        assert status.policy_id is not None
        self.policies.request_purge(
            actor,
            tenant,
            status.policy_id,
            reason=reason,
            contact=contact,
            workload_principal=SHAREPOINT.app_id,
        )
        return self.status(actor, tenant)

    def approve_purge(self, actor: Actor, tenant: str, approver: str) -> Job:
        """A second tenant admin signs off; the purge job then destroys the TIK generations,
        site keys, chunk keys and blobs of every site of the tenant."""
        tenant = tenant.lower()
        with self.db.transaction() as session:
            policy = self._policy_row(session, tenant)
            if policy is None or policy.state != "purge-requested":
                raise Conflict(
                    f"Tenant '{tenant}' has no permanent data purge of its files requested."
                )
            return queue_purge(
                session,
                actor,
                approver,
                policy,
                job_kind=PURGE_JOB,
                jobs=self.jobs,
                audit=self._audit,
                clock=self._clock,
                operation="SPODataEncryptionPolicyPurgeApproved",
                details={"tenant": tenant},
                already_running="The purge of this tenant's files is already running.",
            )

    def run_purge(self, job: Job, context: JobContext) -> None:
        """Destroy every site of the tenant (chunk keys, versions, files, site keys, blobs), one
        site per transaction, then every TIK generation and the availability key
        (``keys.purge``: idempotent, so a rerun after a crash ends as one run would)."""
        run_purge(
            job,
            context,
            PurgeSteps(
                containers=self._purge_targets,
                purge_container=self._purge_site,
                delete_blobs=lambda site_id: self.blobs.delete_prefix(
                    blob_names.site_folder(site_id)
                ),
                container_operation="SitePurged",
                final_operation="SPODataEncryptionPolicyPurged",
                count_name="sites",
                on_purged=self._free_policy_name,
            ),
            db=self.db,
            audit=self._audit,
            policies=self.policies,
            clock=self._clock,
        )

    @staticmethod
    def _purge_targets(session: Session, policy: PolicyRow, generation_ids: list[str]) -> list[str]:
        """The tenant's sites still standing, and every site with a key under one of the
        policy's generations (those a first run purged already)."""
        standing = session.scalars(
            select(SiteRow.id).where(
                SiteRow.tenant_id == policy.tenant_id, SiteRow.state != "purged"
            )
        )
        keyed = session.scalars(
            select(SiteKeyRow.site_id).where(SiteKeyRow.generation_id.in_(generation_ids))
        )
        return sorted(set(standing) | set(keyed))

    def _purge_site(self, session: Session, site_id: str) -> dict[str, object] | None:
        site = session.get(SiteRow, site_id)
        assert site is not None
        if site.state == "purged":
            return None
        self._delete_files(
            session, list(session.scalars(select(FileRow.id).where(FileRow.site_id == site_id)))
        )
        now = self._clock.now()
        for key in session.scalars(select(SiteKeyRow).where(SiteKeyRow.site_id == site_id)):
            key.wrapped = None
            key.state = "destroyed"
            key.destroyed_at = now
            key.updated_at = now
        old_url = site.url
        site.url = f"purged:{site.id}"  # frees the URL for a new site
        site.state = "purged"
        site.updated_at = now
        return {"site": site_id, "url": old_url}

    @staticmethod
    def _free_policy_name(_session: Session, policy: PolicyRow) -> None:
        # The tenant may register a new files policy one day; this one keeps its record.
        policy.name = f"{FILES_POLICY_NAME}-purged-{policy.id[:8]}"
        policy.name_lower = policy.name.lower()
