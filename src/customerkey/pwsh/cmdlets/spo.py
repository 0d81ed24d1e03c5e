"""The SharePoint Online Customer Key cmdlets, over the files workload
(``customerkey.workloads.files``): ``Register-SPODataEncryptionPolicy``,
``Update-SPODataEncryptionPolicy``, ``Get-SPODataEncryptionPolicy`` and
``Get-SPOSiteDataEncryptionPolicy`` (``Connect-SPOService`` is in ``connect``).

- ``-Identity`` is the tenant's admin site URL. Without it the cmdlets work in the tenant of
  the URL given to ``Connect-SPOService -Url`` (else in the only tenant there is). URLs may be
  written as Microsoft's documentation writes them (``https://contoso-admin.sharepoint.com``,
  ``https://contoso.sharepoint.com/sites/research``): a ``sharepoint.com`` host is read as
  this installation's SharePoint domain.
- The key vault names are vaults of this installation: a key is handed to the files service
  as the Id ``Get-AzKeyVaultKey`` prints for it (``https://<vault>.<domain>:<port>/keys/<name>/
  <version>``), so our own vault answers whatever remote vaults are configured.
  ``Update-SPODataEncryptionPolicy -KeyVaultUri`` takes any key URI as it is.
- Registration and a key roll are jobs (every site key is re-wrapped; no file is rewritten).
  Like the Exchange cmdlets' jobs they run here to completion when no worker is live and are
  waited for when one is; meanwhile ``Get-SPODataEncryptionPolicy`` (another shell, or a
  ``Session.on_job_progress`` observer) shows ``Registering`` / ``Rolling`` with the percent
  of sites done. Only one roll may be in progress: a second is refused with an error naming
  the roll under way.
"""

from __future__ import annotations

import re
from typing import Any

from customerkey.pwsh.cmdlets.registry import SPO, Invocation, Param, PSObject, cmdlet, fail
from customerkey.pwsh.engine.formatting import register_view
from customerkey.vault.models import KeyId
from customerkey.views.files import files_policy_view, site_policy_view

SPO_HINT = "Connect-SPOService -Url https://<tenant>-admin.sharepoint.com"
POLICY_TYPE = "Microsoft.Online.SharePoint.PowerShell.SPODataEncryptionPolicy"
SITE_POLICY_TYPE = "Microsoft.Online.SharePoint.PowerShell.SPOSiteDataEncryptionPolicy"
# Microsoft's SharePoint host suffix, as the documentation writes URLs.
_MICROSOFT_HOST = re.compile(r"^(https://[^/?#]*?)\.sharepoint\.com(?=[:/?#]|$)", re.IGNORECASE)

register_view(
    POLICY_TYPE,
    list_view=[
        "Identity",
        "PrimaryKeyVaultName",
        "PrimaryKeyName",
        "PrimaryKeyVersion",
        "SecondaryKeyVaultName",
        "SecondaryKeyName",
        "SecondaryKeyVersion",
        "State",
        "PercentComplete",
    ],
)
register_view(SITE_POLICY_TYPE, list_view=["Identity", "State"])


def _local_url(inv: Invocation, url: str) -> str:
    """``url`` with a ``sharepoint.com`` host moved to this installation's SharePoint domain."""
    domain = inv.runtime.files.domain
    return _MICROSOFT_HOST.sub(lambda m: f"{m.group(1)}.{domain}", url.strip(), count=1)


def _tenant(inv: Invocation) -> str:
    """The tenant ``-Identity`` names (checked against Connect-SPOService's), else the
    connected one."""
    identity = inv.args.get("Identity")
    if identity is None:
        return inv.tenant(SPO, SPO_HINT)
    tenant = inv.runtime.files.resolve_tenant(
        inv.session.connected_tenant(SPO), _local_url(inv, str(identity))
    )
    assert tenant is not None
    return tenant


def _key_uri(inv: Invocation, prefix: str = "") -> str:
    """The Id of key ``-<prefix>KeyName`` version ``-<prefix>KeyVersion`` in vault
    ``-<prefix>KeyVaultName`` of this installation."""
    vault = str(inv.args.get(f"{prefix}KeyVaultName")).strip().lower()
    name = str(inv.args.get(f"{prefix}KeyName")).strip()
    version = str(inv.args.get(f"{prefix}KeyVersion")).replace("-", "")
    return KeyId(vault, name, version).uri(inv.domain, inv.port)


