"""``customerkey master-key ...``: which form the installation's master key has, and moving it
into the HSM (``seal``: master.key becomes master.key.sealed) and back out (``unseal``).

The work and its crash safety are ``hsm.master_seal``'s; these commands check the form, ask
before the step that removes a file, and have the move audited once it is done.
"""

from __future__ import annotations

from typing import Any

import typer

from customerkey.cli.confirm import YES, confirm_destruction
from customerkey.cli.context import CliContext, NoInstallation, cli_context
from customerkey.cli.output import emit_object
from customerkey.errors import BadParameter
from customerkey.home import Home
from customerkey.hsm.master_seal import (
    SealedMasterKey,
    SealToken,
    record_move,
    seal_home,
    unseal_home,
)

app = typer.Typer(help="The master key: show its form, seal it in the HSM, unseal it.")

_FORMS = {
    "file": "master.key (a file in the home folder)",
    "sealed": "master.key.sealed (sealed by the HSM; unsealed by the token at each start)",
    "both": "master.key and master.key.sealed: a seal or unseal was interrupted; master.key "
    "is used until 'customerkey master-key seal' (or 'unseal') is run again",
}


def _home(c: CliContext) -> Home:
    settings = c.settings()
    home = Home(settings.home)
    if not home.exists():
        raise NoInstallation(
            f"No installation at {settings.home}; run 'customerkey init' to create one "
            "(or check --home / CUSTOMERKEY_HOME)."
        )
    return home


def _token(c: CliContext) -> SealToken:
    hsm = c.runtime.hsm
    if not isinstance(hsm, SealToken):
        raise BadParameter(
            "No HSM is configured: set CUSTOMERKEY_PKCS11_MODULE, CUSTOMERKEY_PKCS11_TOKEN_LABEL "
            "and CUSTOMERKEY_PKCS11_PIN_FILE to the token that is to seal the master key."
        )
    return hsm


def _view(home: Home, sealed: SealedMasterKey | None = None) -> dict[str, Any]:
    form = home.master_key_form()
    view: dict[str, Any] = {
        "Home": str(home.path),
        "Form": form,
        "Description": _FORMS.get(form or "", "none"),
        "MasterKey": str(home.master_key_file) if home.master_key_file.exists() else None,
        "Sealed": (
            str(home.sealed_master_key_file) if home.sealed_master_key_file.exists() else None
        ),
    }
    if sealed is None and home.sealed_master_key_file.exists():
        sealed = SealedMasterKey.from_bytes(home.sealed_master_key())
    if sealed is not None:
        view["SealKeyLabel"] = sealed.label
        view["SealKeyId"] = sealed.object_id.hex()
    return view


@app.command("status")
def status(ctx: typer.Context) -> None:
    """Show whether the master key is a file or sealed by the HSM (no token needed)."""
    c = cli_context(ctx)
    emit_object(_view(_home(c)), as_json=c.as_json)


@app.command("seal")
def seal(ctx: typer.Context, yes: bool = YES) -> None:
    """Seal the master key in the HSM and remove master.key: from then on every process needs
    the token (CUSTOMERKEY_PKCS11_*) to open the installation."""
    c = cli_context(ctx)
    home = _home(c)
    if home.master_key_form() == "sealed":
        raise BadParameter(f"The master key of {home.path} is already sealed by the HSM.")
    token = _token(c)
    confirm_destruction(
        c,
        f"Sealing the master key of {home.path}",
        "seal",
        yes=yes,
        consequence=(
            f"{home.master_key_file} is removed once the sealed copy is verified; the "
            "installation then opens only with the HSM token that sealed it (keep a backup of "
            "master.key offline, or of the token's seal key, as your HSM allows)"
        ),
    )
    runtime = c.runtime
    label = runtime.settings.pkcs11_token_label
    sealed = seal_home(home, token, runtime.rng, token_label=label)
    record_move(runtime.db, runtime.audit, c.actor, "MasterKeySeal", sealed)
    emit_object(_view(home, sealed), as_json=c.as_json)


@app.command("unseal")
def unseal(ctx: typer.Context, yes: bool = YES) -> None:
    """Write the master key back to master.key (byte for byte) and remove master.key.sealed."""
    c = cli_context(ctx)
    home = _home(c)
    if home.master_key_form() == "file":
        raise BadParameter(f"The master key of {home.path} is not sealed.")
    token = _token(c)
    confirm_destruction(
        c,
        f"Unsealing the master key of {home.path}",
        "unseal",
        yes=yes,
        consequence=(
            f"the master key is written in the clear to {home.master_key_file} (0600) and "
            f"{home.sealed_master_key_file} is removed"
        ),
    )
    runtime = c.runtime
    sealed = unseal_home(home, token, token_label=runtime.settings.pkcs11_token_label)
    record_move(runtime.db, runtime.audit, c.actor, "MasterKeyUnseal", sealed)
    emit_object(_view(home), as_json=c.as_json)
