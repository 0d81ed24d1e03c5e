"""``customerkey key ...``: create (or add a version), show, list, update, rotate, delete,
recover, purge, backup, restore, usage, rotation policy."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from customerkey.cli.byok_command import byok_import, byok_wrap
from customerkey.cli.confirm import YES, confirm_destruction
from customerkey.cli.context import cli_context, parse_tags, parse_time, split_list
from customerkey.cli.output import emit_list, emit_message, emit_object
from customerkey.cli.protected_data import described, refuse_deleting, refuse_disabling
from customerkey.errors import BadParameter
from customerkey.home import write_private_file
from customerkey.views.vault import deleted_key_view, key_view, rotation_policy_view, usage_view

app = typer.Typer(help="Keys: versions, attributes, soft delete, backup and restore.")
app.command("byok-wrap")(byok_wrap)
app.command("byok-import")(byok_import)

KEY_COLUMNS = ["Name", "Version", "KeyType", "KeySize", "Enabled", "NotBefore", "Expires", "KeyOps"]


@app.command("create")
def create(
    ctx: typer.Context,
    vault: str,
    name: str,
    protection: str = typer.Option("software", "--protection", help="hsm or software."),
    size: int = typer.Option(2048, "--size", help="RSA size: 2048, 3072 or 4096."),
    ops: str | None = typer.Option(None, "--ops", help="e.g. wrapKey,unwrapKey"),
    not_before: str | None = typer.Option(None, "--not-before", help="ISO 8601 time."),
    expires: str | None = typer.Option(None, "--expires", help="ISO 8601 time."),
    disabled: bool = typer.Option(False, "--disabled"),
    tag: list[str] | None = typer.Option(None, "--tag", help="name=value (repeatable)."),
) -> None:
    """Create a key. If the name exists, this adds a new version (a key roll)."""
    c = cli_context(ctx)
    if protection.lower() not in ("hsm", "software"):
        raise BadParameter("--protection must be 'hsm' or 'software'.")
    bundle = c.runtime.vault.create_key(
        c.actor,
        vault,
        name,
        kty="RSA-HSM" if protection.lower() == "hsm" else "RSA",
        size=size,
        key_ops=split_list(ops),
        enabled=not disabled,
        not_before=parse_time(not_before, "--not-before"),
        expires=parse_time(expires, "--expires"),
        tags=parse_tags(tag),
    )
    emit_object(key_view(bundle, domain=c.domain, port=c.port), as_json=c.as_json)


@app.command("show")
def show(
    ctx: typer.Context,
    vault: str,
    name: str,
    version: str | None = typer.Option(None, "--version", help="Default: the newest."),
) -> None:
    """One key version: its attributes, operations and key id (Get-AzKeyVaultKey)."""
    c = cli_context(ctx)
    bundle = c.runtime.vault.get_key(c.actor, vault, name, version)
    emit_object(key_view(bundle, domain=c.domain, port=c.port), as_json=c.as_json)


@app.command("list")
def list_(
    ctx: typer.Context,
    vault: str,
    deleted: bool = typer.Option(False, "--deleted", help="List soft-deleted keys."),
) -> None:
    """The keys of a vault, newest version of each (Get-AzKeyVaultKey)."""
    c = cli_context(ctx)
    if deleted:
        views = [
            deleted_key_view(d, domain=c.domain, port=c.port)
            for d in c.runtime.vault.list_deleted_keys(c.actor, vault)
        ]
        emit_list(views, ["Name", "DeletedDate", "ScheduledPurgeDate"], as_json=c.as_json)
        return
    views = [
        key_view(b, domain=c.domain, port=c.port) for b in c.runtime.vault.list_keys(c.actor, vault)
    ]
    emit_list(views, KEY_COLUMNS, as_json=c.as_json)


@app.command("versions")
def versions(ctx: typer.Context, vault: str, name: str) -> None:
    """Every version of a key (Get-AzKeyVaultKey -IncludeVersions)."""
    c = cli_context(ctx)
    views = [
        key_view(b, domain=c.domain, port=c.port)
        for b in c.runtime.vault.list_versions(c.actor, vault, name)
    ]
    emit_list(views, [*KEY_COLUMNS, "Created"], as_json=c.as_json)


@app.command("update")
def update(
    ctx: typer.Context,
    vault: str,
    name: str,
    version: str | None = typer.Option(None, "--version", help="Default: the newest."),
    enable: bool | None = typer.Option(None, "--enable/--disable"),
    not_before: str | None = typer.Option(None, "--not-before", help="ISO 8601 time."),
    expires: str | None = typer.Option(None, "--expires", help="ISO 8601 time."),
    ops: str | None = typer.Option(None, "--ops", help="e.g. wrapKey,unwrapKey"),
    tag: list[str] | None = typer.Option(None, "--tag", help="name=value (repeatable)."),
    force: bool = typer.Option(
        False, "--force", help="Disable even though the version still protects data."
    ),
) -> None:
    """Change a version's enabled state, validity times, operations or tags."""
    c = cli_context(ctx)
    if enable is False and not force:
        newest = c.runtime.vault.get_key(c.actor, vault, name).id.version
        target = (version or newest).lower()
        protected = c.runtime.usage.protected_by(vault, name, target)
        if protected:
            raise refuse_disabling(target, newest, protected)
    bundle = c.runtime.vault.update_key(
        c.actor,
        vault,
        name,
        version,
        enabled=enable,
        not_before=parse_time(not_before, "--not-before"),
        expires=parse_time(expires, "--expires"),
        key_ops=split_list(ops),
        tags=parse_tags(tag),
    )
    emit_object(key_view(bundle, domain=c.domain, port=c.port), as_json=c.as_json)


