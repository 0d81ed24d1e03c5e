"""The console's service side: data encryption policies (create, refresh, generations, the
two-person purge), mailboxes (IsEncrypted, the policy, reading items), jobs with their
progress, cancel where the kind allows it and a finished purge's report (``purge_report``),
and the audit log (filters, one record, the chain check).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi.responses import Response

from customerkey.console.purge_report import purge_report
from customerkey.console.web import Ctx, Missing, page, typed_confirmation
from customerkey.errors import BadParameter, CustomerKeyError, Forbidden, NotFound
from customerkey.identity.workload_principals import EXCHANGE
from customerkey.jobs.cancel import cancel_job
from customerkey.jobs.visibility import may_read, visible_jobs
from customerkey.views.mail import (
    generation_usage_view,
    job_view,
    mailbox_view,
    move_view,
    policy_view,
    statistics_view,
)
from customerkey.views.vault import audit_view, verification_view


def _policy(ctx: Ctx, tenant: str, identity: str) -> Any:
    try:
        return ctx.runtime.policies.get(ctx.actor, tenant, identity)
    except (NotFound, Forbidden):
        raise Missing("Data encryption policy", identity) from None


@page("/console/deps")
def deps(ctx: Ctx) -> Response:
    tenant = ctx.tenant()
    try:
        policies = ctx.runtime.policies.list_policies(ctx.actor, tenant)
    except (NotFound, Forbidden):
        raise Missing("Tenant", tenant) from None
    return ctx.render(
        "deps.html",
        title="Data encryption policies",
        tenant=tenant,
        policies=[policy_view(p) for p in policies],
    )


@page("/console/deps", methods=("POST",))
def create_dep(ctx: Ctx) -> Response:
    tenant = ctx.tenant()
    keys = [ctx.field("key1"), ctx.field("key2")]
    policy = ctx.runtime.policies.create(
        ctx.actor, tenant, ctx.field("name"), keys, description=ctx.field("description")
    )
    return ctx.done(
        f"/console/deps/{quote(policy.name)}?tenant={quote(tenant)}",
        f"Policy '{policy.name}' created.",
    )


@page("/console/deps/{identity}")
def dep_page(ctx: Ctx) -> Response:
    tenant = ctx.tenant()
    policy = _policy(ctx, tenant, ctx.path["identity"])
    generations = [
        {**generation_usage_view(g), "Counts": dict(g.counts)}
        for g in ctx.runtime.usage.policy_generations(policy.id)
    ]
    generations.sort(key=lambda g: g["Sequence"], reverse=True)
    return ctx.render(
        "dep.html",
        title=f"Policy {policy.name}",
        tenant=tenant,
        policy=policy_view(policy),
        generations=generations,
    )


@page("/console/deps/{identity}/refresh", methods=("POST",))
def refresh_dep(ctx: Ctx) -> Response:
    tenant = ctx.tenant()
    policy = _policy(ctx, tenant, ctx.path["identity"])
    job = ctx.runtime.mail.refresh(ctx.actor, tenant, policy.name)
    if job is None:
        return ctx.done(
            f"/console/deps/{quote(policy.name)}?tenant={quote(tenant)}",
            "The policy already uses the newest version of both root keys; nothing to refresh.",
        )
    return ctx.done(f"/console/jobs/{job.id}", f"Refresh of '{policy.name}' queued.")


@page("/console/deps/{identity}/purge-request", methods=("POST",))
def request_purge(ctx: Ctx) -> Response:
    tenant = ctx.tenant()
    policy = _policy(ctx, tenant, ctx.path["identity"])
    typed_confirmation(ctx, policy.name)
    ctx.runtime.policies.request_purge(
        ctx.actor,
        tenant,
        policy.name,
        reason=ctx.field("reason"),
        contact=ctx.field("contact"),
        workload_principal=EXCHANGE.app_id,
    )
    return ctx.done(
        f"/console/deps/{quote(policy.name)}?tenant={quote(tenant)}",
        "Permanent data purge requested; a purge approver of the tenant must approve it.",
    )


@page("/console/deps/{identity}/purge-approve", methods=("POST",))
def approve_purge(ctx: Ctx) -> Response:
    tenant = ctx.tenant()
    policy = _policy(ctx, tenant, ctx.path["identity"])
    typed_confirmation(ctx, policy.name)
    job = ctx.runtime.mail.approve_purge(ctx.actor, tenant, policy.name, ctx.actor.principal_id)
    return ctx.done(f"/console/jobs/{job.id}", f"Purge of '{policy.name}' approved and queued.")


@page("/console/mailboxes")
def mailboxes(ctx: Ctx) -> Response:
    tenant = ctx.tenant()
    try:
        boxes = ctx.runtime.mail.list_mailboxes(ctx.actor, tenant)
    except (NotFound, Forbidden):
        raise Missing("Tenant", tenant) from None
    rows = []
    for box in boxes:
        stats = statistics_view(ctx.runtime.mail.statistics(ctx.actor, box.upn))
        rows.append({**mailbox_view(box), **stats})
    return ctx.render("mailboxes.html", title="Mailboxes", tenant=tenant, mailboxes=rows)


def _mailbox(ctx: Ctx) -> Any:
    identity = ctx.path["identity"]
    try:
        return ctx.runtime.mail.get(ctx.actor, identity)
    except (NotFound, Forbidden):
        raise Missing("Mailbox", identity) from None


@page("/console/mailboxes/{identity}")
def mailbox_page(ctx: Ctx) -> Response:
    box = _mailbox(ctx)
    stats = statistics_view(ctx.runtime.mail.statistics(ctx.actor, box.upn))
    items = ctx.runtime.mail.list_items(ctx.actor, box.upn)
    policies = [p.name for p in ctx.runtime.policies.list_policies(ctx.actor, box.tenant)]
    move = ctx.runtime.mail.move_status(ctx.actor, box.upn)
    return ctx.render(
        "mailbox.html",
        title=f"Mailbox {box.upn}",
        mailbox=mailbox_view(box),
        stats=stats,
        policies=policies,
        move=move_view(move, box.upn) if move else None,
        items=[
            {"Id": i.id, "Folder": i.folder, "Size": i.size, "Received": i.received_at}
            for i in items
        ],
    )


@page("/console/mailboxes/{identity}/policy", methods=("POST",))
def assign_policy(ctx: Ctx) -> Response:
    """Set-Mailbox -DataEncryptionPolicy (empty: service-managed keys); content already
    kept is re-encrypted by a job."""
    box = _mailbox(ctx)
    job = ctx.runtime.mail.set_policy(ctx.actor, box.upn, ctx.field("policy") or None)
    if job is None:
        return ctx.done(f"/console/mailboxes/{quote(box.upn)}", "Policy assigned.")
    return ctx.done(f"/console/jobs/{job.id}", "Policy assigned; the mailbox is re-keyed.")


@page("/console/mailboxes/{identity}/move", methods=("POST",))
def move_mailbox(ctx: Ctx) -> Response:
    """New-MoveRequest: a new mailbox key, every item re-encrypted under it."""
    box = _mailbox(ctx)
    job = ctx.runtime.mail.move(ctx.actor, box.upn)
    return ctx.done(f"/console/jobs/{job.id}", "Move request queued.")


@page("/console/mailboxes/{identity}/items/{item}")
def read_item(ctx: Ctx) -> Response:
    box = _mailbox(ctx)
    item = ctx.path["item"]
    try:
        data = ctx.runtime.mail.read_item(ctx.actor, box.upn, item)
    except NotFound:
        raise Missing("Item", item) from None
    except CustomerKeyError as failed:
        return ctx.render(
            "item.html",
            failed.status,
            title="Item unreadable",
            mailbox=box.upn,
            item=item,
            error=failed.message,
            text=None,
        )
    text = data[:20000].decode("utf-8", errors="replace")
    return ctx.render("item.html", title="Item", mailbox=box.upn, item=item, error=None, text=text)


# ------------------------------------------------------------------ jobs


def _job(ctx: Ctx) -> Any:
    job_id = ctx.path["job"]
    try:
        job = ctx.runtime.jobs.get(job_id)
    except NotFound:
        raise Missing("Job", job_id) from None
    if not may_read(ctx.actor, job):
        raise Missing("Job", job_id)
    return job


def _cancellable(ctx: Ctx) -> frozenset[str]:
    """The job kinds that may be stopped part-way (the registry says; ``cancel_job``
    refuses the others whatever the page offered)."""
    return frozenset(name for name, kind in ctx.runtime.job_kinds().items() if kind.cancellable)


@page("/console/jobs")
def jobs(ctx: Ctx) -> Response:
    cancellable = _cancellable(ctx)
    rows = [
        {**job_view(j), "Cancellable": not j.finished and j.kind in cancellable}
        for j in visible_jobs(ctx.actor, ctx.runtime.jobs.list_jobs())
    ]
    return ctx.render("jobs.html", title="Jobs", jobs=rows, cancellable=sorted(cancellable))


@page("/console/jobs/{job}")
def job_page(ctx: Ctx) -> Response:
    job = _job(ctx)
    report = purge_report(ctx, job) if job.finished else None
    return ctx.render(
        "job.html",
        title=f"Job {job.id}",
        job=job_view(job),
        running=not job.finished,
        cancellable=job.kind in _cancellable(ctx),
        report=report,
    )


@page("/console/jobs/{job}/progress")
def job_progress(ctx: Ctx) -> Response:
    """The progress fragment htmx swaps in (it stops polling once the job has finished)."""
    job = _job(ctx)
    report = purge_report(ctx, job) if job.finished else None
    return ctx.render(
        "job_progress.html", job=job_view(job), running=not job.finished, report=report
    )


@page("/console/jobs/{job}/cancel", methods=("POST",))
def cancel(ctx: Ctx) -> Response:
    job = _job(ctx)
    runtime = ctx.runtime
    outcome = cancel_job(runtime.jobs, runtime.audit, runtime.job_kinds(), ctx.actor, job.id)
    where = "/console/jobs" if ctx.field("back") == "list" else f"/console/jobs/{job.id}"
    state = "cancelled" if outcome.stopped else "stopping at its next checkpoint"
    return ctx.done(where, f"Job {job.id} {state}. {outcome.note}".strip())


# ------------------------------------------------------------------ audit


def _parse_time(text: str | None, what: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadParameter(f"{what} is not a time (ISO 8601, e.g. 2026-01-31T12:00).") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


AUDIT_PAGE = 200


@page("/console/audit")
def audit(ctx: Ctx) -> Response:
    vault, operation = ctx.query("vault"), ctx.query("operation")
    who, tenant = ctx.query("principal"), ctx.query("tenant")
    since, until = _parse_time(ctx.query("since"), "From"), _parse_time(ctx.query("until"), "To")
    # The reader decides which records this principal sees; the other filters only narrow
    # what it returned (by tenant, principal and time, which its query does not take), so a
    # tenant admin naming another tenant gets only what the reader already gave it.
    records = ctx.runtime.audit_log.newest(
        ctx.actor, vault=vault, operation=operation, limit=AUDIT_PAGE * 5
    )
    shown = []
    for record in reversed(records):
        when = record.time if record.time.tzinfo else record.time.replace(tzinfo=UTC)
        if who and who.lower() not in record.principal.lower():
            continue
        if tenant and (record.tenant or "") != tenant.lower():
            continue
        if (since and when < since) or (until and when > until):
            continue
        shown.append(audit_view(record))
        if len(shown) >= AUDIT_PAGE:
            break
    filters = {
        "tenant": tenant or "",
        "vault": vault or "",
        "operation": operation or "",
        "principal": who or "",
        "since": ctx.query("since") or "",
        "until": ctx.query("until") or "",
    }
    return ctx.render("audit.html", title="Audit log", records=shown, filters=filters)


@page("/console/audit/verify")
def audit_verify(ctx: Ctx) -> Response:
    result = ctx.runtime.audit_log.verify(ctx.actor)
    return ctx.render("audit_verify.html", title="Audit chain", result=verification_view(result))


@page("/console/audit/{seq}")
def audit_record(ctx: Ctx) -> Response:
    text = ctx.path["seq"]
    if not text.isdigit() or len(text) > 12:
        raise Missing("Audit record", text)
    seq = int(text)
    found = ctx.runtime.audit_log.records(ctx.actor, since_seq=max(seq - 1, 0), limit=1)
    if not found or found[0].seq != seq:
        raise Missing("Audit record", text)
    return ctx.render("audit_record.html", title=f"Audit record {seq}", record=audit_view(found[0]))
