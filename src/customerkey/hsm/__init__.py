"""Key protectors backed by hardware: ``open_protector`` reads the PKCS#11 settings
(``config.Settings.pkcs11_*``) and opens the token (``hsm.pkcs11``); ``vault.hsm`` is the seam
it implements. Without ``CUSTOMERKEY_PKCS11_MODULE`` there is none and every key type is
protected in software (``vault.protection``)."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING

from customerkey.config import Settings
from customerkey.errors import HsmNotReady
from customerkey.rng import Rng
from customerkey.vault.hsm import HsmProtector

if TYPE_CHECKING:
    from customerkey.hsm.pkcs11 import Pkcs11Protector

__all__ = ["open_protector", "open_token", "read_pin"]


def read_pin(settings: Settings) -> str:
    """The user PIN: ``pkcs11_pin_file`` (one trailing newline dropped), else ``pkcs11_pin``."""
    if settings.pkcs11_pin_file is not None:
        try:
            text = settings.pkcs11_pin_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            raise HsmNotReady(
                f"The PIN file could not be read: check CUSTOMERKEY_PKCS11_PIN_FILE "
                f"({str(settings.pkcs11_pin_file)!r})."
            ) from None
        return text.removesuffix("\n").removesuffix("\r")
    if settings.pkcs11_pin is not None:
        return settings.pkcs11_pin.get_secret_value()
    raise HsmNotReady(
        "CUSTOMERKEY_PKCS11_MODULE is set but no user PIN is: set CUSTOMERKEY_PKCS11_PIN_FILE "
        "(a file holding the PIN) or CUSTOMERKEY_PKCS11_PIN."
    )


def open_token(settings: Settings, *, rejection_key: bytes, rng: Rng) -> Pkcs11Protector:
    """The PKCS#11 protector of the token ``settings`` name (a module must be set), logged in;
    ``HsmNotReady`` naming the setting at fault."""
    assert settings.pkcs11_module
    pin = read_pin(settings)
    try:
        from customerkey.hsm.pkcs11 import open_pkcs11
    except ImportError:
        raise HsmNotReady(
            "CUSTOMERKEY_PKCS11_MODULE is set but python-pkcs11 is not installed: "
            "pip install 'customerkey[hsm]'."
        ) from None
    return open_pkcs11(
        settings.pkcs11_module,
        settings.pkcs11_token_label,
        pin,
        rejection_key=rejection_key,
        rng=rng,
    )


def open_protector(settings: Settings, *, master_key: bytes, rng: Rng) -> HsmProtector | None:
    """The installation's HSM protector, or None when no PKCS#11 module is configured."""
    if not settings.pkcs11_module:
        return None
    # The secret of RSA1_5's implicit rejection (``crypto.rsa_padding``), per installation.
    rejection_key = hmac.new(master_key, b"customerkey hsm rsa1_5 rejection", hashlib.sha256)
    return open_token(settings, rejection_key=rejection_key.digest(), rng=rng)
