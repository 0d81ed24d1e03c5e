"""``customerkey init`` and ``customerkey tick``: the installation itself."""

from __future__ import annotations

import typer

from customerkey.cli.context import cli_context
from customerkey.cli.output import console, emit_object
from customerkey.home import Home


def init(ctx: typer.Context) -> None:
    """Create the home folder (0700), its master key (0600) and the database."""
    from customerkey.cli.main import display_database_url

    c = cli_context(ctx)
    settings = c.settings()
    home = Home(settings.home)
    created = home.init()
    runtime = c.runtime  # opens the database and runs migrations
    view = {
        "Home": str(home.path),
        "MasterKey": str(home.master_key_file),
        "MasterKeyCreated": created,
        "Database": (
            display_database_url(runtime.db.url)
            if runtime.settings.database_url
            else str(home.database_file)
        ),
        "SchemaRevision": runtime.db.current_revision(),
    }
    emit_object(view, as_json=c.as_json)
    if created and not c.as_json:
        console.print(
            f"[yellow]Back up {home.master_key_file}: every key in every vault is sealed "
            "under it.[/yellow]"
        )


def tick(ctx: typer.Context) -> None:
    """Run the scheduler once: purge what retention released, apply rotation policies."""
    c = cli_context(ctx)
    report = c.runtime.vault.tick(c.actor)
    emit_object(
        {
            "PurgedKeys": list(report.purged_keys),
            "PurgedVaults": list(report.purged_vaults),
            "RotatedKeys": list(report.rotated_keys),
            "NotifiedKeys": list(report.notified_keys),
        },
        as_json=c.as_json,
    )
