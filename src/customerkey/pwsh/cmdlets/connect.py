"""The sign-in cmdlets of the three products: ``Connect-AzAccount``,
``Connect-ExchangeOnline``, ``Connect-SPOService`` and their ``Disconnect-*`` (with the AzureRM
and ``Login-``/``Logout-`` spellings).

A connection sets who the following lines act as for that product's cmdlets, and the tenant
they work in (``ShellContext.connect``): the local operator by default (or the principal given
with ``customerkey --as``); with a user name, that principal when it exists (a warning says so
when it does not).
"""

from __future__ import annotations

import re
from typing import Any

from customerkey.pwsh.cmdlets.registry import AZ, EXO, SPO, Connection, Invocation, cmdlet, fail
from customerkey.pwsh.engine.formatting import register_view
from customerkey.pwsh.language.binding import Param
from customerkey.pwsh.language.values import PSObject

PROFILE_TYPE = "Microsoft.Azure.Commands.Profile.Models.Core.PSAzureProfile"

register_view(PROFILE_TYPE, table_view=["Account", "SubscriptionName", "TenantId", "Environment"])


def _warn_if_not_found(inv: Invocation, connection: Connection, principal: str | None) -> None:
    if principal and not connection.principal_found:
        where = f" in tenant '{connection.tenant}'" if connection.tenant else ""
        inv.warn(
            f"'{principal}' is not a principal of this installation; the following lines act as "
            f"'{connection.actor.principal_id}'{where}."
        )


@cmdlet(
    "Connect-AzAccount",
    Param("AccountId", help="Act as this user principal (when it exists)."),
    Param("ApplicationId", help="Act as this service principal (with -ServicePrincipal)."),
    Param("ServicePrincipal", "switch"),
    Param("Tenant", aliases=("TenantId", "Domain")),
    Param("Subscription", aliases=("SubscriptionId", "SubscriptionName")),
    aliases=(
        "Login-AzAccount",
        "Add-AzAccount",
        "Connect-AzureRmAccount",
        "Login-AzureRmAccount",
        "Add-AzureRmAccount",
    ),
    synopsis="Sign in for the Az cmdlets: local home, as the operator or a principal.",
)
def connect_azaccount(inv: Invocation) -> list[Any]:
    principal = inv.args.get("ApplicationId") or inv.args.get("AccountId")
    if inv.args.flag("ServicePrincipal") and not inv.args.get("ApplicationId"):
        raise fail("-ServicePrincipal needs -ApplicationId <service principal id>.", "MissingId")
    subscription = inv.args.get("Subscription")
    connection = inv.session.connect(
        AZ,
        principal=principal,
        tenant=inv.args.get("Tenant"),
        details={"subscription": subscription} if subscription else None,
    )
    _warn_if_not_found(inv, connection, principal)
    return [
        PSObject(
            PROFILE_TYPE,
            {
                "Account": connection.account,
                "SubscriptionName": subscription or "",
                "TenantId": connection.tenant or "",
                "Environment": "customerkey (local home)",
            },
        )
    ]


@cmdlet(
    "Disconnect-AzAccount",
    aliases=("Logout-AzAccount", "Disconnect-AzureRmAccount", "Logout-AzureRmAccount"),
    synopsis="Forget the Az sign-in; the Az cmdlets act as the operator again.",
)
def disconnect_azaccount(inv: Invocation) -> None:
    inv.session.disconnect(AZ)


@cmdlet(
    "Connect-ExchangeOnline",
    Param("UserPrincipalName"),
    Param("ShowBanner", "switch", help="Accepted; there is no banner to show."),
    synopsis="Sign in for the Exchange cmdlets (sets their tenant and who they act as).",
)
def connect_exchangeonline(inv: Invocation) -> None:
    upn = inv.args.get("UserPrincipalName")
    connection = inv.session.connect(EXO, principal=upn, tenant=None)
    if upn and connection.tenant is None:
        inv.session.disconnect(EXO)
        raise fail(
            f"Cannot connect as '{upn}': there is no such principal and no tenant has the mail "
            f"domain '{upn.rsplit('@', 1)[-1]}'.",
            "ConnectionFailed",
            "AuthenticationError",
        )
    _warn_if_not_found(inv, connection, upn)


@cmdlet(
    "Disconnect-ExchangeOnline",
    should_process=True,
    synopsis="Forget the Exchange sign-in.",
)
def disconnect_exchangeonline(inv: Invocation) -> None:
    inv.session.disconnect(EXO)


@cmdlet(
    "Connect-SPOService",
    Param("Url", position=0, mandatory=True),
    Param("Credential", help="The admin's user principal name."),
    synopsis="Sign in for the SharePoint Online cmdlets (the tenant's admin site URL).",
)
def connect_sposervice(inv: Invocation) -> None:
    url = str(inv.args.get("Url"))
    match = re.match(r"^https?://([^./]+)", url.strip(), re.IGNORECASE)
    if match is None:
        raise fail(
            f"'{url}' is not a SharePoint admin URL like https://contoso-admin.sharepoint.com.",
            "InvalidUrl",
        )
    label = match.group(1).lower()
    label = label[: -len("-admin")] if label.endswith("-admin") else label
    tenant: str | None = None
    if label in {t.id for t in inv.runtime.tenants.list()}:
        tenant = label
    connection = inv.session.connect(
        SPO, principal=inv.args.get("Credential"), tenant=tenant, details={"url": url}
    )
    _warn_if_not_found(inv, connection, inv.args.get("Credential"))
    if connection.tenant is None:
        inv.session.disconnect(SPO)
        raise fail(
            f"No tenant matches the admin URL '{url}'.", "ConnectionFailed", "AuthenticationError"
        )


@cmdlet("Disconnect-SPOService", synopsis="Forget the SharePoint Online sign-in.")
def disconnect_sposervice(inv: Invocation) -> None:
    inv.session.disconnect(SPO)
