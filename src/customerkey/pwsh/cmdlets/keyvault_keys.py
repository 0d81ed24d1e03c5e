"""The Az.KeyVault key cmdlets (with their AzureKeyVault spellings): ``Add-`` (a new key, or
a new version: a key roll), ``Get-``, ``Update-``, ``Remove-``, ``Undo-...Removal``,
``Backup-`` and ``Restore-AzKeyVaultKey``, and the key objects they print.

Disabling or removing a key version that still wraps a DEP's key generation warns (or, for a
removal without ``-Force``, refuses) with what it protects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from customerkey.errors import Forbidden
from customerkey.home import write_private_file
from customerkey.pwsh.cmdlets.registry import AZ, Invocation, cmdlet, fail, matches
from customerkey.pwsh.engine.formatting import register_view
from customerkey.pwsh.language.binding import Param
from customerkey.pwsh.language.values import PSObject, to_ps_string
from customerkey.vault.models import DeletedKeyBundle, KeyBundle
from customerkey.views.vault import deleted_key_view, key_view

KEY_TYPE = "Microsoft.Azure.Commands.KeyVault.Models.PSKeyVaultKey"
KEY_ITEM_TYPE = "Microsoft.Azure.Commands.KeyVault.Models.PSKeyVaultKeyIdentityItem"
DELETED_KEY_TYPE = "Microsoft.Azure.Commands.KeyVault.Models.PSDeletedKeyVaultKey"

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
    Param("CurveName", choices=("P-256", "P-256K", "P-384", "P-521")),
    Param("Disable", "switch"),
    Param("Tag", "hashtable", aliases=("Tags",)),
    aliases=("Add-AzureKeyVaultKey",),
    synopsis="Create a key; with the name of an existing key, add a version (a key roll).",
)
def add_azkeyvaultkey(inv: Invocation) -> list[Any]:
    hsm = inv.args.get("Destination") == "HSM"
    curve = inv.args.get("CurveName")
    key_type = inv.args.get("KeyType") or ("EC" if curve else "RSA")
    tags = inv.args.get("Tag")
    bundle = inv.runtime.vault.create_key(
        inv.actor(AZ),
        inv.args.get("VaultName"),
        inv.args.get("Name"),
        kty=f"{key_type}-HSM" if hsm else key_type,
        size=inv.args.get("Size"),
        crv=curve,
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
            if matches(name, d.key.id.name)
        ]
    if inv.args.flag("IncludeVersions"):
        return [key_object(inv, b) for b in service.list_versions(actor, vault, name)]
    if name and not any(c in name for c in "*?["):
        return [key_object(inv, service.get_key(actor, vault, name, inv.args.get("Version")))]
    return [
        key_object(inv, b, item=True)
        for b in service.list_keys(actor, vault)
        if matches(name, b.id.name)
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
    deleted = inv.runtime.vault.delete_key(actor, vault, name, force=inv.args.flag("Force"))
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
    write_private_file(path, blob)
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