def _policy_object(inv: Invocation, tenant: str) -> PSObject:
    status = inv.runtime.files.status(inv.actor(SPO), tenant)
    if status.last_error and status.job_state not in ("queued", "running"):
        inv.warn(
            f"The {status.state.lower()} of the files policy stopped before every site was done "
            f"({status.last_error}); fix the cause and run 'customerkey files resume'."
        )
    return PSObject(POLICY_TYPE, files_policy_view(status), display=status.identity)


@cmdlet(
    "Register-SPODataEncryptionPolicy",
    Param("Identity", position=0, help="The tenant's admin site URL."),
    Param("PrimaryKeyVaultName", mandatory=True),
    Param("PrimaryKeyName", mandatory=True),
    Param("PrimaryKeyVersion", "guid", mandatory=True),
    Param("SecondaryKeyVaultName", mandatory=True),
    Param("SecondaryKeyName", mandatory=True),
    Param("SecondaryKeyVersion", "guid", mandatory=True),
    should_process=True,
    module="Microsoft.Online.SharePoint.PowerShell",
    synopsis="Register the tenant's files DEP; every site is moved under the new TIK.",
)
def register_spodataencryptionpolicy(inv: Invocation) -> None:
    tenant = _tenant(inv)
    job = inv.runtime.files.register(
        inv.actor(SPO), tenant, _key_uri(inv, "Primary"), _key_uri(inv, "Secondary")
    )
    inv.run_jobs([job], f"Registering the files policy of {tenant}")


@cmdlet(
    "Update-SPODataEncryptionPolicy",
    Param("Identity", position=0, help="The tenant's admin site URL."),
    Param("KeyVaultName", sets=("BYOK_MultipleParameters",), mandatory=True),
    Param("KeyName", sets=("BYOK_MultipleParameters",), mandatory=True),
    Param("KeyVersion", "guid", sets=("BYOK_MultipleParameters",), mandatory=True),
    Param("KeyVaultUri", sets=("BYOK_Uri",), mandatory=True, help="A key URI (with version)."),
    Param("KeyType", mandatory=True, choices=("Primary", "Secondary")),
    default_set="BYOK_MultipleParameters",
    module="Microsoft.Online.SharePoint.PowerShell",
    synopsis="Roll the primary or secondary key of the files DEP (one roll at a time).",
)
def update_spodataencryptionpolicy(inv: Invocation) -> None:
    tenant = _tenant(inv)
    key_type = str(inv.args.get("KeyType"))
    if inv.args.parameter_set == "BYOK_Uri":
        uri = str(inv.args.get("KeyVaultUri"))
    else:
        uri = _key_uri(inv)
    job = inv.runtime.files.roll(inv.actor(SPO), tenant, key_type, uri)
    inv.run_jobs([job], f"Rolling the {key_type.lower()} key of {tenant}'s files")


@cmdlet(
    "Get-SPODataEncryptionPolicy",
    Param("Identity", position=0, help="The tenant's admin site URL."),
    module="Microsoft.Online.SharePoint.PowerShell",
    synopsis="The files DEP: its keys and State (Registering/Rolling with percent of sites).",
)
def get_spodataencryptionpolicy(inv: Invocation) -> list[Any]:
    return [_policy_object(inv, _tenant(inv))]


@cmdlet(
    "Get-SPOSiteDataEncryptionPolicy",
    Param("Identity", position=0, mandatory=True, pipeline=True, help="The site's URL."),
    module="Microsoft.Online.SharePoint.PowerShell",
    synopsis="One site's encryption State under the tenant's files DEP.",
)
def get_spositedataencryptionpolicy(inv: Invocation) -> list[Any]:
    identity = str(inv.args.get("Identity"))
    status = inv.runtime.files.site_status(inv.actor(SPO), _local_url(inv, identity))
    connected = inv.session.connected_tenant(SPO)
    if connected and status.site.tenant != connected:
        raise fail(
            f"The site '{identity}' was not found in tenant '{connected}'.",
            "SiteNotFound",
            "ObjectNotFound",
        )
    if status.state == "Unregistered":
        raise fail(
            f"Customer Key is not registered for tenant '{status.site.tenant}'; run "
            "Register-SPODataEncryptionPolicy first.",
            "NotRegistered",
            "InvalidOperation",
        )
    return [PSObject(SITE_POLICY_TYPE, site_policy_view(status), display=status.site.url)]
