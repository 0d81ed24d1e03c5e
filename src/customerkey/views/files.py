"""Views of the files workload with the SharePoint Online cmdlets' property names
(``Get-SPODataEncryptionPolicy``, ``Get-SPOSiteDataEncryptionPolicy``, ``Get-SPOSite``), shared
by the CLI's ``--json``, the admin API and the cmdlet shell."""

from __future__ import annotations

from typing import Any

from customerkey.keyprovider.base import KeyUri
from customerkey.keys.usage import GenerationUsage
from customerkey.views.vault import iso
from customerkey.workloads.files.service import (
    FileInfo,
    FilesPolicyStatus,
    FileVersion,
    Site,
    SiteEncryptionStatus,
)


def _key_parts(uri: str | None) -> tuple[str | None, str | None, str | None]:
    if not uri:
        return None, None, None
    parsed = KeyUri.parse(uri)
    return parsed.vault, parsed.name, parsed.version


def files_policy_view(status: FilesPolicyStatus) -> dict[str, Any]:
    """Get-SPODataEncryptionPolicy. The key versions are those wrapping the current TIK."""
    p_vault, p_name, _ = _key_parts(status.primary_key_uri)
    s_vault, s_name, _ = _key_parts(status.secondary_key_uri)
    _, _, p_version = _key_parts(status.primary_key_version_uri)
    _, _, s_version = _key_parts(status.secondary_key_version_uri)
    percent = status.percent_complete
    return {
        "Identity": status.identity,
        "PrimaryKeyVaultName": p_vault,
        "PrimaryKeyName": p_name,
        "PrimaryKeyVersion": p_version,
        "SecondaryKeyVaultName": s_vault,
        "SecondaryKeyName": s_name,
        "SecondaryKeyVersion": s_version,
        "State": status.state,
        "PercentComplete": None if percent is None else round(percent, 1),
        "SitesDone": status.sites_done,
        "SitesTotal": status.sites_total,
        "PrimaryKeyId": status.primary_key_version_uri or status.primary_key_uri,
        "SecondaryKeyId": status.secondary_key_version_uri or status.secondary_key_uri,
        "DataEncryptionPolicyId": status.policy_id,
        "KeyGenerationId": status.generation_id,
        "KeyGenerations": status.generation_count,
        "RollKeyType": status.roll_key_type,
        "RollKey": status.roll_key_uri,
        "JobId": status.job_id,
        "LastError": status.last_error,
        "PermanentDataPurgeReason": status.purge_reason,
        "PermanentDataPurgeContact": status.purge_contact,
        "PermanentDataPurgeRequestedBy": status.purge_requested_by,
    }


def site_view(site: Site) -> dict[str, Any]:
    return {
        "Url": site.url,
        "Title": site.title,
        "Template": "SPSPERS" if site.kind == "onedrive" else "STS",
        "Files": site.file_count,
        "Encryption": "CustomerKey" if site.generation_id else "ServiceManaged",
        "KeyGenerationId": site.generation_id,
        "SiteId": site.id,
        "Tenant": site.tenant,
        "Created": iso(site.created_at),
    }


def site_policy_view(status: SiteEncryptionStatus) -> dict[str, Any]:
    """Get-SPOSiteDataEncryptionPolicy."""
    return {
        "Identity": status.site.url,
        "State": status.state,
        "DataEncryptionPolicyId": status.policy_id,
        "KeyGenerationId": status.generation_id,
        "CurrentKeyGenerationId": status.current_generation_id,
    }


def file_view(info: FileInfo) -> dict[str, Any]:
    return {
        "Path": info.path,
        "Name": info.name,
        "Folder": info.folder,
        "Size": info.size,
        "Version": info.version,
        "Versions": info.version_count,
        "State": "RecycleBin" if info.state == "recycled" else "Active",
        "Modified": iso(info.updated_at),
        "Created": iso(info.created_at),
        "CreatedBy": info.created_by,
        "DeletedBy": info.deleted_by,
        "Deleted": iso(info.deleted_at),
        "Site": info.site_url,
        "FileId": info.id,
    }


def version_view(version: FileVersion) -> dict[str, Any]:
    return {
        "Version": version.number,
        "Size": version.size,
        "Chunks": version.chunk_count,
        "IsCurrent": version.is_current,
        "CreatedBy": version.created_by,
        "Created": iso(version.created_at),
        "VersionId": version.id,
    }


def tik_usage_view(usage: GenerationUsage) -> dict[str, Any]:
    """One TIK generation of a files policy and what depends on it."""
    return {
        "KeyGenerationId": usage.generation_id,
        "Sequence": usage.seq,
        "RootKeyVersions": list(usage.key_uris),
        "Sites": usage.counts.get("Sites", 0),
        "Files": usage.counts.get("Files", 0),
        "FileVersions": usage.counts.get("FileVersions", 0),
        "Retired": usage.retired,
    }
