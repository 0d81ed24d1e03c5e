"""``customerkey hsm ...``: the HSM's security domain (docs/HSM.md).

``security-domain show`` names the token's security domain; ``create`` makes one (needs the
SO PIN); ``request`` makes a transfer key pair in a recipient's token and writes its public
key; ``export`` wraps this token's security domain to such a request, inside the token (needs
the SO PIN); ``import`` unwraps an export into the recipient's token as its security domain
(needs the SO PIN). The SO PIN (``CUSTOMERKEY_PKCS11_SO_PIN_FILE``) is read only by these
commands and never stored. The work is ``customerkey.hsm.domain_admin``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from customerkey.cli.context import cli_context
from customerkey.cli.output import console, emit_object
from customerkey.errors import BadParameter
from customerkey.home import write_private_file

if TYPE_CHECKING:
    from customerkey.hsm.domain_admin import DomainAdmin

app = typer.Typer(help="The HSM: its security domain (backup, restore, recovery).")
domain_app = typer.Typer(help="The token's security domain: show, create, request, export, import.")
app.add_typer(domain_app, name="security-domain")


def _admin(ctx: typer.Context) -> DomainAdmin:
    # Imported here: python-pkcs11 is an optional dependency, loaded only by these commands.
    from customerkey.hsm.domain_admin import open_admin

    return open_admin(cli_context(ctx).settings())


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadParameter(f"Cannot read {path}: {exc.strerror}.") from None


@domain_app.command("show")
def show(ctx: typer.Context) -> None:
    """Show the token's security domain (its identifier) and any pending transfer request."""
    info = _admin(ctx).show()
    emit_object(
        {
            "Token": info.token,
            "SecurityDomain": info.domain,
            "PendingTransferKey": info.transfer_key,
        },
        as_json=cli_context(ctx).as_json,
    )


@domain_app.command("create")
def create(ctx: typer.Context) -> None:
    """Create the token's security domain (needs CUSTOMERKEY_PKCS11_SO_PIN_FILE)."""
    identifier = _admin(ctx).create()
    emit_object({"SecurityDomain": identifier}, as_json=cli_context(ctx).as_json)


@domain_app.command("request")
def request(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Where to write the transfer public key (PEM)."),
) -> None:
    """Make a transfer key pair in this (recipient) token; write its public key."""
    pem = _admin(ctx).request()
    write_private_file(out, pem, mode=0o644)
    emit_object({"TransferRequest": str(out)}, as_json=cli_context(ctx).as_json)


@domain_app.command("export")
def export(
    ctx: typer.Context,
    request_file: Path = typer.Option(..., "--request", help="The recipient's transfer PEM."),
    out: Path = typer.Option(..., "--out", help="Where to write the wrapped security domain."),
) -> None:
    """Wrap this token's security domain to a recipient's transfer key, inside the token
    (needs CUSTOMERKEY_PKCS11_SO_PIN_FILE)."""
    exported = _admin(ctx).export(_read(request_file))
    write_private_file(out, exported)
    emit_object({"ExportedTo": str(out)}, as_json=cli_context(ctx).as_json)


@domain_app.command("import")
def import_(
    ctx: typer.Context,
    exported: Path = typer.Argument(..., help="The file 'security-domain export' wrote."),
) -> None:
    """Unwrap an exported security domain into this token as its own (needs
    CUSTOMERKEY_PKCS11_SO_PIN_FILE)."""
    identifier = _admin(ctx).import_(_read(exported))
    emit_object({"SecurityDomain": identifier}, as_json=cli_context(ctx).as_json)
    if not cli_context(ctx).as_json:
        console.print("Backups of HSM keys made under this security domain now restore here.")
