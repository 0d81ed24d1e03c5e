"""The cmdlet registry and the cmdlets: Az.KeyVault (with the AzureRM / AzureKeyVault
spellings), the Exchange Online Customer Key cmdlets, and the few PowerShell built-ins the
documentation uses (Get-Date, Format-List, Format-Table, Select-Object...).

Each cmdlet is a function of an ``Invocation`` returning its output objects, registered with
its parameters::

    @cmdlet("Get-Thing", Param("Name", position=0, mandatory=True), aliases=("Get-OldThing",))
    def get_thing(inv: Invocation) -> list[object]:
        return [thing_object(inv.runtime.things.get(inv.actor("Az"), inv.args.get("Name")))]

That decorator (or ``REGISTRY.register(CmdletSpec(...))``) is the extension point: a module of
more cmdlets (SharePoint's, say) registers its own and is listed in ``EXTENSION_MODULES`` so
``default_registry()`` imports it; views for its object types go through
``formatting.register_view``.

Cmdlets call the Runtime's services as the connected principal and print objects with the
real cmdlets' property names, built from ``customerkey.views`` / ``service_views`` (the CLI's
``--json`` shape) with dates kept as dates.
"""

from __future__ import annotations

import fnmatch
import importlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from customerkey.cli.shell.binding import (
    COMMON_NAMES,
    BoundArguments,
    Param,
    Signature,
)
from customerkey.cli.shell.formatting import (
    Field,
    FormattedOutput,
    PSObject,
    format_list,
    format_table,
    format_value,
    register_view,
    select_object,
    to_ps_string,
)
from customerkey.errors import Forbidden
from customerkey.jobs.queue import Job
from customerkey.service.policies import DataEncryptionPolicy
from customerkey.service.workloads import EXCHANGE
from customerkey.service_views import mailbox_view, move_view, policy_view, statistics_view
from customerkey.vault.models import AccessPolicy, Actor, DeletedKeyBundle, KeyBundle, Vault
from customerkey.views import deleted_key_view, key_view, vault_view
from customerkey.workloads.mail.service import REKEY_JOB, Mailbox, MailboxStatistics

if TYPE_CHECKING:
    from customerkey.cli.shell.session import Connection, Session
    from customerkey.runtime import Runtime

CmdletFn = Callable[["Invocation"], Iterable[Any] | None]
SHOULD_PROCESS_VERBS = frozenset(
    {"New", "Set", "Remove", "Add", "Update", "Undo", "Backup", "Restore"}
)
AZ = "Az"
EXO = "ExchangeOnline"
SPO = "SPO"
EXO_HINT = "Connect-ExchangeOnline -UserPrincipalName <admin UPN>"
AZ_HINT = "Connect-AzAccount -Tenant <tenant> (or -Tenant on the cmdlet)"


@dataclass(frozen=True)
class CmdletSpec:
    name: str
    signature: Signature
    run: CmdletFn
    aliases: tuple[str, ...] = ()
    synopsis: str = ""
    module: str = "customerkey"


class Registry:
    """Cmdlets by name and alias, case-insensitive."""

    def __init__(self) -> None:
        self._by_name: dict[str, CmdletSpec] = {}
        self._specs: list[CmdletSpec] = []

    def register(self, spec: CmdletSpec) -> CmdletSpec:
        names = (spec.name, *spec.aliases)
        for name in names:
            if name.lower() in self._by_name:
                raise ValueError(f"cmdlet name {name} is already registered")
        for name in names:
            self._by_name[name.lower()] = spec
        self._specs.append(spec)
        return spec

    def resolve(self, name: str) -> CmdletSpec | None:
        return self._by_name.get(name.lower())

    def specs(self) -> list[CmdletSpec]:
        return list(self._specs)

    def names(self) -> list[str]:
        """Every name a cmdlet answers to (for completion)."""
        return sorted({n for s in self._specs for n in (s.name, *s.aliases)}, key=str.lower)


REGISTRY = Registry()
# Modules of more cmdlets to import into the default registry (each registers on import).
EXTENSION_MODULES: list[str] = ["customerkey.cli.shell.spo_cmdlets"]


def default_registry() -> Registry:
    for module in EXTENSION_MODULES:
        importlib.import_module(module)
    return REGISTRY


def cmdlet(
    name: str,
    *params: Param,
    aliases: Sequence[str] = (),
    default_set: str | None = None,
    should_process: bool | None = None,
    synopsis: str = "",
    module: str = "customerkey",
    registry: Registry | None = None,
) -> Callable[[CmdletFn], CmdletFn]:
    """Register the decorated function as cmdlet ``name``."""
    verb = name.split("-", 1)[0]
    process = verb in SHOULD_PROCESS_VERBS if should_process is None else should_process

    def decorate(fn: CmdletFn) -> CmdletFn:
        (registry or REGISTRY).register(
            CmdletSpec(
                name=name,
                signature=Signature(tuple(params), default_set, process),
                run=fn,
                aliases=tuple(aliases),
                synopsis=synopsis or (fn.__doc__ or "").strip().split("\n")[0],
                module=module,
            )
        )
        return fn

    return decorate


@dataclass
class Invocation:
    """One run of a cmdlet: its bound arguments, its pipeline input, the session."""

    session: Session
    spec: CmdletSpec
    args: BoundArguments
    input: list[Any]
    invoked_as: str

    @property
    def runtime(self) -> Runtime:
        return self.session.runtime

    def actor(self, service: str) -> Actor:
        return self.session.actor_for(service)

    def tenant(self, service: str, hint: str) -> str:
        return self.session.tenant_for(service, hint)

    @property
    def domain(self) -> str:
        return self.runtime.settings.domain

    @property
    def port(self) -> int:
        return self.runtime.settings.port

    def warn(self, text: str) -> None:
        action = self.args.get("WarningAction")
        self.session.warning(text, action=str(action) if action else None)

    def run_jobs(self, jobs: Sequence[Job | None], activity: str) -> list[Job]:
        pending = [j for j in jobs if j is not None]
        return self.session.run_jobs(pending, activity) if pending else []


def fail(message: str, error_id: str, category: str = "InvalidArgument") -> Exception:
    from customerkey.cli.shell.session import ShellError

    return ShellError(message, error_id=error_id, category=category)


# ====================================================================== object shapes

