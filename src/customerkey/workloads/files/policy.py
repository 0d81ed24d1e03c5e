"""The files policy's keys: register (Register-SPODataEncryptionPolicy), roll a root key
(Update-SPODataEncryptionPolicy), resume a registration or roll that stopped, and the
operator's recovery with the availability key; and their re-wrap jobs, which move every site
key onto the new TIK generation (``ContainerKeys.rewrap``) and retire the old ones."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from customerkey.errors import BadParameter, Conflict, Forbidden, NotFound
from customerkey.identity import authorize as authz
from customerkey.jobs.queue import Job
from customerkey.jobs.registry import payload_dict, payload_of
from customerkey.jobs.worker import JobContext, PermanentJobError
from customerkey.keyprovider.base import KeyUri
from customerkey.storage.models import (
    GenerationRow,
    JobRow,
    PolicyRow,
    SiteKeyRow,
    SiteRow,
    TenantRow,
)
from customerkey.vault.models import Actor
from customerkey.workloads.files.jobs import REGISTER_JOB, ROLL_JOB, RewrapPayload
from customerkey.workloads.files.models import (
    _ACTIVE,
    FILES_POLICY_NAME,
    KEY_TYPES,
    RECOVERY_ACTIVITY,
)
from customerkey.workloads.files.status import StatusMixin
from customerkey.workloads.files.urls import admin_url


class PolicyMixin(StatusMixin):
    """Register, roll, resume, recover and the re-wrap jobs."""

    def register(
        self,
        actor: Actor,
        tenant: str,
        primary: str,
        secondary: str,
        *,
        identity: str | None = None,
    ) -> Job:
        """Register-SPODataEncryptionPolicy: a files DEP from two root keys (a versioned URI
        names the version wrapping the first TIK; else the newest), and a job that moves every
        site key from the service-managed key under the new TIK."""
        tenant_id = self.resolve_tenant(tenant, identity) or tenant.lower()
        self._may_manage(actor, tenant_id)
        with self.db.transaction() as session:
            if session.get(TenantRow, tenant_id) is None:
                raise NotFound(f"No tenant named '{tenant_id}'.")
            if self._policy_row(session, tenant_id) is not None:
                status = self._status(session, tenant_id)
                raise Conflict(
                    f"Tenant '{tenant_id}' already has a files data encryption policy (State "
                    f"{status.state}, primary key {status.primary_key_uri}, secondary key "
                    f"{status.secondary_key_uri}); one is allowed per tenant. Roll a key to change "
                    "it."
                )
        policy = self.policies.create(
            actor,
            tenant_id,
            FILES_POLICY_NAME,
            [primary, secondary],
            description=f"Files policy of {admin_url(tenant_id, self.domain)}",
            kind="files",
            exact_versions=True,
        )
        assert policy.current_generation_id is not None
        with self.db.transaction() as session:
            job = self.jobs.enqueue(
                session,
                REGISTER_JOB,
                policy.id,
                created_by=actor,
                payload=payload_dict(
                    RewrapPayload(generation_id=policy.current_generation_id, generation_seq=1)
                ),
                total=self._sites_to_rewrap(session, tenant_id, policy.current_generation_id),
            )
            self._audit.append(
                session,
                tenant=tenant_id,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="SPODataEncryptionPolicyRegister",
                request_id=actor.request_id,
                details={
                    "tenant": tenant_id,
                    "identity": admin_url(tenant_id, self.domain),
                    "policy": policy.id,
                    "generation": policy.current_generation_id,
                    "primary": policy.azure_key_ids[0],
                    "secondary": policy.azure_key_ids[1],
                    "job": job.id,
                },
            )
            return job

    @staticmethod
    def _rewrap_scope(tenant: str, generation_id: str) -> ColumnElement[bool]:
        """The site keys a register or roll onto ``generation_id`` moves: those of the
        tenant's active sites not on it yet (service-managed ones included)."""
        active_sites = select(SiteRow.id).where(
            SiteRow.tenant_id == tenant, SiteRow.state == "active"
        )
        return and_(
            SiteKeyRow.site_id.in_(active_sites),
            or_(SiteKeyRow.generation_id.is_(None), SiteKeyRow.generation_id != generation_id),
        )

    def _sites_to_rewrap(self, session: Session, tenant: str, generation_id: str) -> int:
        return self.keys.count_to_rewrap(session, self._rewrap_scope(tenant, generation_id))

    def roll(self, actor: Actor, tenant: str, key_type: str, key_uri: str) -> Job:
        """Update-SPODataEncryptionPolicy -KeyType Primary|Secondary: a new TIK generation
        wrapped by the new key (a versioned URI names the version; else the newest) and the
        other slot's current key version, then a job re-wrapping every site key onto it."""
        tenant = tenant.lower()
        self._may_manage(actor, tenant)
        kind = key_type.strip().lower()
        if kind not in KEY_TYPES:
            raise BadParameter(f"The key type must be Primary or Secondary, not '{key_type}'.")
        uri = KeyUri.parse(key_uri)
        with self.db.transaction() as session:
            status = self._policy_for_change(session, tenant)
            if status.state != "Registered":
                raise Conflict(self._busy_message(status, active=status.job_state in _ACTIVE))
        assert status.policy_id is not None
        assert status.primary_key_version_uri and status.secondary_key_version_uri
        assert status.primary_key_uri and status.secondary_key_uri
        slot = KEY_TYPES.index(kind)
        current = [
            KeyUri.parse(status.primary_key_version_uri),
            KeyUri.parse(status.secondary_key_version_uri),
        ]
        other = KEY_TYPES[1 - slot]
        if uri.netloc == current[1 - slot].netloc:
            raise BadParameter(
                f"The new {kind} key must be in a different vault than the {other} key "
                f"({current[1 - slot].vault})."
            )
        props = self.policies.validate_root_key("files", uri, tenant)
        if str(props.uri) == str(current[slot]):
            raise Conflict(
                f"The {kind} key is already {props.uri}; nothing to roll. Add a new version of "
                "the key in its vault first, or name another key."
            )
        wrap_with = list(current)
        wrap_with[slot] = props.uri
        policy_uris = [status.primary_key_uri, status.secondary_key_uri]
        policy_uris[slot] = str(uri)
        return self._roll_to_new_generation(
            actor,
            tenant,
            status.policy_id,
            (wrap_with[0], wrap_with[1]),
            policy_uris=(policy_uris[0], policy_uris[1]),
            operation="SPODataEncryptionPolicyUpdate",
            details={"tenant": tenant, "key_type": kind, "key": str(props.uri)},
            payload=RewrapPayload(generation_id="", key_type=kind, key_uri=str(props.uri)),
        )

    def _roll_to_new_generation(
        self,
        actor: Actor,
        tenant: str,
        policy_id: str,
        wrap_with: tuple[KeyUri, KeyUri],
        *,
        policy_uris: tuple[str, str],
        operation: str,
        details: dict[str, Any],
        payload: RewrapPayload,
    ) -> Job:
        """Make a TIK generation wrapped by ``wrap_with`` and queue the roll job that re-wraps
        every site key onto it, in the generation's own transaction (refused while another
        registration or roll is active)."""
        queued: list[Job] = []

        def enqueue(session: Session, generation: GenerationRow) -> None:
            if self._active_rewrap(session, policy_id) is not None:
                raise Conflict(self._busy_message(self._status(session, tenant), active=True))
            queued.append(
                self.jobs.enqueue(
                    session,
                    ROLL_JOB,
                    policy_id,
                    created_by=actor,
                    payload=payload_dict(
                        replace(payload, generation_id=generation.id, generation_seq=generation.seq)
                    ),
                    total=self._sites_to_rewrap(session, tenant, generation.id),
                )
            )

        self.policies.new_generation_with_keys(
            actor,
            policy_id,
            wrap_with,
            policy_uris=policy_uris,
            operation=operation,
            details=details,
            in_transaction=enqueue,
        )
        return queued[0]

    def resume(self, actor: Actor, tenant: str) -> Job | None:
        """Queue again a registration or roll that stopped before every site was done (its
        job failed). None when there is nothing to finish."""
        tenant = tenant.lower()
        self._may_manage(actor, tenant)
        with self.db.transaction() as session:
            status = self._policy_for_change(session, tenant)
            if status.job_state in _ACTIVE:
                raise Conflict(
                    f"Job {status.job_id} of tenant '{tenant}' is still {status.job_state}; it "
                    "needs no resuming."
                )
            if status.state == "Registered":
                return None
            assert status.policy_id is not None and status.generation_id is not None
            generation = session.get(GenerationRow, status.generation_id)
            assert generation is not None
            kind = ROLL_JOB if status.job_kind == ROLL_JOB else REGISTER_JOB
            previous = session.get(JobRow, status.job_id) if status.job_id else None
            before = (
                payload_of(previous, RewrapPayload)
                if previous is not None
                else RewrapPayload(generation_id="")
            )
            payload = payload_dict(
                replace(before, generation_id=generation.id, generation_seq=generation.seq)
            )
            job = self.jobs.enqueue(
                session,
                kind,
                status.policy_id,
                created_by=actor,
                payload=payload,
                total=self._sites_to_rewrap(session, tenant, generation.id),
            )
            self._audit.append(
                session,
                tenant=tenant,
                principal=actor.audit_name,
                actor_id=actor.object_id or None,
                operation="SPODataEncryptionPolicyResume",
                request_id=actor.request_id,
                details={"tenant": tenant, "policy": status.policy_id, "job": job.id},
            )
            return job

    def recover(
        self,
        actor: Actor,
        tenant: str,
        primary: str,
        secondary: str,
        *,
        with_availability_key: bool,
        reason: str,
    ) -> Job:
        """The recovery the customer asks for when its root keys are lost: the platform
        operator uses the availability key to unwrap the tenant's TIK generations, and a job
        re-wraps every site key under a new TIK protected by the two new root keys. Audited;
        never done automatically."""
        tenant = tenant.lower()
        if not authz.allowed(actor, authz.Action.PLATFORM_OPERATE, authz.Platform()):
            raise Forbidden(
                "Recovery with the availability key is a platform operator action, taken only "
                "when the customer asks for it."
            )
        if not with_availability_key:
            raise BadParameter(
                "Recovery unwraps the tenant's keys with the availability key; confirm with "
                "--with-availability-key."
            )
        if not reason.strip():
            raise BadParameter("A recovery needs a reason (the customer's request).")
        uri_1, uri_2 = KeyUri.parse(primary), KeyUri.parse(secondary)
        if uri_1.netloc == uri_2.netloc:
            raise BadParameter(
                "The two root keys must be in two different vaults (ideally in two regions)."
            )
        with self.db.transaction() as session:
            status = self._policy_for_change(session, tenant)
            if status.job_state in _ACTIVE:
                raise Conflict(self._busy_message(status, active=True))
        assert status.policy_id is not None
        props_1 = self.policies.validate_root_key("files", uri_1, tenant)
        props_2 = self.policies.validate_root_key("files", uri_2, tenant)
        return self._roll_to_new_generation(
            actor,
            tenant,
            status.policy_id,
            (props_1.uri, props_2.uri),
            policy_uris=(str(uri_1), str(uri_2)),
            operation="SPODataEncryptionPolicyRecover",
            details={"tenant": tenant, "reason": reason, "availability_key": "to be used"},
            payload=RewrapPayload(
                generation_id="",
                key_type="primary and secondary",
                key_uri=f"{props_1.uri}, {props_2.uri}",
                recovery=True,
            ),
        )

    def run_register(self, job: Job, context: JobContext) -> None:
        self._run_rewrap(job, context)

    def run_roll(self, job: Job, context: JobContext) -> None:
        self._run_rewrap(job, context)

    def _old_kek(
        self,
        tenant: str,
        generation_id: str | None,
        *,
        recovery: bool,
        job: Job,
    ) -> bytes:
        if generation_id is None:
            return self._sealer.service_key(tenant)
        if not recovery:
            return self.policies.generation_key(generation_id, system=True)
        key = self.policies.unwrap_with_availability_key(generation_id)
        with self.db.transaction() as session:
            generation = session.get(GenerationRow, generation_id)
            self._audit.append(
                session,
                tenant=tenant,
                principal="customerkey-service",
                operation=RECOVERY_ACTIVITY,
                details={
                    "PolicyId": generation.policy_id if generation else None,
                    "ScopeKeyVersionId": generation_id,
                    "Job": job.id,
                    "RequestedBy": job.created_by,
                },
            )
        return key

    def _run_rewrap(self, job: Job, context: JobContext) -> None:
        """Re-wrap every live site key of the tenant onto the job's TIK generation (from the
        service-managed key when registering, from older generations when rolling) with
        ``ContainerKeys.rewrap`` (resumable, the checkpoint in each batch's transaction), then
        retire every older generation no site key depends on and record the end, once."""
        policy_id = job.target
        payload = payload_of(job, RewrapPayload)
        target_id, recovery = payload.generation_id, payload.recovery
        if job.checkpoint.get("complete"):
            return
        with self.db.transaction() as session:
            policy = session.get(PolicyRow, policy_id)
            if policy is None or policy.state != "active":
                raise PermanentJobError(f"Files policy {policy_id} is no longer active.")
            target = session.get(GenerationRow, target_id)
            if target is None or target.retired_at is not None:
                raise PermanentJobError(f"Key generation {target_id} no longer exists.")
            tenant = policy.tenant_id
        done = self.keys.rewrap(
            scope=self._rewrap_scope(tenant, target_id),
            target_id=target_id,
            old_kek=lambda generation_id: self._old_kek(
                tenant, generation_id, recovery=recovery, job=job
            ),
            context=context,
            batch=self.rewrap_batch,
        )
        self.keys.finish_rewrap(
            context,
            policy_id=policy_id,
            target_id=target_id,
            done=done,
            operation=(
                "SPODataEncryptionPolicyRegistered"
                if job.kind == REGISTER_JOB
                else "SPODataEncryptionPolicyRollComplete"
            ),
            details={"tenant": tenant, "recovery": recovery},
        )
