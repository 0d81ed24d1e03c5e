"""``customerkey key byok-wrap`` and ``customerkey key byok-import``: bring your own key
(``vault.byok``). ``byok-wrap`` is the customer's side, run where the key is: it wraps a PEM
private key (RSA or EC, PKCS#8 or traditional, unencrypted) or a raw AES key file to a key
exchange key's public key and writes the ``.byok`` file Key Vault's BYOK tools make.
``byok-import`` imports such a file into a vault whose installation has an HSM."""

from __future__ import annotations

from pathlib import Path

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from customerkey.cli.context import cli_context, split_list
from customerkey.cli.output import emit_message, emit_object
from customerkey.crypto.rsa import b64url_encode
from customerkey.errors import BadParameter
from customerkey.home import write_private_file
from customerkey.rng import SystemRng
from customerkey.vault.byok import wrap_for_kek
from customerkey.views.vault import key_view

__all__ = ["byok_import", "byok_wrap"]

TargetKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | bytes


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadParameter(f"{option} {str(path)!r} could not be read: {exc.strerror}.") from None


def _target(data: bytes, option: str) -> TargetKey:
    if not data.lstrip().startswith(b"-----BEGIN"):
        if len(data) in (16, 24, 32):
            return data  # a raw AES key, for oct-HSM
        raise BadParameter(f"{option} is neither a PEM private key nor a 16/24/32-byte AES key.")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise BadParameter(f"{option} is not an unencrypted PEM private key.") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise BadParameter(f"{option} must hold an RSA or EC private key.")
    return key


def byok_wrap(
    kek_public: Path = typer.Option(
        ..., "--kek-public", help="The KEK's public key (PEM), as the vault hands it out."
    ),
    key: Path = typer.Option(
        ..., "--key", help="The key to bring: a PEM private key, or a raw AES key file."
    ),
    kid: str = typer.Option(..., "--kid", help="The KEK's key id (with its version)."),
    out: Path = typer.Option(..., "--out", help="The .byok file to write."),
) -> None:
    """Wrap a key to a key exchange key (CKM_RSA_AES_KEY_WRAP) as a .byok file."""
    try:
        public = serialization.load_pem_public_key(_read(kek_public, "--kek-public"))
    except (ValueError, TypeError):
        raise BadParameter("--kek-public is not a PEM public key.") from None
    if not isinstance(public, rsa.RSAPublicKey):
        raise BadParameter("--kek-public must be the RSA public key of a key exchange key.")
    try:
        blob = wrap_for_kek(
            public, kid, _target(_read(key, "--key"), "--key"), aes_key=SystemRng().token_bytes(32)
        )
    except ValueError as exc:
        raise BadParameter(f"The key cannot be wrapped: {exc}.") from None
    write_private_file(out, blob)
    typer.echo(f"Wrote {out} for the key exchange key {kid}.")


def byok_import(
    ctx: typer.Context,
    vault: str,
    name: str,
    byok_file: Path = typer.Option(..., "--byok-file", help="The .byok file."),
    kty: str = typer.Option("RSA-HSM", "--kty", help="RSA-HSM, EC-HSM or oct-HSM."),
    ops: str | None = typer.Option(None, "--ops", help="e.g. sign,verify"),
) -> None:
    """Import a .byok file: the key is unwrapped inside the HSM, under its key exchange key."""
    c = cli_context(ctx)
    jwk: dict[str, object] = {
        "kty": kty,
        "key_hsm": b64url_encode(_read(byok_file, "--byok-file")),
    }
    if ops is not None:
        jwk["key_ops"] = split_list(ops)
    bundle = c.runtime.vault.import_key(c.actor, vault, name, jwk)
    if c.as_json:
        emit_object(key_view(bundle, domain=c.domain, port=c.port), as_json=True)
    else:
        emit_message(f"Imported {kty} key '{name}' into the HSM.", as_json=False)