VAULT_TYPE = "Microsoft.Azure.Commands.KeyVault.Models.PSKeyVault"
VAULT_ITEM_TYPE = "Microsoft.Azure.Commands.KeyVault.Models.PSKeyVaultIdentityItem"
DELETED_VAULT_TYPE = "Microsoft.Azure.Commands.KeyVault.Models.PSDeletedKeyVault"
ACCESS_POLICY_TYPE = "Microsoft.Azure.Commands.KeyVault.Models.PSKeyVaultAccessPolicy"
KEY_TYPE = "Microsoft.Azure.Commands.KeyVault.Models.PSKeyVaultKey"
KEY_ITEM_TYPE = "Microsoft.Azure.Commands.KeyVault.Models.PSKeyVaultKeyIdentityItem"
DELETED_KEY_TYPE = "Microsoft.Azure.Commands.KeyVault.Models.PSDeletedKeyVaultKey"
PROFILE_TYPE = "Microsoft.Azure.Commands.Profile.Models.Core.PSAzureProfile"
POLICY_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.DataEncryptionPolicy"
MAILBOX_TYPE = "Microsoft.Exchange.Data.Directory.Management.Mailbox"
MAILUSER_TYPE = "Microsoft.Exchange.Data.Directory.Management.MailUser"
STATISTICS_TYPE = "Microsoft.Exchange.Management.MapiTasks.Presentation.MailboxStatistics"
MOVE_TYPE = "Microsoft.Exchange.Management.RecipientTasks.MoveRequest"
COMMAND_TYPE = "System.Management.Automation.CmdletInfo"

register_view(
    VAULT_TYPE,
    list_view=[
        ("Vault Name", "VaultName"),
        ("Resource Group Name", "ResourceGroupName"),
        ("Location", "Location"),
        ("Resource ID", "ResourceId"),
        ("Vault URI", "VaultUri"),
        ("Tenant ID", "TenantId"),
        ("Soft Delete Enabled?", "EnableSoftDelete"),
        ("Soft Delete Retention Period (days)", "SoftDeleteRetentionInDays"),
        ("Purge Protection Enabled?", "EnablePurgeProtection"),
        ("Access Policies", "AccessPoliciesText"),
    ],
)
register_view(
    VAULT_ITEM_TYPE,
    list_view=[
        ("Vault Name", "VaultName"),
        ("Resource Group Name", "ResourceGroupName"),
        ("Location", "Location"),
        ("Resource ID", "ResourceId"),
    ],
)
register_view(
    DELETED_VAULT_TYPE,
    list_view=[
        ("Vault Name", "VaultName"),
        ("Location", "Location"),
        ("Resource ID", "ResourceId"),
        ("Deletion Date", "DeletionDate"),
        ("Scheduled Purge Date", "ScheduledPurgeDate"),
        ("Purge Protection Enabled?", "EnablePurgeProtection"),
    ],
)
register_view(
    ACCESS_POLICY_TYPE,
    list_view=[
        ("Tenant ID", "TenantId"),
        ("Object ID", "ObjectId"),
        ("Application ID", "ApplicationId"),
        ("Display Name", "DisplayName"),
        ("Permissions to Keys", "PermissionsToKeysStr"),
    ],
)
_KEY_FIELDS: list[tuple[str, str]] = [
    ("Vault/HSM Name", "VaultName"),
    ("Name", "Name"),
    ("Version", "Version"),
    ("Id", "Id"),
    ("Enabled", "Enabled"),
    ("Expires", "Expires"),
    ("Not Before", "NotBefore"),
    ("Created", "Created"),
    ("Updated", "Updated"),
    ("Recovery Level", "RecoveryLevel"),
    ("Tags", "TagsTable"),
]
register_view(KEY_TYPE, list_view=_KEY_FIELDS)
register_view(KEY_ITEM_TYPE, list_view=_KEY_FIELDS)
register_view(
    DELETED_KEY_TYPE,
    list_view=[
        *_KEY_FIELDS[:4],
        ("Deleted Date", "DeletedDate"),
        ("Scheduled Purge Date", "ScheduledPurgeDate"),
        *_KEY_FIELDS[4:],
    ],
)
register_view(PROFILE_TYPE, table_view=["Account", "SubscriptionName", "TenantId", "Environment"])
register_view(POLICY_TYPE, table_view=["Name", "Enabled", "AzureKeyIDs"])
register_view(
    MAILBOX_TYPE, table_view=["Name", "Alias", "RecipientTypeDetails", "DataEncryptionPolicy"]
)
register_view(
    MAILUSER_TYPE, table_view=["Name", "Alias", "RecipientTypeDetails", "DataEncryptionPolicy"]
)
register_view(
    STATISTICS_TYPE, table_view=["DisplayName", "ItemCount", "TotalItemSize", "IsEncrypted"]
)
register_view(MOVE_TYPE, table_view=["DisplayName", "Status", "PercentComplete"])
register_view(COMMAND_TYPE, table_view=["CommandType", "Name", "Source"])


def _policy_display(policy: AccessPolicy) -> str:
    name = policy.sign_in_name or policy.object_id
    if policy.display_name and policy.display_name.lower() != name.lower():
        return f"{policy.display_name} ({name})"
    return name


def _text_block(pairs: Sequence[tuple[str, Any]]) -> list[str]:
    width = max(len(label) for label, _ in pairs)
    return [f"{label:<{width}} : {format_value(value)}".rstrip() for label, value in pairs]


def vault_object(inv: Invocation, vault: Vault, *, item: bool = False) -> PSObject:
    props = vault_view(vault, domain=inv.domain, port=inv.port)
    policies = [
        PSObject(
            ACCESS_POLICY_TYPE,
            {
                "TenantId": vault.tenant,
                "ObjectId": p.object_id,
                "ApplicationId": p.sign_in_name if p.kind == "service" else None,
                "DisplayName": _policy_display(p),
                "PermissionsToKeys": list(p.key_permissions),
                "PermissionsToKeysStr": ", ".join(p.key_permissions),
            },
            display=_policy_display(p),
        )
        for p in vault.access_policies
    ]
    blocks = [
        "\n".join(
            _text_block(
                [
                    ("Tenant ID", p.get("TenantId")),
                    ("Object ID", p.get("ObjectId")),
                    ("Application ID", p.get("ApplicationId")),
                    ("Display Name", p.get("DisplayName")),
                    ("Permissions to Keys", p.get("PermissionsToKeysStr")),
                ]
            )
        )
        for p in policies
    ]
    props["Created"] = vault.created_at
    props["AccessPolicies"] = policies
    props["AccessPoliciesText"] = ("\n" + "\n\n".join(blocks)) if blocks else ""
    type_name = VAULT_ITEM_TYPE if item else VAULT_TYPE
    if vault.deleted_at is not None:
        props["DeletionDate"] = vault.deleted_at
        props["ScheduledPurgeDate"] = vault.scheduled_purge_at
        type_name = DELETED_VAULT_TYPE
    return PSObject(type_name, props, display=vault.display_name)


def _tags_table(tags: dict[str, str]) -> str:
    if not tags:
        return ""
    width = max(4, *(len(k) for k in tags))
    rows = [f"{'Name':<{width}}  Value", f"{'----':<{width}}  -----"]
    rows += [f"{k:<{width}}  {v}" for k, v in tags.items()]
    return "\n" + "\n".join(rows)


