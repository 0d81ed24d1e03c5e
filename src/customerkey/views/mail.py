"""Views of the service's objects with the Exchange cmdlets' property names
(``Get-DataEncryptionPolicy``, ``Get-Mailbox``, ``Get-MailboxStatistics``), shared by the CLI's
``--json``, the admin API and the cmdlet shell."""

from __future__ import annotations

from typing import Any

from customerkey.identity.tenants import Tenant
from customerkey.jobs.queue import Job
from customerkey.keys.deps import DataEncryptionPolicy
from customerkey.keys.usage import GenerationUsage
from customerkey.views.vault import iso
from customerkey.workloads.mail.service import Mailbox, MailboxStatistics, MailItem


def byte_quantity(size: int) -> str:
    """Exchange's ByteQuantifiedSize text: ``1.5 MB (1,572,864 bytes)``."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            shown = f"{int(value)} {unit}" if unit == "B" else f"{value:.3g} {unit}"
            return f"{shown} ({size:,} bytes)"
        value /= 1024
    raise AssertionError("unreachable")


def tenant_view(tenant: Tenant) -> dict[str, Any]:
    return {
        "Name": tenant.id,
        "DisplayName": tenant.display_name,
        "MailDomain": tenant.mail_domain,
        "Created": iso(tenant.created_at),
    }


def policy_view(policy: DataEncryptionPolicy) -> dict[str, Any]:
    return {
        "Identity": policy.name,
        "Name": policy.name,
        "Description": policy.description,
        "Enabled": policy.enabled,
        "AzureKeyIDs": list(policy.azure_key_ids),
        "Guid": policy.id,
        "Kind": policy.kind,
        "State": policy.state,
        "CurrentKeyGenerationId": policy.current_generation_id,
        "KeyGenerations": policy.generation_count,
        "PermanentDataPurgeReason": policy.purge_reason,
        "PermanentDataPurgeContact": policy.purge_contact,
        "PermanentDataPurgeRequestedBy": policy.purge_requested_by,
        "WhenCreated": iso(policy.created_at),
        "WhenChanged": iso(policy.updated_at),
    }


def mailbox_view(mailbox: Mailbox) -> dict[str, Any]:
    return {
        "Name": mailbox.alias,
        "Alias": mailbox.alias,
        "DisplayName": mailbox.display_name,
        "UserPrincipalName": mailbox.upn,
        "PrimarySmtpAddress": mailbox.upn,
        "RecipientTypeDetails": mailbox.recipient_type,
        "DataEncryptionPolicy": mailbox.policy_name,
        "ExchangeGuid": mailbox.id,
        "Tenant": mailbox.tenant,
        "WhenCreated": iso(mailbox.created_at),
    }


def statistics_view(stats: MailboxStatistics) -> dict[str, Any]:
    return {
        "DisplayName": stats.mailbox.display_name,
        "MailboxGuid": stats.mailbox.id,
        "ItemCount": stats.item_count,
        "TotalItemSize": byte_quantity(stats.total_size),
        "IsEncrypted": stats.is_encrypted,
        "DataEncryptionPolicyID": stats.data_encryption_policy_id,
        "EncryptionJobState": stats.job_state,
        "PercentComplete": (
            None if stats.percent_complete is None else round(stats.percent_complete, 1)
        ),
    }


def item_view(item: MailItem) -> dict[str, Any]:
    return {
        "Id": item.id,
        "Seq": item.seq,
        "Folder": item.folder,
        "Size": item.size,
        "Received": iso(item.received_at),
    }


def job_view(job: Job) -> dict[str, Any]:
    return {
        "Id": job.id,
        "Kind": job.kind,
        "Target": job.target,
        "State": job.shown_state,  # "interrupted" when its holder is gone
        "Done": job.progress_done,
        "Total": job.progress_total,
        "PercentComplete": round(job.percent, 1),
        "Attempts": job.attempts,
        "Error": job.error,
        "Created": iso(job.created_at),
        "Finished": iso(job.finished_at),
    }


def generation_usage_view(usage: GenerationUsage) -> dict[str, Any]:
    return {
        "KeyGenerationId": usage.generation_id,
        "Sequence": usage.seq,
        "RootKeyVersions": list(usage.key_uris),
        "Mailboxes": usage.counts.get("Mailboxes", 0),
        "Items": usage.counts.get("Items", 0),
        "Retired": usage.retired,
    }


_MOVE_STATUS = {
    "queued": "Queued",
    "running": "InProgress",
    "cancelling": "InProgress",
    "succeeded": "Completed",
    "failed": "Failed",
    # Stopped part-way, every item readable; moving the mailbox again finishes it.
    "cancelled": "Suspended",
}


def move_view(job: Job, identity: str) -> dict[str, Any]:
    """Get-MoveRequest's shape."""
    return {
        "DisplayName": identity,
        "Status": _MOVE_STATUS.get(job.state, job.state),
        "PercentComplete": round(job.percent, 1),
        "ItemsTransferred": job.progress_done,
        "TotalItems": job.progress_total,
        "JobId": job.id,
        "Error": job.error,
    }
