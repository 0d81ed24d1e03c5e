"""Bring your own key (BYOK) in the vault service: key exchange keys (KEKs) and the import of a
key transfer blob (``vault.byok``) straight into the HSM.

A KEK is an RSA-HSM key made in this installation's HSM with ``key_ops`` exactly
``["import"]``; that list cannot be changed, and every crypto operation on it is refused as an
operation missing from ``key_ops`` is (``KeyNotUsable``, ``service.operations``). Importing a
JWK whose ``key_hsm`` holds a transfer blob finds the KEK its header names (it must be in the
vault imported into, enabled, within its dates, and a KEK), then asks the HSM to unwrap the
blob under it into a new token object (``vault.hsm.HsmProtector.import_wrapped``). ``keys``
stores the version; when that fails the token object is destroyed again. Without an HSM, BYOK
is refused: the key would otherwise exist in plaintext here.

RSA-HSM, EC-HSM (its public point recovered in the token, ``hsm.byok``) and oct-HSM (a raw AES
key) targets are taken, each only when the HSM holds that key type. A JWK naming a curve
(``crv``, as ``az keyvault key import --kty EC --curve`` sends) must name the key's; a ``crv``
on another type is refused, as Key Vault does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.orm import Session

from customerkey.crypto.ec import curve_name
from customerkey.crypto.rsa import b64url_decode
from customerkey.errors import BadParameter, KeyNotUsable
from customerkey.vault.byok import KEK_OPS, is_kek_request, parse_byok
from customerkey.vault.hsm import GeneratedKey
from customerkey.vault.key_types import normalize_kty
from customerkey.vault.models import Actor
from customerkey.vault.service.release import ReleaseMixin

__all__ = ["ByokMixin"]

_NO_HSM = (
    "this installation has no HSM configured (CUSTOMERKEY_PKCS11_MODULE), and a BYOK key is "
    "only ever unwrapped inside one"
)


class ByokMixin(ReleaseMixin):
    """KEKs and BYOK imports (see the module docstring)."""

    def _kek_requested(self, kty: str, key_ops: Sequence[str] | None) -> bool:
        """Whether a new key is a KEK (``key_ops`` ``["import"]``); ``BadParameter`` when such
        a key cannot be made here."""
        if not is_kek_request(key_ops):
            return False
        if normalize_kty(kty) != "RSA-HSM":
            raise BadParameter(
                f"A key exchange key (key_ops 'import') is an RSA-HSM key; '{kty}' cannot be one."
            )
        if self._hsm is None or "RSA-HSM" not in self._hsm.serves:
            raise BadParameter(f"A key exchange key (key_ops 'import') cannot be made: {_NO_HSM}.")
        return True

    def _new_kek(self, bits: int, *, label: str) -> GeneratedKey:
        assert self._hsm is not None
        return self._hsm.generate_kek(bits, label=label)

    @staticmethod
    def _refuse_kek_ops_change(current: Sequence[str], requested: Sequence[str]) -> None:
        """A KEK's ``key_ops`` stay ``["import"]``, and no key becomes a KEK by an update."""
        is_kek = tuple(current) == KEK_OPS
        if is_kek and [op.lower() for op in requested] == list(KEK_OPS):
            return
        if is_kek or is_kek_request(requested):
            raise BadParameter(
                "The key_ops of a key exchange key are fixed ('import' only), and a key made "
                "for other operations cannot become one."
            )

    def _unwrap_byok(
        self, actor: Actor, vault: str, name: str, jwk: Mapping[str, Any]
    ) -> tuple[str, GeneratedKey]:
        """(kty, the new token key) of a JWK carrying a transfer blob in ``key_hsm``. The
        caller stores the version, or ``destroy``s the token object when it cannot."""
        raw_kty = jwk.get("kty")
        kty = normalize_kty(raw_kty) if isinstance(raw_kty, str) else ""
        if kty not in ("RSA-HSM", "EC-HSM", "oct-HSM"):
            raise BadParameter(
                "A key transfer blob ('key_hsm') imports an RSA-HSM, EC-HSM or oct-HSM key; "
                f"the JWK's kty is {raw_kty!r}."
            )
        if self._hsm is None:
            raise BadParameter(f"The key transfer blob ('key_hsm') cannot be imported: {_NO_HSM}.")
        if kty not in self._hsm.serves:
            raise BadParameter(f"This installation's HSM does not hold {kty} keys.")
        crv = jwk.get("crv")
        if crv is not None and (kty != "EC-HSM" or not isinstance(crv, str)):
            raise BadParameter(f"'crv' names the curve of an EC key; a {kty} key has none.")
        blob = jwk.get("key_hsm")
        try:
            data = b64url_decode(blob) if isinstance(blob, str) else b""
        except ValueError:
            data = b""
        if not data:
            raise BadParameter("'key_hsm' must be the base64url form of a key transfer blob.")
        transfer = parse_byok(data)
        if transfer.kek.vault != vault.lower():
            raise BadParameter(
                "The key transfer blob was made for a key exchange key in another vault "
                f"('{transfer.kek.vault}'); a KEK must be in the vault the key is imported into."
            )

        def find_kek(session: Session) -> tuple[str, int]:
            row = self._vault_row(session, vault)
            self._require(session, actor, row, "import")
            key = self._key_row(session, row, transfer.kek.name)
            version = self._version_row(session, key, transfer.kek.version)
            self._check_public(row, key, version)
            if (
                tuple(version.key_ops) != KEK_OPS
                or version.kty != "RSA-HSM"
                or version.hsm_object_id is None
            ):
                raise BadParameter(
                    f"Key '{key.name}' is not a key exchange key (an RSA-HSM key in the HSM "
                    "whose key_ops are 'import' only); a key transfer blob is wrapped to one."
                )
            now = self._clock.now()
            if (
                not version.enabled
                or (version.not_before is not None and now < version.not_before)
                or (version.expires is not None and now >= version.expires)
            ):
                raise KeyNotUsable(
                    f"Key exchange key '{key.name}' is disabled, not yet valid or expired."
                )
            return version.hsm_object_id, version.key_size

        kek_object_id, kek_bits = self._run(
            actor, "KeyImport", find_kek, vault=vault.lower(), key=name, read_only=True
        )
        generated = self._hsm.import_wrapped(
            kek_object_id,
            kek_bits,
            transfer.ciphertext,
            kty,
            label=f"customerkey {vault.lower()}/{name}",
        )
        if crv is not None and (
            not isinstance(generated.public, ec.EllipticCurvePublicKey)
            or curve_name(generated.public) != crv
        ):
            self._hsm.destroy(generated.object_id)
            raise BadParameter(
                f"The key transfer blob holds a key on another curve than 'crv' ({crv!r})."
            )
        return kty, generated