def _key_props(props: dict[str, Any], bundle: KeyBundle) -> dict[str, Any]:
    attrs = bundle.attributes
    props["NotBefore"] = attrs.not_before
    props["Expires"] = attrs.expires
    props["Created"] = attrs.created
    props["Updated"] = attrs.updated
    props["TagsTable"] = _tags_table(dict(bundle.tags))
    return props


def key_object(inv: Invocation, bundle: KeyBundle, *, item: bool = False) -> PSObject:
    """A key version (Get-AzKeyVaultKey -Name); ``item``: a listed key, whose Id names no
    version (as Key Vault lists keys), the Id to give New-DataEncryptionPolicy."""
    props = _key_props(key_view(bundle, domain=inv.domain, port=inv.port), bundle)
    if item:
        props["Id"] = props["Id"].rsplit("/", 1)[0]
        props["Version"] = None
    return PSObject(KEY_ITEM_TYPE if item else KEY_TYPE, props, display=props["Id"])


def deleted_key_object(inv: Invocation, deleted: DeletedKeyBundle) -> PSObject:
    props = _key_props(deleted_key_view(deleted, domain=inv.domain, port=inv.port), deleted.key)
    props["DeletedDate"] = deleted.deleted_date
    props["ScheduledPurgeDate"] = deleted.scheduled_purge_date
    return PSObject(DELETED_KEY_TYPE, props, display=props["Id"])


def policy_object(policy: DataEncryptionPolicy) -> PSObject:
    props = policy_view(policy)
    props["WhenCreated"] = policy.created_at
    props["WhenChanged"] = policy.updated_at
    return PSObject(POLICY_TYPE, props, display=policy.name)


def mailbox_object(mailbox: Mailbox) -> PSObject:
    props = mailbox_view(mailbox)
    props["WhenCreated"] = mailbox.created_at
    type_name = MAILUSER_TYPE if mailbox.kind == "mailuser" else MAILBOX_TYPE
    return PSObject(type_name, props, display=mailbox.upn)


def statistics_object(stats: MailboxStatistics) -> PSObject:
    return PSObject(STATISTICS_TYPE, statistics_view(stats), display=stats.mailbox.upn)


def move_object(job: Job, mailbox: Mailbox) -> PSObject:
    props = move_view(job, mailbox.display_name)
    props["Identity"] = mailbox.upn
    return PSObject(MOVE_TYPE, props, display=mailbox.upn)


# ====================================================================== helpers


def _matches(pattern: str | None, value: str) -> bool:
    if pattern is None:
        return True
    return fnmatch.fnmatchcase(value.lower(), pattern.lower())


def _protection(inv: Invocation, vault: str, name: str, version: str | None) -> str | None:
    """What still depends on a key (or one version), in words, or None."""
    try:
        usages = inv.runtime.usage.key_usage(inv.actor(AZ), vault, name)
    except Forbidden:
        return None
    if version is not None:
        usages = [u for u in usages if u.version == version.lower()]
    found = []
    for usage in usages:
        count = int(usage.dependents.get("DepGenerations", 0) or 0)
        if count:
            found.append(
                f"version {usage.version} wraps {count} key generation(s) of data encryption "
                f"policy {usage.dependents['Policies']}, protecting "
                f"{usage.dependents['Mailboxes']} mailbox(es) and "
                f"{usage.dependents['Items']} item(s)"
            )
    return "; ".join(found) if found else None


def _principal_target(inv: Invocation) -> tuple[str, str | None]:
    """(object id, kind wanted) from -UserPrincipalName / -ServicePrincipalName / -ObjectId."""
    for param, kind in (
        ("UserPrincipalName", "user"),
        ("ServicePrincipalName", "service"),
        ("ObjectId", None),
    ):
        value = inv.args.get(param)
        if value:
            return str(value), kind
    raise fail(
        "Specify -UserPrincipalName, -ServicePrincipalName or -ObjectId.", "MissingPrincipal"
    )


def _check_principal(inv: Invocation, object_id: str, kind: str | None, vault: Vault) -> str:
    try:
        principal = inv.runtime.principals.get(object_id)
    except Exception:  # PrincipalNotFound, a malformed id
        principal = None
    # (whether the principal may be granted on this vault is the vault service's decision)
    if principal is None or (kind is not None and principal.kind != kind):
        raise fail(
            f"Cannot find the Active Directory object '{object_id}' in tenant '{vault.tenant}'. "
            "Please make sure that the user or application service principal you are "
            "authorizing is registered in the current subscription's Azure Active directory. "
            "(Create it first with 'customerkey principal create'.)",
            "ObjectNotFound",
            "InvalidArgument",
        )
    return principal.object_id


def _no_other_permissions(inv: Invocation) -> None:
    for param in ("PermissionsToSecrets", "PermissionsToCertificates", "PermissionsToStorage"):
        if inv.args.get(param):
            raise fail(
                f"customerkey vaults hold keys only; -{param} cannot be granted.",
                "NotSupported",
                "NotImplemented",
            )


def _mailbox(inv: Invocation, identity: str, *, mail_user: bool | None = None) -> Mailbox:
    """The recipient ``identity`` names (UPN, alias or GUID), in the connected tenant.
    ``mail_user``: True = must be a mail user, False = must be a mailbox."""
    mailbox = inv.runtime.mail.get(inv.actor(EXO), identity)
    tenant = inv.session.connected_tenant(EXO)
    if tenant and mailbox.tenant != tenant:
        raise fail(
            f"The mailbox or mail user '{identity}' was not found in tenant '{tenant}'.",
            "ManagementObjectNotFoundException",
            "ObjectNotFound",
        )
    if mail_user is True and mailbox.kind != "mailuser":
        raise fail(
            f"The operation couldn't be performed because '{identity}' is a mailbox, not a mail "
            "user; use the *-Mailbox cmdlets.",
            "ManagementObjectNotFoundException",
            "ObjectNotFound",
        )
    if mail_user is False and mailbox.kind == "mailuser":
        raise fail(
            f"The operation couldn't be performed because '{identity}' is a mail user, not a "
            "mailbox; use the *-MailUser cmdlets.",
            "ManagementObjectNotFoundException",
            "ObjectNotFound",
        )
    return mailbox


def _tenant_of_upn(inv: Invocation, upn: str | None) -> str:
    if upn and "@" in upn:
        tenant = inv.runtime.tenants.for_domain(upn.rsplit("@", 1)[1]).id
        connected = inv.session.connected_tenant(EXO)
        if connected and connected != tenant:
            raise fail(
                f"'{upn}' is not in the mail domain of tenant '{connected}'.", "InvalidDomain"
            )
        return tenant
    return inv.tenant(EXO, EXO_HINT)


def _alias_from(name: str) -> str:
    alias = re.sub(r"[^A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]", "", name)
    if not alias:
        raise fail(f"Cannot make an alias from the name '{name}'; give -Alias.", "InvalidAlias")
    return alias


def _write_file(path: Path, data: bytes) -> None:
    from customerkey.cli.key_commands import _write_private

    _write_private(path, data)


# ====================================================================== sign-in


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


