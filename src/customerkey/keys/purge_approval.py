"""The second signature of the permanent data purge path, shared by every workload.

Microsoft's purge path needs the registered approver's signature besides the requesting
admin's. Here the approver is a principal of the policy's tenant, other than the requester,
holding the ``purge-approver`` role (which only the platform operator grants) since before
the request was made; the rule itself is ``identity.authorize`` (``Action.PURGE_APPROVE``).
The approver signs as itself, or the local operator signs on its behalf (impersonation,
audited as "operator as <approver>"). ``queue_purge`` is the approval every workload makes:
check the signature, mark the policy purging and queue the workload's purge job, in the
caller's transaction, with one audit record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from customerkey.actor import Actor
from customerkey.audit.log import AuditLog
from customerkey.clock import Clock
from customerkey.errors import Conflict, Forbidden
from customerkey.identity import authorize as authz
from customerkey.identity.directory import _principal
from customerkey.jobs.queue import Job, JobQueue
from customerkey.jobs.registry import payload_dict
from customerkey.storage.models import PolicyRow
from customerkey.storage.repositories import PrincipalRepository


@dataclass(frozen=True)
class PurgePayload:
    """The payload of every workload's purge job: who signed it off."""

    approver: str


def queue_purge(
    session: Session,
    actor: Actor,
    approver: str | None,
    policy: PolicyRow,
    *,
    job_kind: str,
    jobs: JobQueue,
    audit: AuditLog,
    clock: Clock,
    operation: str,
    details: Mapping[str, object],
    already_running: str,
) -> Job:
    """Approve the requested purge of ``policy`` (its row, in the caller's transaction): the
    second signature, the policy marked purging, the purge job queued, one audit record."""
    signer = approving_actor(
        session,
        actor,
        approver,
        tenant=policy.tenant_id,
        requested_by_id=policy.purge_requested_by_id,
        requested_by_name=policy.purge_requested_by,
        requested_at=policy.purge_requested_at,
    )
    if jobs.active_for(session, job_kind, policy.id) is not None:
        raise Conflict(already_running)
    policy.state = "purging"
    policy.updated_at = clock.now()
    job = jobs.enqueue(
        session,
        job_kind,
        policy.id,
        created_by=signer,
        payload=payload_dict(PurgePayload(approver=signer.principal_id)),
    )
    audit.append(
        session,
        principal=signer.audit_name,
        operation=operation,
        request_id=actor.request_id,
        details={**details, "policy": policy.id, "approver": signer.principal_id, "job": job.id},
        tenant=policy.tenant_id,
        actor_id=signer.object_id or None,
    )
    return job


def approving_actor(
    session: Session,
    actor: Actor,
    approver: str | None,
    *,
    tenant: str,
    requested_by_id: str | None,
    requested_by_name: str | None,
    requested_at: datetime | None,
) -> Actor:
    """The actor whose signature approves the purge; Forbidden if it may not."""
    principals = PrincipalRepository(session)
    if actor.kind == "operator":
        if not approver:
            raise Forbidden("Name the approver: the operator signs only on an approver's behalf.")
        row = principals.find(approver.strip())
        if row is None or row.tenant != tenant:
            raise Forbidden(f"'{approver}' is not a principal of tenant '{tenant}'.")
        signer = _principal(row).actor(actor.request_id, impersonated_by=actor.principal_id)
    else:
        signer = actor
        named = principals.find(approver.strip()) if approver else None
        if approver and (named is None or named.object_id != actor.object_id):
            raise Forbidden("Only the approver can approve, acting as themselves.")
    requester = requested_by_id
    if requester is None and requested_by_name:  # requested before object ids existed
        legacy = principals.find(requested_by_name)
        requester = legacy.object_id if legacy is not None else requested_by_name
    if requested_at is None:
        raise Forbidden("There is no purge request to approve.")
    request = authz.PurgeRequest(tenant, requester or "", requested_at)
    if not authz.allowed(signer, authz.Action.PURGE_APPROVE, request):
        raise Forbidden(
            f"'{signer.principal_id}' cannot approve this purge: {_why(signer, request)}"
        )
    return signer


def _why(signer: Actor, request: authz.PurgeRequest) -> str:
    """Which condition failed, for the message (the decision is ``authorize``'s)."""
    if signer.object_id == request.requester_object_id:
        return "the approver must be a different principal than the requester."
    if signer.tenant != request.tenant:
        return f"the approver must be a principal of tenant '{request.tenant}'."
    granted = signer.role_granted_at.get("purge-approver")
    if "purge-approver" not in signer.roles or granted is None:
        return (
            "the approver must hold the purge-approver role, which only the platform "
            "operator grants."
        )
    return "the approver must have held the purge-approver role since before the request."
