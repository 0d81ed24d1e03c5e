"""The Exchange Online Customer Key cmdlets, over the mail workload: the mailbox DEPs
(``New-/Set-/Get-DataEncryptionPolicy``, with ``-Refresh`` after a key roll and the permanent
data purge request), recipients (``New-/Set-/Get-Mailbox``, ``-MailUser``),
``Get-MailboxStatistics`` and moves (``New-/Get-MoveRequest``), and the objects they print.

They work in the connected tenant (``Connect-ExchangeOnline``), else in the only tenant there
is. A refresh, a DEP change on a mailbox with content and a move are jobs, run to completion
(or waited for) through ``Invocation.run_jobs``.
"""

from __future__ import annotations

import re
from typing import Any

from customerkey.identity.workload_principals import EXCHANGE
from customerkey.jobs.queue import Job
from customerkey.keys.deps import DataEncryptionPolicy
from customerkey.pwsh.cmdlets.registry import EXO, EXO_HINT, Invocation, cmdlet, fail
from customerkey.pwsh.engine.formatting import register_view
from customerkey.pwsh.language.binding import Param
from customerkey.pwsh.language.values import PSObject
from customerkey.views.mail import mailbox_view, move_view, policy_view, statistics_view
from customerkey.workloads.mail.jobs import REKEY_JOB
from customerkey.workloads.mail.service import Mailbox, MailboxStatistics

POLICY_TYPE = "Microsoft.Exchange.Data.Directory.SystemConfiguration.DataEncryptionPolicy"
MAILBOX_TYPE = "Microsoft.Exchange.Data.Directory.Management.Mailbox"
MAILUSER_TYPE = "Microsoft.Exchange.Data.Directory.Management.MailUser"
STATISTICS_TYPE = "Microsoft.Exchange.Management.MapiTasks.Presentation.MailboxStatistics"
MOVE_TYPE = "Microsoft.Exchange.Management.RecipientTasks.MoveRequest"

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
    return [mailbox_object(b) for b in _first(inv, chosen)]


def _first(inv: Invocation, found: list[Any]) -> list[Any]:
    """The first ``-ResultSize`` of ``found`` (a number, or Unlimited)."""
    size = inv.args.get("ResultSize")
    if size and str(size).lower() != "unlimited":
        if not str(size).isdigit():
            raise fail(
                f"Cannot bind parameter 'ResultSize' to the value \"{size}\": use a number or "
                "Unlimited.",
                "CannotConvertArgument",
            )
        return found[: int(size)]
    return found


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
    Param("ResultSize"),
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
    return _first(inv, found)