@app.command("rotate")
def rotate(ctx: typer.Context, vault: str, name: str) -> None:
    """Add a new version like the newest one."""
    c = cli_context(ctx)
    bundle = c.runtime.vault.rotate_key(c.actor, vault, name)
    emit_object(key_view(bundle, domain=c.domain, port=c.port), as_json=c.as_json)


@app.command("rotation-policy")
def rotation_policy(
    ctx: typer.Context,
    vault: str,
    name: str,
    set_: str | None = typer.Option(
        None, "--set", help="Policy JSON (Key Vault shape) or @file to read it from."
    ),
) -> None:
    """Show a key's rotation policy, or set it with --set."""
    c = cli_context(ctx)
    if set_ is None:
        policy = c.runtime.vault.get_rotation_policy(c.actor, vault, name)
    else:
        text = _read_policy_text(set_)
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise BadParameter(f"The rotation policy is not valid JSON: {exc}") from None
        policy = c.runtime.vault.set_rotation_policy(c.actor, vault, name, body)
    emit_object(rotation_policy_view(policy, vault=vault, key=name), as_json=c.as_json)


def _read_policy_text(value: str) -> str:
    if not value.startswith("@"):
        return value
    path = Path(value[1:])
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadParameter(
            f"Cannot read the rotation policy from {path}: {exc.strerror}."
        ) from None
    except UnicodeDecodeError:
        raise BadParameter(f"The rotation policy file {path} is not UTF-8 text.") from None


@app.command("delete")
def delete(
    ctx: typer.Context,
    vault: str,
    name: str,
    force: bool = typer.Option(False, "--force", help="Delete even though it protects data."),
    yes: bool = YES,
) -> None:
    """Soft-delete a key with all its versions (recoverable until the retention ends). Refused
    while it protects data."""
    c = cli_context(ctx)
    c.runtime.vault.authorize_key_delete(c.actor, vault, name)
    protected = c.runtime.usage.protected_by(vault, name)
    if protected and not force:
        raise refuse_deleting(f"Key '{name}'", protected)
    consequence = "every version stops working at once (recoverable until the retention ends)"
    if protected:
        consequence += f", though it protects data: {described(protected)}"
    confirm_destruction(c, f"Deleting key '{name}'", name, yes=yes, consequence=consequence)
    deleted = c.runtime.vault.delete_key(c.actor, vault, name, force=force)
    emit_object(deleted_key_view(deleted, domain=c.domain, port=c.port), as_json=c.as_json)


@app.command("recover")
def recover(ctx: typer.Context, vault: str, name: str) -> None:
    """Bring back a soft-deleted key with all its versions (Undo-AzKeyVaultKeyRemoval)."""
    c = cli_context(ctx)
    bundle = c.runtime.vault.recover_deleted_key(c.actor, vault, name)
    emit_object(key_view(bundle, domain=c.domain, port=c.port), as_json=c.as_json)


@app.command("purge")
def purge(ctx: typer.Context, vault: str, name: str, yes: bool = YES) -> None:
    """Permanently remove a soft-deleted key (refused under purge protection)."""
    c = cli_context(ctx)
    c.runtime.vault.get_deleted_key(c.actor, vault, name)  # a key that is not deleted: say so
    confirm_destruction(
        c,
        f"Purging key '{name}'",
        name,
        yes=yes,
        consequence="every version of it is destroyed for good (only a backup brings it back)",
    )
    c.runtime.vault.purge_deleted_key(c.actor, vault, name)
    emit_message(f"Key '{name}' purged from vault '{vault}'.", as_json=c.as_json)


@app.command("backup")
def backup(
    ctx: typer.Context,
    vault: str,
    name: str,
    out: Path = typer.Option(..., "--out", help="File to write the backup blob to."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a protected backup of every version of a key."""
    c = cli_context(ctx)
    if out.is_dir():
        raise BadParameter(f"{out} is a directory; name the backup file to write.")
    if out.exists() and not force:
        raise BadParameter(f"{out} already exists; pass --force to overwrite it.")
    if not out.parent.is_dir():
        raise BadParameter(f"Cannot write {out}: the folder {out.parent} does not exist.")
    blob = c.runtime.vault.backup_key(c.actor, vault, name)
    try:
        write_private_file(out, blob)  # 0600 whatever was there before
    except OSError as exc:
        raise BadParameter(f"Cannot write {out}: {exc.strerror}.") from None
    emit_message(
        f"Backed up key '{name}' to {out} ({len(blob)} bytes).",
        as_json=c.as_json,
        data={"File": str(out), "Bytes": len(blob)},
    )


@app.command("restore")
def restore(
    ctx: typer.Context,
    vault: str,
    in_: Path = typer.Option(..., "--in", help="Backup file written by 'key backup'."),
) -> None:
    """Restore a key with all versions; fails if the name exists (even soft-deleted)."""
    c = cli_context(ctx)
    try:
        blob = in_.read_bytes()
    except OSError as exc:
        raise BadParameter(f"Cannot read {in_}: {exc.strerror}.") from None
    bundle = c.runtime.vault.restore_key(c.actor, vault, blob)
    emit_object(key_view(bundle, domain=c.domain, port=c.port), as_json=c.as_json)


@app.command("usage")
def usage(ctx: typer.Context, vault: str, name: str) -> None:
    """Per version: operations performed and what still depends on it."""
    c = cli_context(ctx)
    views = [usage_view(u) for u in c.runtime.usage.key_usage(c.actor, vault, name)]
    columns = [
        "Version",
        "Sequence",
        "Enabled",
        "Created",
        "Operations",
        "DepGenerations",
        "Policies",
        "Mailboxes",
        "Items",
    ]
    emit_list(views, columns, as_json=c.as_json)
