"""The final report of a permanent data purge, shown on its job's page once the job is done.

A purge job keeps no result of its own: what it destroyed is in the audit log, one record per
container (a mailbox, a site) and a final one for the policy (counts, key generations, the
availability key), after the request and the second person's approval. The report is those
records, read through the audit reader as the signed-in principal (the reader decides which
it may see), so it says exactly what the log says and links each record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from customerkey.audit.log import AuditRecord
from customerkey.console.web import Ctx
from customerkey.jobs.queue import Job
from customerkey.workloads.files.jobs import PURGE_JOB as FILES_PURGE_JOB
from customerkey.workloads.mail.jobs import PURGE_JOB as MAIL_PURGE_JOB


@dataclass(frozen=True)
class _Kind:
    approved: str
    container: str
    final: str
    count_name: str  # what the final record calls the container count
    label: str  # which detail of a container record names it for people


_KINDS = {
    MAIL_PURGE_JOB: _Kind(
        "DataEncryptionPolicyPurgeApproved",
        "MailboxPurged",
        "DataEncryptionPolicyPurged",
        "mailboxes",
        "upn",
    ),
    FILES_PURGE_JOB: _Kind(
        "SPODataEncryptionPolicyPurgeApproved",
        "SitePurged",
        "SPODataEncryptionPolicyPurged",
        "sites",
        "url",
    ),
}
_REQUESTED = "DataEncryptionPolicyPurgeRequested"


@dataclass
class PurgeReport:
    """What a finished purge destroyed, by its audit records."""

    count_name: str
    containers: list[dict[str, Any]] = field(default_factory=list)  # Name, Seq
    final: dict[str, Any] | None = None  # the final record's details and Seq
    requested: dict[str, Any] | None = None
    approved: dict[str, Any] | None = None

    @property
    def records(self) -> list[int]:
        seqs = [c["Seq"] for c in self.containers]
        for step in (self.requested, self.approved, self.final):
            if step is not None:
                seqs.append(step["Seq"])
        return sorted(seqs)


def _of(ctx: Ctx, operation: str, job: Job) -> list[AuditRecord]:
    return [
        r
        for r in ctx.runtime.audit_log.records(ctx.actor, operation=operation)
        if r.details.get("policy") == job.target
    ]


def _step(record: AuditRecord) -> dict[str, Any]:
    return {**dict(record.details), "Seq": record.seq, "Principal": record.principal}


def purge_report(ctx: Ctx, job: Job) -> PurgeReport | None:
    """The report of a finished purge job; None for any other job."""
    kind = _KINDS.get(job.kind)
    if kind is None:
        return None
    report = PurgeReport(count_name=kind.count_name)
    for record in _of(ctx, kind.container, job):
        name = str(record.details.get(kind.label) or "")
        report.containers.append({"Name": name, "Seq": record.seq})
    finals = _of(ctx, kind.final, job)
    if finals:
        report.final = _step(finals[-1])
    approvals = [r for r in _of(ctx, kind.approved, job) if r.details.get("job") == job.id]
    if approvals:
        report.approved = _step(approvals[-1])
    requests = [r for r in _of(ctx, _REQUESTED, job) if not approvals or r.seq < approvals[-1].seq]
    if requests:
        report.requested = _step(requests[-1])
    return report