# ====================================================================== vaults


@cmdlet(
    "New-AzKeyVault",
    Param("Name", aliases=("VaultName",), position=0, mandatory=True),
    Param("ResourceGroupName", position=1, mandatory=True),
    Param("Location", position=2, mandatory=True),
    Param("EnablePurgeProtection", "switch"),
    Param("EnableSoftDelete", "switch", help="Soft delete is always on; accepted for old lines."),
    Param("SoftDeleteRetentionInDays", "int"),
    Param("SubscriptionId"),
    Param("Tenant", help="customerkey: the tenant that owns the vault."),
    aliases=("New-AzureRmKeyVault",),
    synopsis="Create a key vault (soft delete always on).",
)
def new_azkeyvault(inv: Invocation) -> list[Any]:
    tenant = inv.args.get("Tenant") or inv.session.connected_tenant(AZ)
    if tenant is None and inv.actor(AZ).is_operator:
        known = inv.runtime.tenants.list()
        if len(known) == 1:
            tenant = known[0].id
        elif known:
            raise fail(
                f"Say which tenant owns the vault with -Tenant or {AZ_HINT} (tenants: "
                f"{', '.join(t.id for t in known)}).",
                "NotConnected",
                "InvalidOperation",
            )
    connection = inv.session.connections.get(AZ)
    subscription = (
        inv.args.get("SubscriptionId")
        or (connection.details.get("subscription") if connection else None)
        or "default"
    )
    vault = inv.runtime.vault.create_vault(
        inv.actor(AZ),
        inv.args.get("Name"),
        subscription=subscription,
        region=inv.args.get("Location"),
        resource_group=inv.args.get("ResourceGroupName"),
        retention_days=inv.args.get("SoftDeleteRetentionInDays") or 90,
        purge_protection=inv.args.flag("EnablePurgeProtection"),
        tenant=tenant,
    )
    return [vault_object(inv, vault)]


@cmdlet(
    "Get-AzKeyVault",
    Param("VaultName", aliases=("Name",), position=0),
    Param("ResourceGroupName", position=1),
    Param("Location"),
    Param("InRemovedState", "switch"),
    aliases=("Get-AzureRmKeyVault",),
    synopsis="Show a vault (access policies, soft delete, purge protection) or list vaults.",
)
def get_azkeyvault(inv: Invocation) -> list[Any]:
    actor = inv.actor(AZ)
    name = inv.args.get("VaultName")
    group = inv.args.get("ResourceGroupName")
    location = inv.args.get("Location")
    tenant = inv.session.connected_tenant(AZ)
    if name and not inv.args.flag("InRemovedState") and not any(c in name for c in "*?["):
        vault = inv.runtime.vault.get_vault(actor, name)
        if group and vault.resource_group.lower() != group.lower():
            raise fail(
                f"Vault '{name}' was not found in resource group '{group}'.",
                "VaultNotFound",
                "ObjectNotFound",
            )
        return [vault_object(inv, vault)]
    vaults = inv.runtime.vault.list_vaults(actor, deleted=inv.args.flag("InRemovedState"))
    chosen = [
        v
        for v in vaults
        if _matches(name, v.display_name)
        and _matches(group, v.resource_group)
        and (location is None or v.region == location.lower())
        and (tenant is None or v.tenant == tenant)
    ]
    return [vault_object(inv, v, item=True) for v in chosen]


@cmdlet(
    "Remove-AzKeyVault",
    Param("VaultName", aliases=("Name",), position=0, mandatory=True),
    Param("ResourceGroupName", position=1),
    Param("Location", position=2),
    Param("InRemovedState", "switch", help="Purge a soft-deleted vault."),
    Param("Force", "switch"),
    Param("PassThru", "switch"),
    aliases=("Remove-AzureRmKeyVault",),
    synopsis="Soft-delete a vault, or purge a deleted one (-InRemovedState).",
)
def remove_azkeyvault(inv: Invocation) -> list[Any]:
    name = inv.args.get("VaultName")
    if inv.args.flag("InRemovedState"):
        inv.runtime.vault.purge_vault(inv.actor(AZ), name)
    else:
        inv.runtime.vault.delete_vault(inv.actor(AZ), name)
    return [True] if inv.args.flag("PassThru") else []


@cmdlet(
    "Undo-AzKeyVaultRemoval",
    Param("VaultName", position=0, mandatory=True),
    Param("ResourceGroupName", position=1),
    Param("Location", position=2),
    aliases=("Undo-AzureRmKeyVaultRemoval",),
    synopsis="Recover a soft-deleted vault.",
)
def undo_azkeyvaultremoval(inv: Invocation) -> list[Any]:
    return [
        vault_object(inv, inv.runtime.vault.recover_vault(inv.actor(AZ), inv.args.get("VaultName")))
    ]


_PRINCIPAL_PARAMS = (
    Param(
        "UserPrincipalName",
        aliases=("UPN", "Email"),
        sets=("ByUserPrincipalName",),
        mandatory=True,
    ),
    Param(
        "ServicePrincipalName",
        aliases=("SPN",),
        sets=("ByServicePrincipalName",),
        mandatory=True,
    ),
    Param("ObjectId", sets=("ByObjectId",), mandatory=True),
)


@cmdlet(
    "Set-AzKeyVaultAccessPolicy",
    Param("VaultName", position=0, mandatory=True),
    Param("ResourceGroupName", position=1),
    *_PRINCIPAL_PARAMS,
    Param("PermissionsToKeys", "string[]", aliases=("PermissionToKeys",)),
    Param("PermissionsToSecrets", "string[]", aliases=("PermissionToSecrets",)),
    Param("PermissionsToCertificates", "string[]", aliases=("PermissionToCertificates",)),
    Param("PermissionsToStorage", "string[]", aliases=("PermissionToStorage",)),
    Param("PassThru", "switch"),
    default_set="ByUserPrincipalName",
    aliases=("Set-AzureRmKeyVaultAccessPolicy",),
    synopsis="Grant a principal key permissions (they replace what it held).",
)
def set_azkeyvaultaccesspolicy(inv: Invocation) -> list[Any]:
    _no_other_permissions(inv)
    vault_name = inv.args.get("VaultName")
    actor = inv.actor(AZ)
    vault = inv.runtime.vault.get_vault(actor, vault_name)
    object_id, kind = _principal_target(inv)
    principal = _check_principal(inv, object_id, kind, vault)
    permissions = inv.args.get("PermissionsToKeys")
    if permissions is None:
        existing = next((p for p in vault.access_policies if p.object_id == principal), None)
        if existing is None:
            raise fail(
                "Access policy is not set. No permission is specified: give -PermissionsToKeys.",
                "NoPermission",
            )
        return [vault_object(inv, vault)] if inv.args.flag("PassThru") else []
    updated = inv.runtime.vault.set_access_policy(
        actor, vault_name, principal, permissions, replace=True
    )
    return [vault_object(inv, updated)] if inv.args.flag("PassThru") else []


