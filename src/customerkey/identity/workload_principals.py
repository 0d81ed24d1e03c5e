"""The built-in service principals of the workloads, with their documented ids.

A tenant's security admin grants these ``get``, ``wrapKey`` and ``unwrapKey`` on both vaults
of a DEP (``Set-AzKeyVaultAccessPolicy -ServicePrincipalName <id> -PermissionsToKeys
wrapKey,unwrapKey,get``); removing them is revocation. The ids are those of Office 365
Exchange Online and SharePoint Online, so the Customer Key documentation's lines work as
written.
"""

from __future__ import annotations

from dataclasses import dataclass

SERVICE_TENANT = "customerkey"


@dataclass(frozen=True)
class WorkloadPrincipal:
    workload: str  # the policy kind it serves
    app_id: str
    display_name: str


EXCHANGE = WorkloadPrincipal(
    "mailbox", "00000002-0000-0ff1-ce00-000000000000", "Office 365 Exchange Online"
)
SHAREPOINT = WorkloadPrincipal(
    "files", "00000003-0000-0ff1-ce00-000000000000", "Office 365 SharePoint Online"
)
WORKLOAD_PRINCIPALS = (EXCHANGE, SHAREPOINT)
