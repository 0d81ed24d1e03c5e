"""The console's vaults and keys: list and create vaults, keys and their versions, enable and
disable, rotate, delete, recover and purge (with a typed confirmation), access policies, and
the key-usage page (what each version of a root key still protects).

Each handler first reads the vault as the signed-in principal (``_vault``): a vault it may not
see is the same 404 as a missing one, before any action is tried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.responses import Response

from customerkey.console.web import Ctx, Missing, page, typed_confirmation
from customerkey.errors import BadParameter, Forbidden, NotFound, StillProtectsData
from customerkey.identity.workload_principals import EXCHANGE
from customerkey.keys.usage import describe_dependents
from customerkey.vault.permissions import KEY_PERMISSIONS
from customerkey.views.vault import (
    deleted_key_view,
    key_view,
    rotation_policy_view,
    usage_view,
    vault_view,
)

WORKLOAD_GRANT = ("get", "wrapKey", "unwrapKey")
# The key permissions offered by the grant form: what a DEP's root keys need first, then the
# rest in Key Vault's order.
PERMISSIONS = WORKLOAD_GRANT + tuple(p for p in KEY_PERMISSIONS if p not in WORKLOAD_GRANT)


def _vault(ctx: Ctx, name: str) -> dict[str, Any]:
    """A vault this principal may read, or the 404 of a missing one."""
    try:
        vault = ctx.runtime.vault.get_vault(ctx.actor, name)
    except (NotFound, Forbidden):
        raise Missing("Vault", name) from None
    return vault_view(vault, domain=ctx.context.domain, port=ctx.context.port)


def _view_key(ctx: Ctx, bundle: Any) -> dict[str, Any]:
    return key_view(bundle, domain=ctx.context.domain, port=ctx.context.port)


def _maybe(call: Callable[[], Any]) -> tuple[Any, str | None]:
    """A read the principal may be refused (listing keys needs a 'list' grant): the value,
    or None and the reason."""
    try:
        return call(), None
    except Forbidden as refused:
        return None, refused.message


@page("/console/vaults")
def vaults(ctx: Ctx) -> Response:
    deleted = ctx.query("deleted") == "1"
    rows = ctx.runtime.vault.list_vaults(ctx.actor, deleted=deleted)
    views = [vault_view(v, domain=ctx.context.domain, port=ctx.context.port) for v in rows]
    return ctx.render("vaults.html", title="Vaults", vaults=views, deleted=deleted)


@page("/console/vaults", methods=("POST",))
def create_vault(ctx: Ctx) -> Response:
    try:
        retention = int(ctx.field("retention_days") or "90")
    except ValueError:
        raise BadParameter("The retention is a number of days.") from None
    vault = ctx.runtime.vault.create_vault(
        ctx.actor,
        ctx.field("name"),
        subscription=ctx.field("subscription"),
        region=ctx.field("region"),
        resource_group=ctx.field("resource_group") or "customerkey",
        retention_days=retention,
        purge_protection=ctx.field("purge_protection") == "on",
    )
    return ctx.done(f"/console/vaults/{vault.name}", f"Vault '{vault.name}' created.")


@page("/console/vaults/{vault}")
def vault_page(ctx: Ctx) -> Response:
    name = ctx.path["vault"]
    view = _vault(ctx, name)
    keys, keys_refused = _maybe(lambda: ctx.runtime.vault.list_keys(ctx.actor, name))
    deleted, _ = _maybe(lambda: ctx.runtime.vault.list_deleted_keys(ctx.actor, name))
    domain, port = ctx.context.domain, ctx.context.port
    return ctx.render(
        "vault.html",
        title=f"Vault {view['VaultName']}",
        vault=view,
        name=name.lower(),
        keys=[_view_key(ctx, k) for k in keys or []],
        keys_refused=keys_refused,
        deleted=[deleted_key_view(d, domain=domain, port=port) for d in deleted or []],
        permissions=PERMISSIONS,
        workload=EXCHANGE.app_id,
        workload_grant=WORKLOAD_GRANT,
    )


@page("/console/vaults/{vault}/keys", methods=("POST",))
def create_key(ctx: Ctx) -> Response:
    name = ctx.path["vault"]
    _vault(ctx, name)
    kind = ctx.field("protection") or "software"
    try:
        size = int(ctx.field("size") or "2048")
    except ValueError:
        raise BadParameter("The key size is a number of bits.") from None
    bundle = ctx.runtime.vault.create_key(
        ctx.actor,
        name,
        ctx.field("key_name"),
        kty="RSA-HSM" if kind == "hsm" else "RSA",
        size=size,
    )
    return ctx.done(
        f"/console/vaults/{name.lower()}/keys/{bundle.id.name}",
        f"Key '{bundle.id.name}' created (version {bundle.id.version}).",
    )


@page("/console/vaults/{vault}/access", methods=("POST",))
def grant(ctx: Ctx) -> Response:
    name = ctx.path["vault"]
    _vault(ctx, name)
    principal = ctx.field("principal")
    wanted = [p for p in ctx.field("permissions").split(",") if p]
    if not principal or not wanted:
        raise BadParameter("Name a principal and at least one permission.")
    ctx.runtime.vault.set_access_policy(ctx.actor, name, principal, wanted)
    return ctx.done(
        f"/console/vaults/{name.lower()}", f"Granted {', '.join(wanted)} to '{principal}'."
    )


@page("/console/vaults/{vault}/access/revoke", methods=("POST",))
def revoke(ctx: Ctx) -> Response:
    name = ctx.path["vault"]
    _vault(ctx, name)
    object_id = ctx.field("object_id")
    ctx.runtime.vault.remove_access_policy(ctx.actor, name, object_id)
    return ctx.done(f"/console/vaults/{name.lower()}", "Access policy removed.")


def _key(ctx: Ctx) -> tuple[str, str, dict[str, Any]]:
    vault, name = ctx.path["vault"], ctx.path["key"]
    _vault(ctx, vault)
    try:
        bundle = ctx.runtime.vault.get_key(ctx.actor, vault, name)
    except NotFound:
        raise Missing("Key", name) from None
    return vault.lower(), name, _view_key(ctx, bundle)


@page("/console/vaults/{vault}/keys/{key}")
def key_page(ctx: Ctx) -> Response:
    vault, name, newest = _key(ctx)
    versions = ctx.runtime.vault.list_versions(ctx.actor, vault, name)
    views = sorted(
        (_view_key(ctx, b) for b in versions), key=lambda v: v["Created"] or "", reverse=True
    )
    policy, policy_refused = _maybe(
        lambda: ctx.runtime.vault.get_rotation_policy(ctx.actor, vault, name)
    )
    return ctx.render(
        "key.html",
        title=f"Key {name}",
        vault=vault,
        name=name,
        key=newest,
        versions=views,
        rotation=rotation_policy_view(policy) if policy is not None else None,
        rotation_refused=policy_refused,
    )


@page("/console/vaults/{vault}/keys/{key}/rotation-policy", methods=("POST",))
def set_rotation_policy(ctx: Ctx) -> Response:
    """A rotation policy from the form: rotate (and optionally notify) after a duration."""
    vault, name, _ = _key(ctx)
    actions = []
    rotate_after = ctx.field("rotate_after")
    if rotate_after:
        trigger = {"timeAfterCreate": rotate_after}
        actions.append({"trigger": trigger, "action": {"type": "Rotate"}})
    expiry = ctx.field("expires_after") or None
    body = {"lifetimeActions": actions, "attributes": {"expiryTime": expiry}}
    ctx.runtime.vault.set_rotation_policy(ctx.actor, vault, name, body)
    return ctx.done(f"/console/vaults/{vault}/keys/{name}", "Rotation policy saved.")


def _set_enabled(ctx: Ctx, enabled: bool) -> Response:
    vault, name, newest = _key(ctx)
    version = (ctx.field("version") or newest["Version"]).lower()
    if not enabled and ctx.field("force") != "on":
        protected = ctx.runtime.usage.protected_by(vault, name, version)
        if protected:
            raise StillProtectsData(
                f"Version {version} still protects data: {describe_dependents(protected)} Tick "
                "'disable anyway' to disable it regardless (reads of that data then fail)."
            )
    ctx.runtime.vault.update_key(ctx.actor, vault, name, version, enabled=enabled)
    word = "enabled" if enabled else "disabled"
    return ctx.done(f"/console/vaults/{vault}/keys/{name}", f"Version {version} {word}.")


@page("/console/vaults/{vault}/keys/{key}/enable", methods=("POST",))
def enable_key(ctx: Ctx) -> Response:
    return _set_enabled(ctx, True)


@page("/console/vaults/{vault}/keys/{key}/disable", methods=("POST",))
def disable_key(ctx: Ctx) -> Response:
    return _set_enabled(ctx, False)


@page("/console/vaults/{vault}/keys/{key}/rotate", methods=("POST",))
def rotate_key(ctx: Ctx) -> Response:
    vault, name, _ = _key(ctx)
    bundle = ctx.runtime.vault.rotate_key(ctx.actor, vault, name)
    return ctx.done(
        f"/console/vaults/{vault}/keys/{name}", f"New version {bundle.id.version} created."
    )


@page("/console/vaults/{vault}/keys/{key}/delete", methods=("POST",))
def delete_key(ctx: Ctx) -> Response:
    vault, name, _ = _key(ctx)
    typed_confirmation(ctx, name)
    force = ctx.field("force") == "on"
    ctx.runtime.vault.authorize_key_delete(ctx.actor, vault, name)
    protected = ctx.runtime.usage.protected_by(vault, name)
    if protected and not force:
        raise StillProtectsData(
            f"Key '{name}' still protects data: {describe_dependents(protected)} Tick "
            "'delete anyway' to delete it regardless."
        )
    ctx.runtime.vault.delete_key(ctx.actor, vault, name, force=force)
    return ctx.done(f"/console/vaults/{vault}", f"Key '{name}' deleted (recoverable).")


def _deleted_key(ctx: Ctx) -> tuple[str, str]:
    vault, name = ctx.path["vault"], ctx.path["key"]
    _vault(ctx, vault)
    try:
        ctx.runtime.vault.get_deleted_key(ctx.actor, vault, name)
    except NotFound:
        raise Missing("Deleted key", name) from None
    return vault.lower(), name


@page("/console/vaults/{vault}/deletedkeys/{key}/recover", methods=("POST",))
def recover_key(ctx: Ctx) -> Response:
    vault, name = _deleted_key(ctx)
    ctx.runtime.vault.recover_deleted_key(ctx.actor, vault, name)
    return ctx.done(f"/console/vaults/{vault}/keys/{name}", f"Key '{name}' recovered.")


@page("/console/vaults/{vault}/deletedkeys/{key}/purge", methods=("POST",))
def purge_key(ctx: Ctx) -> Response:
    vault, name = _deleted_key(ctx)
    typed_confirmation(ctx, name)
    ctx.runtime.vault.purge_deleted_key(ctx.actor, vault, name)
    return ctx.done(f"/console/vaults/{vault}", f"Key '{name}' purged for good.")


@page("/console/vaults/{vault}/keys/{key}/usage")
def key_usage(ctx: Ctx) -> Response:
    vault, name, newest = _key(ctx)
    usage = [usage_view(u) for u in ctx.runtime.usage.key_usage(ctx.actor, vault, name)]
    usage.sort(key=lambda u: u["Sequence"], reverse=True)
    # The columns every version shows: what the workloads count (mailboxes, items, sites...).
    labels: list[str] = []
    for row in usage:
        for label in row:
            if label not in _USAGE_FIXED and label not in labels:
                labels.append(label)
    peak = {label: max([int(u.get(label) or 0) for u in usage] + [1]) for label in labels}
    dependents = ctx.runtime.usage.protected_by(vault, name)
    return ctx.render(
        "key_usage.html",
        title=f"Key usage: {name}",
        vault=vault,
        name=name,
        key=newest,
        usage=usage,
        labels=labels,
        peak=peak,
        dependents=dependents,
    )


_USAGE_FIXED = {"Version", "Sequence", "Enabled", "Created", "Operations", "DepGenerations"}
_USAGE_FIXED.add("Policies")


@page("/console/vaults/{vault}/delete", methods=("POST",))
def delete_vault(ctx: Ctx) -> Response:
    name = ctx.path["vault"]
    view = _vault(ctx, name)
    typed_confirmation(ctx, view["VaultName"])
    ctx.runtime.vault.delete_vault(ctx.actor, name, force=ctx.field("force") == "on")
    return ctx.done("/console/vaults?deleted=1", f"Vault '{view['VaultName']}' deleted.")


def _deleted_vault_action(ctx: Ctx, action: Callable[[str], Any]) -> str:
    """Recover or purge a deleted vault: one the principal may not manage is as missing."""
    name = ctx.path["vault"]
    try:
        action(name)
    except (NotFound, Forbidden):
        raise Missing("Deleted vault", name) from None
    return name.lower()


@page("/console/vaults/{vault}/recover", methods=("POST",))
def recover_vault(ctx: Ctx) -> Response:
    name = _deleted_vault_action(ctx, lambda n: ctx.runtime.vault.recover_vault(ctx.actor, n))
    return ctx.done(f"/console/vaults/{name}", f"Vault '{name}' recovered.")


@page("/console/vaults/{vault}/purge", methods=("POST",))
def purge_vault(ctx: Ctx) -> Response:
    typed_confirmation(ctx, ctx.path["vault"])
    name = _deleted_vault_action(ctx, lambda n: ctx.runtime.vault.purge_vault(ctx.actor, n))
    return ctx.done("/console/vaults?deleted=1", f"Vault '{name}' purged for good.")


@page("/console/vaults/{vault}/keys/{key}/backup", methods=("POST",))
def backup_key(ctx: Ctx) -> Response:
    """A protected backup of every version (Backup-AzKeyVaultKey), as a download."""
    vault, name, _ = _key(ctx)
    blob = ctx.runtime.vault.backup_key(ctx.actor, vault, name)
    filename = f"{vault}-{name}.keybackup".replace('"', "")
    return Response(
        blob,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