@cmdlet(
    "Remove-AzKeyVaultAccessPolicy",
    Param("VaultName", position=0, mandatory=True),
    Param("ResourceGroupName", position=1),
    *_PRINCIPAL_PARAMS,
    Param("PassThru", "switch"),
    default_set="ByUserPrincipalName",
    aliases=("Remove-AzureRmKeyVaultAccessPolicy",),
    synopsis="Remove a principal's access policy (for a workload principal: revocation).",
)
def remove_azkeyvaultaccesspolicy(inv: Invocation) -> list[Any]:
    object_id, _ = _principal_target(inv)
    vault = inv.runtime.vault.remove_access_policy(
        inv.actor(AZ), inv.args.get("VaultName"), object_id
    )
    return [vault_object(inv, vault)] if inv.args.flag("PassThru") else []


# ====================================================================== keys


@cmdlet(
    "Add-AzKeyVaultKey",
    Param("VaultName", position=0, mandatory=True),
    Param("Name", aliases=("KeyName",), position=1, mandatory=True),
    Param("Destination", position=2, mandatory=True, choices=("HSM", "Software")),
    Param("KeyOps", "string[]"),
    Param("NotBefore", "datetime"),
    Param("Expires", "datetime"),
    Param("Size", "int"),
    Param("KeyType", choices=("RSA", "EC")),
    Param("Disable", "switch"),
    Param("Tag", "hashtable", aliases=("Tags",)),
    aliases=("Add-AzureKeyVaultKey",),
    synopsis="Create a key; with the name of an existing key, add a version (a key roll).",
)
def add_azkeyvaultkey(inv: Invocation) -> list[Any]:
    hsm = inv.args.get("Destination") == "HSM"
    key_type = inv.args.get("KeyType") or "RSA"
    tags = inv.args.get("Tag")
    bundle = inv.runtime.vault.create_key(
        inv.actor(AZ),
        inv.args.get("VaultName"),
        inv.args.get("Name"),
        kty=f"{key_type}-HSM" if hsm else key_type,
        size=inv.args.get("Size"),
        key_ops=inv.args.get("KeyOps"),
        enabled=not inv.args.flag("Disable"),
        not_before=inv.args.get("NotBefore"),
        expires=inv.args.get("Expires"),
        tags={str(k): to_ps_string(v) for k, v in tags.items()} if tags else None,
    )
    return [key_object(inv, bundle)]


@cmdlet(
    "Get-AzKeyVaultKey",
    Param("VaultName", position=0, mandatory=True),
    Param(
        "Name",
        aliases=("KeyName",),
        position=1,
        sets=("ByVaultName", "ByKeyName", "ByKeyVersions"),
        mandatory=("ByKeyName", "ByKeyVersions"),
    ),
    Param("Version", aliases=("KeyVersion",), position=2, sets=("ByKeyName",)),
    Param("IncludeVersions", "switch", sets=("ByKeyVersions",), mandatory=True),
    Param("InRemovedState", "switch", sets=("ByVaultName", "ByKeyName")),
    default_set="ByVaultName",
    aliases=("Get-AzureKeyVaultKey",),
    synopsis="Show a key (a version), its versions, the keys of a vault, or deleted keys.",
)
def get_azkeyvaultkey(inv: Invocation) -> list[Any]:
    actor = inv.actor(AZ)
    vault = inv.args.get("VaultName")
    name = inv.args.get("Name")
    service = inv.runtime.vault
    if inv.args.flag("InRemovedState"):
        if name and not any(c in name for c in "*?["):
            return [deleted_key_object(inv, service.get_deleted_key(actor, vault, name))]
        return [
            deleted_key_object(inv, d)
            for d in service.list_deleted_keys(actor, vault)
            if _matches(name, d.key.id.name)
        ]
    if inv.args.flag("IncludeVersions"):
        return [key_object(inv, b) for b in service.list_versions(actor, vault, name)]
    if name and not any(c in name for c in "*?["):
        return [key_object(inv, service.get_key(actor, vault, name, inv.args.get("Version")))]
    return [
        key_object(inv, b, item=True)
        for b in service.list_keys(actor, vault)
        if _matches(name, b.id.name)
    ]


@cmdlet(
    "Update-AzKeyVaultKey",
    Param("VaultName", position=0, mandatory=True),
    Param("Name", aliases=("KeyName",), position=1, mandatory=True),
    Param("Version", aliases=("KeyVersion",), position=2),
    Param("Enable", "bool"),
    Param("Expires", "datetime"),
    Param("NotBefore", "datetime"),
    Param("KeyOps", "string[]"),
    Param("Tag", "hashtable", aliases=("Tags",)),
    Param("PassThru", "switch"),
    aliases=("Set-AzureKeyVaultKeyAttribute", "Update-AzureKeyVaultKey"),
    synopsis="Enable or disable a key version, change its times, operations or tags.",
)
def update_azkeyvaultkey(inv: Invocation) -> list[Any]:
    actor = inv.actor(AZ)
    vault, name, version = (inv.args.get(n) for n in ("VaultName", "Name", "Version"))
    if inv.args.get("Enable") is False:
        target = version or inv.runtime.vault.get_key(actor, vault, name).id.version
        protecting = _protection(inv, vault, name, target)
        if protecting:
            inv.warn(
                f"Disabling a root key version that still protects data: {protecting}. That "
                "content stays readable only through the policy's other root key until "
                "Set-DataEncryptionPolicy -Refresh moves it to a newer version."
            )
    tags = inv.args.get("Tag")
    bundle = inv.runtime.vault.update_key(
        actor,
        vault,
        name,
        version,
        enabled=inv.args.get("Enable"),
        not_before=inv.args.get("NotBefore"),
        expires=inv.args.get("Expires"),
        key_ops=inv.args.get("KeyOps"),
        tags={str(k): to_ps_string(v) for k, v in tags.items()} if tags is not None else None,
    )
    return [key_object(inv, bundle)] if inv.args.flag("PassThru") else []


@cmdlet(
    "Remove-AzKeyVaultKey",
    Param("VaultName", position=0, mandatory=True),
    Param("Name", aliases=("KeyName",), position=1, mandatory=True),
    Param("InRemovedState", "switch", help="Purge a soft-deleted key."),
    Param("Force", "switch"),
    Param("PassThru", "switch"),
    aliases=("Remove-AzureKeyVaultKey",),
    synopsis="Soft-delete a key with all its versions, or purge a deleted one.",
)
def remove_azkeyvaultkey(inv: Invocation) -> list[Any]:
    actor = inv.actor(AZ)
    vault, name = inv.args.get("VaultName"), inv.args.get("Name")
    if inv.args.flag("InRemovedState"):
        inv.runtime.vault.purge_deleted_key(actor, vault, name)
        return []
    protecting = _protection(inv, vault, name, None)
    if protecting and not inv.args.flag("Force"):
        raise fail(
            f"Key '{name}' still protects data ({protecting}); removing it leaves that content "
            "readable only through the policy's other root key. Roll the key and run "
            "Set-DataEncryptionPolicy -Refresh first, or add -Force to remove it anyway.",
            "KeyProtectsData",
            "InvalidOperation",
        )
    if protecting:
        inv.warn(f"Removing key '{name}', which still protects data: {protecting}.")
    deleted = inv.runtime.vault.delete_key(actor, vault, name)
    return [deleted_key_object(inv, deleted)] if inv.args.flag("PassThru") else []


