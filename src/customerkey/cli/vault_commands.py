"""``customerkey vault ...``: create, show, list, delete, recover, purge, access policies."""

from __future__ import annotations

import typer

from customerkey.cli.confirm import YES, confirm_destruction
from customerkey.cli.context import cli_context, split_list
from customerkey.cli.output import emit_list, emit_message, emit_object
from customerkey.cli.protected_data import described, refuse_deleting
from customerkey.errors import BadParameter
from customerkey.views.vault import vault_view

app = typer.Typer(help="Key vaults: create, show, delete and recover them; manage access.")
access = typer.Typer(help="Vault access policies (who may use the keys).")
app.add_typer(access, name="access")

VAULT_COLUMNS = [
    "VaultName",
    "Location",
    "SubscriptionId",
    "EnablePurgeProtection",
    "SoftDeleteRetentionInDays",
    "TenantId",
]


@app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Vault name: 3-63 letters, digits and hyphens."),
    subscription: str = typer.Option(..., "--subscription", help="Subscription id or name."),
    region: str = typer.Option(..., "--region", "--location", help="Geography, e.g. eastus."),
    resource_group: str = typer.Option(
        "customerkey", "--resource-group", help="Resource group shown by Get-AzKeyVault."
    ),
    retention_days: int = typer.Option(90, "--retention-days", help="Soft-delete days, 7-90."),
    purge_protection: bool = typer.Option(False, "--purge-protection", help="Cannot be undone."),
    tenant: str | None = typer.Option(None, "--tenant"),
) -> None:
    """Create a vault; its creator gets every key permission."""
    c = cli_context(ctx)
    vault = c.runtime.vault.create_vault(
        c.actor,
        name,
        subscription=subscription,
        region=region,
        resource_group=resource_group,
        retention_days=retention_days,
        purge_protection=purge_protection,
        tenant=tenant,
    )
    emit_object(vault_view(vault, domain=c.domain, port=c.port), as_json=c.as_json)


@app.command("show")
def show(ctx: typer.Context, name: str) -> None:
    """Everything Get-AzKeyVault shows: soft delete, purge protection, access policies."""
    c = cli_context(ctx)
    vault = c.runtime.vault.get_vault(c.actor, name)
    emit_object(vault_view(vault, domain=c.domain, port=c.port), as_json=c.as_json)


@app.command("list")
def list_(
    ctx: typer.Context,
    deleted: bool = typer.Option(False, "--deleted", help="List soft-deleted vaults."),
) -> None:
    """The vaults you may see (Get-AzKeyVault)."""
    c = cli_context(ctx)
    vaults = c.runtime.vault.list_vaults(c.actor, deleted=deleted)
    views = [vault_view(v, domain=c.domain, port=c.port) for v in vaults]
    columns = VAULT_COLUMNS + (["DeletionDate", "ScheduledPurgeDate"] if deleted else [])
    emit_list(views, columns, as_json=c.as_json)


@app.command("delete")
def delete(
    ctx: typer.Context,
    name: str,
    force: bool = typer.Option(
        False, "--force", help="Delete even though a key of the vault protects data."
    ),
    yes: bool = YES,
) -> None:
    """Soft-delete a vault (recoverable until its retention ends). Refused while one of its
    keys protects data, like 'key delete'."""
    c = cli_context(ctx)
    c.runtime.vault.authorize_vault_delete(c.actor, name)
    protected = c.runtime.usage.protected_by(name)
    if protected and not force:
        raise refuse_deleting(f"Vault '{name}'", protected)
    consequence = "its keys stop working at once (recoverable until its retention ends)"
    if protected:
        consequence += f", though they protect data: {described(protected)}"
    confirm_destruction(c, f"Deleting vault '{name}'", name, yes=yes, consequence=consequence)
    vault = c.runtime.vault.delete_vault(c.actor, name, force=force)
    emit_object(vault_view(vault, domain=c.domain, port=c.port), as_json=c.as_json)


@app.command("recover")
def recover(ctx: typer.Context, name: str) -> None:
    """Bring back a soft-deleted vault with its keys (Undo-AzKeyVaultRemoval)."""
    c = cli_context(ctx)
    vault = c.runtime.vault.recover_vault(c.actor, name)
    emit_object(vault_view(vault, domain=c.domain, port=c.port), as_json=c.as_json)


@app.command("purge")
def purge(ctx: typer.Context, name: str, yes: bool = YES) -> None:
    """Permanently remove a soft-deleted vault and all its keys."""
    c = cli_context(ctx)
    confirm_destruction(
        c,
        f"Purging vault '{name}'",
        name,
        yes=yes,
        consequence="it and every key in it are destroyed for good (no recovery)",
    )
    c.runtime.vault.purge_vault(c.actor, name)
    emit_message(f"Vault '{name}' purged.", as_json=c.as_json)


def _principal(upn: str | None, spn: str | None) -> str:
    if (upn is None) == (spn is None):
        raise BadParameter("Give exactly one of --upn or --spn.")
    return upn or spn or ""


@access.command("set")
def access_set(
    ctx: typer.Context,
    name: str,
    upn: str | None = typer.Option(None, "--upn", help="User principal name."),
    spn: str | None = typer.Option(None, "--spn", help="Service principal id."),
    key_permissions: str = typer.Option(
        ..., "--key-permissions", help="Comma-separated, e.g. wrapKey,unwrapKey,get (or all)."
    ),
    replace: bool = typer.Option(False, "--replace", help="Replace instead of merging."),
) -> None:
    """Grant key permissions to a principal (merged with what it already holds)."""
    c = cli_context(ctx)
    principal = _principal(upn, spn)
    permissions = split_list(key_permissions)
    if not permissions:
        raise BadParameter(
            "--key-permissions needs at least one permission (e.g. get,wrapKey,unwrapKey); "
            "to take access away use 'vault access remove'."
        )
    vault = c.runtime.vault.set_access_policy(
        c.actor, name, principal, permissions, replace=replace
    )
    emit_object(vault_view(vault, domain=c.domain, port=c.port), as_json=c.as_json)


@access.command("remove")
def access_remove(
    ctx: typer.Context,
    name: str,
    upn: str | None = typer.Option(None, "--upn", help="User principal name."),
    spn: str | None = typer.Option(None, "--spn", help="Service principal id."),
) -> None:
    """Remove a principal's access policy from the vault."""
    c = cli_context(ctx)
    vault = c.runtime.vault.remove_access_policy(c.actor, name, _principal(upn, spn))
    emit_object(vault_view(vault, domain=c.domain, port=c.port), as_json=c.as_json)


@access.command("show")
def access_show(ctx: typer.Context, name: str) -> None:
    """Who may use the vault's keys, and with which permissions."""
    c = cli_context(ctx)
    vault = c.runtime.vault.get_vault(c.actor, name)
    rows = [
        {
            "ObjectId": p.object_id,
            "PrincipalName": p.sign_in_name,
            "DisplayName": p.display_name,
            "PermissionsToKeys": list(p.key_permissions),
        }
        for p in vault.access_policies
    ]
    emit_list(
        rows, ["PrincipalName", "DisplayName", "PermissionsToKeys", "ObjectId"], as_json=c.as_json
    )
