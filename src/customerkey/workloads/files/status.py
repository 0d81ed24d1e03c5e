"""The state of a tenant's files policy (Get-SPODataEncryptionPolicy): Unregistered,
Registering, Registered, Rolling, PurgeRequested or Purging, with the percent of sites done and
the job behind it; and the checks every change of the policy makes first (``_policy_for_change``,
and ``_busy_message``: why a roll must wait)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from customerkey.errors import Conflict, NotFound
from customerkey.jobs.registry import payload_of
from customerkey.keys.generations import current_generation_row
from customerkey.storage.models import GenerationRow, SiteKeyRow, SiteRow, TenantRow
from customerkey.vault.models import Actor
from customerkey.workloads.files.base import FilesServiceBase
from customerkey.workloads.files.jobs import REGISTER_JOB, ROLL_JOB, RewrapPayload
from customerkey.workloads.files.models import _ACTIVE, FilesPolicyStatus
from customerkey.workloads.files.urls import admin_url


class StatusMixin(FilesServiceBase):
    """The files policy's status."""

    def _status(self, session: Session, tenant: str) -> FilesPolicyStatus:
        identity = admin_url(tenant, self.domain)
        total = int(
            session.scalar(
                select(func.count())
                .select_from(SiteRow)
                .where(SiteRow.tenant_id == tenant, SiteRow.state == "active")
            )
            or 0
        )
        policy = self._policy_row(session, tenant)
        if policy is None:
            return FilesPolicyStatus(tenant, identity, "Unregistered", None, total, 0)
        current = current_generation_row(session, policy.id)
        done = 0
        if current is not None:
            done = int(
                session.scalar(
                    select(func.count())
                    .select_from(SiteRow)
                    .join(SiteKeyRow, SiteKeyRow.id == SiteRow.current_key_id)
                    .where(
                        SiteRow.tenant_id == tenant,
                        SiteRow.state == "active",
                        SiteKeyRow.generation_id == current.id,
                    )
                )
                or 0
            )
        generations = int(
            session.scalar(
                select(func.count())
                .select_from(GenerationRow)
                .where(GenerationRow.policy_id == policy.id)
            )
            or 0
        )
        jobs = self._rewrap_jobs(session, policy.id)
        active = [j for j in jobs if j.state in _ACTIVE]
        job = active[-1] if active else (jobs[-1] if jobs else None)
        last_error: str | None = None
        if policy.state == "purge-requested":
            state = "PurgeRequested"
        elif policy.state == "purging":
            state = "Purging"
        elif active:
            state = "Registering" if active[-1].kind == REGISTER_JOB else "Rolling"
            last_error = active[-1].error
        elif done == total:
            state = "Registered"
        else:  # the last re-wrap stopped before every site was done (see ``resume``)
            state = "Rolling" if job is not None and job.kind == ROLL_JOB else "Registering"
            last_error = job.error if job is not None else "No re-wrap job is queued."
        if total:
            percent = 100.0 * done / total
        elif active:
            percent = 0.0
        else:
            percent = 100.0
        rolling = (
            payload_of(job, RewrapPayload)
            if job is not None and state == "Rolling"
            else RewrapPayload(generation_id="")
        )
        return FilesPolicyStatus(
            tenant=tenant,
            identity=identity,
            state=state,
            percent_complete=percent,
            sites_total=total,
            sites_done=done,
            policy_id=policy.id,
            primary_key_uri=policy.key_uri_1,
            secondary_key_uri=policy.key_uri_2,
            primary_key_version_uri=current.key_uri_1 if current else None,
            secondary_key_version_uri=current.key_uri_2 if current else None,
            generation_id=current.id if current else None,
            generation_count=generations,
            job_id=job.id if job is not None else None,
            job_kind=job.kind if job is not None else None,
            job_state=job.state if job is not None else None,
            roll_key_type=rolling.key_type,
            roll_key_uri=rolling.key_uri,
            last_error=last_error,
            purge_reason=policy.purge_reason,
            purge_contact=policy.purge_contact,
            purge_requested_by=policy.purge_requested_by,
        )

    def status(self, actor: Actor, tenant: str) -> FilesPolicyStatus:
        """Get-SPODataEncryptionPolicy: key URIs, State and percent of sites done."""
        tenant = tenant.lower()
        self._may_manage(actor, tenant)
        with self.db.transaction() as session:
            if session.get(TenantRow, tenant) is None:
                raise NotFound(f"No tenant named '{tenant}'.")
            return self._status(session, tenant)

    def _policy_for_change(self, session: Session, tenant: str) -> FilesPolicyStatus:
        if session.get(TenantRow, tenant) is None:
            raise NotFound(f"No tenant named '{tenant}'.")
        status = self._status(session, tenant)
        if status.policy_id is None:
            raise Conflict(
                f"Tenant '{tenant}' has no files data encryption policy registered; register "
                "one first."
            )
        if status.state in ("PurgeRequested", "Purging"):
            raise Conflict(
                f"A permanent data purge of tenant '{tenant}''s files is requested (State "
                f"{status.state}); its keys can no longer change."
            )
        return status

    @staticmethod
    def _busy_message(status: FilesPolicyStatus, *, active: bool) -> str:
        percent = f"{status.percent_complete or 0.0:.1f}% of sites done"
        if status.state == "Registering":
            what = f"Registration of the files policy of tenant '{status.tenant}'"
            if active:
                return (
                    f"{what} is still in progress (job {status.job_id}, {percent}); wait for "
                    "State Registered before rolling a key."
                )
            return (
                f"{what} did not finish (job {status.job_id}, {percent}: {status.last_error}); "
                "resume it to finish it first."
            )
        what = (
            f"A key roll is already in progress for tenant '{status.tenant}': job "
            f"{status.job_id} is rolling the {status.roll_key_type or 'root'} key to "
            f"{status.roll_key_uri or 'new keys'} ({percent})"
        )
        if active:
            return f"{what}. SharePoint allows only one key roll at a time; wait for it to finish."
        return (
            f"{what} and stopped before finishing ({status.last_error}). Only one key roll may "
            "be in progress; resume it to finish it first."
        )