@cmdlet(
    "Undo-AzKeyVaultKeyRemoval",
    Param("VaultName", position=0, mandatory=True),
    Param("Name", aliases=("KeyName",), position=1, mandatory=True),
    aliases=("Undo-AzureKeyVaultKeyRemoval",),
    synopsis="Recover a soft-deleted key with all its versions.",
)
def undo_azkeyvaultkeyremoval(inv: Invocation) -> list[Any]:
    bundle = inv.runtime.vault.recover_deleted_key(
        inv.actor(AZ), inv.args.get("VaultName"), inv.args.get("Name")
    )
    return [key_object(inv, bundle)]


@cmdlet(
    "Backup-AzKeyVaultKey",
    Param("VaultName", position=0, mandatory=True),
    Param("Name", aliases=("KeyName",), position=1, mandatory=True),
    Param("OutputFile", position=2),
    Param("Force", "switch"),
    aliases=("Backup-AzureKeyVaultKey",),
    synopsis="Write a protected backup of every version of a key to a file.",
)
def backup_azkeyvaultkey(inv: Invocation) -> list[Any]:
    vault, name = inv.args.get("VaultName"), inv.args.get("Name")
    stamp = inv.session.now().strftime("%Y%m%d%H%M%S")
    path = inv.session.path(inv.args.get("OutputFile") or f"{vault}-{name}-{stamp}.keybackup")
    if path.is_dir():
        raise fail(f"'{path}' is a folder; name the backup file to write.", "InvalidPath")
    if path.exists() and not inv.args.flag("Force"):
        raise fail(
            f"Backup file '{path}' already exists. Use -Force to overwrite it.",
            "FileExists",
            "ResourceExists",
        )
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise fail(f"Cannot write '{path}': the folder '{folder}' does not exist.", "InvalidPath")
    blob = inv.runtime.vault.backup_key(inv.actor(AZ), vault, name)
    _write_file(path, blob)
    return [str(path)]


@cmdlet(
    "Restore-AzKeyVaultKey",
    Param("VaultName", position=0, mandatory=True),
    Param("InputFile", position=1, mandatory=True),
    aliases=("Restore-AzureKeyVaultKey",),
    synopsis="Restore a backed-up key with all its versions (fails if the name exists).",
)
def restore_azkeyvaultkey(inv: Invocation) -> list[Any]:
    path = inv.session.path(inv.args.get("InputFile"))
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise fail(
            f"Cannot read the backup file '{path}': {exc.strerror or exc}.",
            "FileNotFound",
            "ObjectNotFound",
        ) from None
    bundle = inv.runtime.vault.restore_key(inv.actor(AZ), inv.args.get("VaultName"), blob)
    return [key_object(inv, bundle)]


# ====================================================================== policies


@cmdlet(
    "New-DataEncryptionPolicy",
    Param("Name", position=0, mandatory=True),
    Param("AzureKeyIDs", "string[]", mandatory=True),
    Param("Description"),
    Param("Enabled", "bool"),
    synopsis="Create a mailbox DEP from two root keys in two vaults (both are checked first).",
)
def new_dataencryptionpolicy(inv: Invocation) -> list[Any]:
    enabled = inv.args.get("Enabled")
    policy = inv.runtime.policies.create(
        inv.actor(EXO),
        inv.tenant(EXO, EXO_HINT),
        inv.args.get("Name"),
        inv.args.get("AzureKeyIDs"),
        description=inv.args.get("Description") or "",
        enabled=True if enabled is None else enabled,
    )
    return [policy_object(policy)]


@cmdlet(
    "Set-DataEncryptionPolicy",
    Param("Identity", position=0, mandatory=True),
    Param("Refresh", "switch", sets=("RefreshKey",), mandatory=True),
    Param("Enabled", "bool", sets=("Default",)),
    Param("Name", sets=("Default",)),
    Param("Description", sets=("Default",)),
    Param("PermanentDataPurgeRequested", "switch", sets=("PermanentDataPurge",), mandatory=True),
    Param("PermanentDataPurgeReason", sets=("PermanentDataPurge",), mandatory=True),
    Param("PermanentDataPurgeContact", sets=("PermanentDataPurge",), mandatory=True),
    default_set="Default",
    synopsis="Refresh a DEP after a key roll, enable/disable/rename it, or request a purge.",
)
def set_dataencryptionpolicy(inv: Invocation) -> None:
    actor = inv.actor(EXO)
    tenant = inv.tenant(EXO, EXO_HINT)
    identity = inv.args.get("Identity")
    if inv.args.parameter_set == "RefreshKey":
        job = inv.runtime.mail.refresh(actor, tenant, identity)
        if job is None:
            inv.warn(
                f"The data encryption policy '{identity}' already uses the newest version of "
                "both of its root keys; there was nothing to refresh."
            )
            return
        inv.run_jobs([job], f"Refreshing {identity}")
        return
    if inv.args.parameter_set == "PermanentDataPurge":
        inv.runtime.policies.request_purge(
            actor,
            tenant,
            identity,
            reason=inv.args.get("PermanentDataPurgeReason"),
            contact=inv.args.get("PermanentDataPurgeContact"),
            workload_principal=EXCHANGE.app_id,
        )
        return
    changes = {n: inv.args.get(n) for n in ("Enabled", "Name", "Description") if n in inv.args}
    if not changes:
        inv.warn(
            f"The command completed successfully but no settings of '{identity}' have been "
            "modified."
        )
        return
    inv.runtime.policies.update(
        actor,
        tenant,
        identity,
        enabled=changes.get("Enabled"),
        name=changes.get("Name"),
        description=changes.get("Description"),
    )


@cmdlet(
    "Get-DataEncryptionPolicy",
    Param("Identity", position=0),
    synopsis="Show mailbox DEPs; by name, DEP GUID or the GUID Get-MailboxStatistics shows.",
)
def get_dataencryptionpolicy(inv: Invocation) -> list[Any]:
    actor = inv.actor(EXO)
    tenant = inv.tenant(EXO, EXO_HINT)
    identity = inv.args.get("Identity")
    if identity:
        return [policy_object(inv.runtime.policies.get(actor, tenant, identity, kind="mailbox"))]
    return [
        policy_object(p) for p in inv.runtime.policies.list_policies(actor, tenant, kind="mailbox")
    ]


# ====================================================================== recipients


def _new_recipient(inv: Invocation, kind: str) -> list[Any]:
    name = str(inv.args.get("Name"))
    alias = inv.args.get("Alias") or _alias_from(name)
    upn = inv.args.get("MicrosoftOnlineServicesID")
    tenant = _tenant_of_upn(inv, upn)
    if not upn:
        upn = f"{alias}@{inv.runtime.tenants.get(tenant).mail_domain}"
    mailbox = inv.runtime.mail.create_mailbox(
        inv.actor(EXO),
        tenant,
        upn,
        alias=alias,
        display_name=inv.args.get("DisplayName") or name,
        kind=kind,
        policy=inv.args.get("DataEncryptionPolicy"),
    )
    return [mailbox_object(mailbox)]


_RECIPIENT_PARAMS = (
    Param("Name", position=0, mandatory=True),
    Param("Alias"),
    Param("DisplayName"),
    Param("MicrosoftOnlineServicesID", aliases=("UserPrincipalName",)),
    Param("DataEncryptionPolicy"),
)


@cmdlet(
    "New-Mailbox",
    *_RECIPIENT_PARAMS,
    Param("Shared", "switch"),
    synopsis="Create a user (or -Shared) mailbox, optionally under a DEP.",
)
def new_mailbox(inv: Invocation) -> list[Any]:
    return _new_recipient(inv, "shared" if inv.args.flag("Shared") else "user")


@cmdlet(
    "New-MailUser",
    *_RECIPIENT_PARAMS,
    synopsis="Create a mail user (a mailbox not migrated yet).",
)
def new_mailuser(inv: Invocation) -> list[Any]:
    return _new_recipient(inv, "mailuser")


def _set_recipient(inv: Invocation, *, mail_user: bool) -> None:
    identity = str(inv.args.get("Identity"))
    mailbox = _mailbox(inv, identity, mail_user=mail_user)
    if "DataEncryptionPolicy" not in inv.args:
        inv.warn(
            f"The command completed successfully but no settings of '{identity}' have been "
            "modified."
        )
        return
    job = inv.runtime.mail.set_policy(
        inv.actor(EXO), mailbox.id, inv.args.get("DataEncryptionPolicy")
    )
    inv.run_jobs([job], f"Encrypting {mailbox.upn}")


_SET_RECIPIENT_PARAMS = (
    Param("Identity", position=0, mandatory=True, pipeline=True),
    Param("DataEncryptionPolicy", allow_null=True),
    Param("Force", "switch"),
)


@cmdlet(
    "Set-Mailbox",
    *_SET_RECIPIENT_PARAMS,
    synopsis="Assign a DEP to a mailbox ($null: back to service-managed keys).",
)
def set_mailbox(inv: Invocation) -> None:
    _set_recipient(inv, mail_user=False)


@cmdlet(
    "Set-MailUser",
    *_SET_RECIPIENT_PARAMS,
    synopsis="Assign a DEP to a mail user before migration.",
)
def set_mailuser(inv: Invocation) -> None:
    _set_recipient(inv, mail_user=True)


def _get_recipients(inv: Invocation, *, mail_user: bool) -> list[Any]:
    identity = inv.args.get("Identity")
    if identity:
        return [mailbox_object(_mailbox(inv, identity, mail_user=mail_user))]
    boxes = inv.runtime.mail.list_mailboxes(inv.actor(EXO), inv.tenant(EXO, EXO_HINT))
    chosen = [b for b in boxes if (b.kind == "mailuser") == mail_user]
    size = inv.args.get("ResultSize")
    if size and str(size).lower() != "unlimited":
        if not str(size).isdigit():
            raise fail(
                f"Cannot bind parameter 'ResultSize' to the value \"{size}\": use a number or "
                "Unlimited.",
                "CannotConvertArgument",
            )
        chosen = chosen[: int(size)]
    return [mailbox_object(b) for b in chosen]


@cmdlet(
    "Get-Mailbox",
    Param("Identity", position=0),
    Param("ResultSize"),
    synopsis="Show a mailbox or list the tenant's mailboxes.",
)
def get_mailbox(inv: Invocation) -> list[Any]:
    return _get_recipients(inv, mail_user=False)


@cmdlet(
    "Get-MailUser",
    Param("Identity", position=0),
    Param("ResultSize"),
    synopsis="Show a mail user or list the tenant's mail users.",
)
def get_mailuser(inv: Invocation) -> list[Any]:
    return _get_recipients(inv, mail_user=True)


@cmdlet(
    "Get-MailboxStatistics",
    Param("Identity", position=0, mandatory=True, pipeline=True),
    synopsis="IsEncrypted, DataEncryptionPolicyID (the GUID of the protecting key), counts.",
)
def get_mailboxstatistics(inv: Invocation) -> list[Any]:
    mailbox = _mailbox(inv, str(inv.args.get("Identity")))
    return [statistics_object(inv.runtime.mail.statistics(inv.actor(EXO), mailbox.id))]


@cmdlet(
    "New-MoveRequest",
    Param("Identity", position=0, mandatory=True, pipeline=True),
    synopsis="Move a mailbox: all content re-encrypted under a new mailbox key.",
)
def new_moverequest(inv: Invocation) -> list[Any]:
    mailbox = _mailbox(inv, str(inv.args.get("Identity")), mail_user=False)
    job = inv.runtime.mail.move(inv.actor(EXO), mailbox.id)
    (done,) = inv.run_jobs([job], f"Moving {mailbox.upn}")
    return [move_object(done, mailbox)]


@cmdlet(
    "Get-MoveRequest",
    Param("Identity", position=0, pipeline=True),
    synopsis="The newest move (re-encryption) of a mailbox, or of every mailbox.",
)
def get_moverequest(inv: Invocation) -> list[Any]:
    identity = inv.args.get("Identity")
    actor = inv.actor(EXO)
    if identity:
        mailbox = _mailbox(inv, str(identity), mail_user=False)
        job = inv.runtime.mail.move_status(actor, mailbox.id)
        if job is None:
            raise fail(
                f"Couldn't find a move request that corresponds to the specified identity "
                f"'{identity}'.",
                "ManagementObjectNotFoundException",
                "ObjectNotFound",
            )
        return [move_object(job, mailbox)]
    found = []
    for mailbox in inv.runtime.mail.list_mailboxes(actor, inv.tenant(EXO, EXO_HINT)):
        job = inv.runtime.jobs.latest_for(mailbox.id, REKEY_JOB)
        if job is not None:
            found.append(move_object(job, mailbox))
    return found


# ====================================================================== PowerShell built-ins


@cmdlet(
    "Get-Date",
    Param("Date", "datetime", position=0),
    synopsis="The current time, or the time -Date names (times without a zone are UTC).",
)
def get_date(inv: Invocation) -> list[Any]:
    value = inv.args.get("Date")
    return [value if isinstance(value, datetime) else inv.session.now()]


def _no_format_input(inv: Invocation) -> None:
    if any(isinstance(i, FormattedOutput) for i in inv.input):
        raise fail(
            'The object of type "Microsoft.PowerShell.Commands.Internal.Format.FormatStartData" '
            "is not valid or not in the correct sequence. This is likely caused by a "
            f'user-specified "{inv.spec.name}" command which is conflicting with the default '
            "formatting.",
            "ConsoleLineOutputOutOfSequencePacket",
            "InvalidData",
        )


@cmdlet(
    "Format-List",
    Param("Property", "string[]", position=0),
    aliases=("fl",),
    synopsis="Show objects as 'Name : Value' lines (the properties named, or all: *).",
)
def format_list_cmdlet(inv: Invocation) -> list[Any]:
    _no_format_input(inv)
    if not inv.input:
        return []
    return [format_list(inv.input, inv.args.get("Property"), limit=inv.session.enumeration_limit)]


@cmdlet(
    "Format-Table",
    Param("Property", "string[]", position=0),
    Param("AutoSize", "switch", help="Tables are always sized to their content."),
    Param("Wrap", "switch", help="Cells are never cut."),
    Param("HideTableHeaders", "switch"),
    aliases=("ft",),
    synopsis="Show objects as a table (the properties named, or the default columns).",
)
def format_table_cmdlet(inv: Invocation) -> list[Any]:
    _no_format_input(inv)
    if not inv.input:
        return []
    return [
        format_table(
            inv.input,
            inv.args.get("Property"),
            headers=not inv.args.flag("HideTableHeaders"),
            limit=inv.session.enumeration_limit,
        )
    ]


@cmdlet(
    "Select-Object",
    Param("Property", "string[]", position=0),
    Param("ExpandProperty"),
    Param("First", "int"),
    Param("Last", "int"),
    Param("Skip", "int"),
    aliases=("select",),
    synopsis="Keep some properties (or -ExpandProperty one), or the -First/-Last objects.",
)
def select_object_cmdlet(inv: Invocation) -> list[Any]:
    _no_format_input(inv)
    try:
        return select_object(
            inv.input,
            inv.args.get("Property"),
            expand=inv.args.get("ExpandProperty"),
            first=inv.args.get("First"),
            last=inv.args.get("Last"),
            skip=inv.args.get("Skip") or 0,
        )
    except KeyError as missing:
        raise fail(
            f'Property "{missing.args[0]}" cannot be found.',
            "ExpandPropertyNotFound",
            "InvalidArgument",
        ) from None


@cmdlet(
    "Write-Output",
    Param("InputObject", "object", position=0, remaining=True),
    aliases=("echo", "write"),
    synopsis="Send objects down the pipeline.",
)
def write_output(inv: Invocation) -> list[Any]:
    given = inv.args.get("InputObject")
    out: list[Any] = []
    for value in given if isinstance(given, list) else [given]:
        if isinstance(value, list):
            out.extend(value)
        elif value is not None:
            out.append(value)
    return out


@cmdlet(
    "Write-Host",
    Param("Object", "object", position=0, remaining=True),
    synopsis="Print text to the console (not to the pipeline).",
)
def write_host(inv: Invocation) -> None:
    given = inv.args.get("Object")
    inv.session.host(
        " ".join(to_ps_string(v) for v in (given if isinstance(given, list) else [given]))
    )


@cmdlet("Out-Null", synopsis="Discard the pipeline's output.")
def out_null(inv: Invocation) -> None:
    return None


@cmdlet(
    "Get-Command",
    Param("Name", position=0),
    aliases=("gcm",),
    synopsis="List the cmdlets this shell knows (wildcards allowed).",
)
def get_command(inv: Invocation) -> list[Any]:
    pattern = inv.args.get("Name")
    found = []
    for spec in inv.session.registry.specs():
        for name in (spec.name, *spec.aliases):
            if _matches(pattern or "*", name):
                found.append(
                    PSObject(
                        COMMAND_TYPE,
                        {
                            "CommandType": "Cmdlet" if name == spec.name else "Alias",
                            "Name": name if name == spec.name else f"{name} -> {spec.name}",
                            "Source": spec.module,
                            "Synopsis": spec.synopsis,
                        },
                        display=name,
                    )
                )
    if pattern and not found and not any(c in pattern for c in "*?["):
        raise fail(
            f"The term '{pattern}' is not recognized as the name of a cmdlet.",
            "CommandNotFoundException",
            "ObjectNotFound",
        )
    return found


def syntax(spec: CmdletSpec) -> list[str]:
    """PowerShell-style syntax lines, one per parameter set."""
    lines = []
    for set_name in spec.signature.sets:
        parts = [spec.name]
        params = [p for p in spec.signature.params if p.in_set(set_name)]
        params.sort(key=lambda p: (p.position is None, p.position or 0))
        for param in params:
            value = "" if param.type == "switch" else f" <{param.type_name.split('.')[-1]}>"
            name = f"-{param.name}"
            if param.position is not None:
                name = f"[{name}]"
            text = f"{name}{value}"
            if not param.mandatory_in(set_name):
                text = f"[{text}]"
            parts.append(text)
        if spec.signature.should_process:
            parts += ["[-WhatIf]", "[-Confirm]"]
        parts.append("[<CommonParameters>]")
        lines.append(" ".join(parts))
    return lines


@cmdlet(
    "Get-Help",
    Param("Name", position=0),
    aliases=("help",),
    synopsis="A cmdlet's syntax and aliases.",
)
def get_help(inv: Invocation) -> list[Any]:
    name = inv.args.get("Name")
    if not name:
        return [
            "Run Get-Command to list the cmdlets, and Get-Help <cmdlet> for one cmdlet's syntax.",
        ]
    spec = inv.session.registry.resolve(str(name))
    if spec is None:
        raise fail(
            f"Get-Help could not find {name} in a help file in this session.",
            "HelpNotFound",
            "ResourceUnavailable",
        )
    lines = ["", "NAME", f"    {spec.name}", "", "SYNOPSIS", f"    {spec.synopsis}", "", "SYNTAX"]
    for line in syntax(spec):
        lines += [f"    {line}", ""]
    described = [p for p in spec.signature.params if p.help]
    if described:
        lines.append("PARAMETERS")
        lines += [f"    -{p.name}: {p.help}" for p in described]
        lines.append("")
    if spec.aliases:
        lines += ["ALIASES", *(f"    {a}" for a in spec.aliases), ""]
    return ["\n".join(lines)]


# Common parameters are listed on every cmdlet; keep their names out of cmdlet parameters.
assert not any(p.name in COMMON_NAMES for s in REGISTRY.specs() for p in s.signature.params)
# What a module of more cmdlets needs.
__all__ = [
    "AZ",
    "EXO",
    "SPO",
    "CmdletSpec",
    "Field",
    "Invocation",
    "PSObject",
    "Param",
    "Registry",
    "cmdlet",
    "default_registry",
    "fail",
    "register_view",
]
