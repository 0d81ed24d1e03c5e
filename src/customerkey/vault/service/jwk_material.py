"""The private material of a JWK imported in the clear (``keys.import_key``): its stored key
type and its RSA, EC or AES key, checked. Keys brought wrapped (BYOK) are ``byok``'s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from customerkey.crypto.ec import ec_private_key_from_jwk
from customerkey.crypto.key_material import PrivateMaterial, SymmetricKey
from customerkey.crypto.rsa import b64url_decode, private_key_from_jwk
from customerkey.errors import BadParameter
from customerkey.vault.key_types import KEY_TYPES, family_of, normalize_kty

__all__ = ["material_from_jwk"]

KEY_SIZES = (2048, 3072, 4096)  # RSA


def material_from_jwk(jwk: Mapping[str, Any], hsm: bool) -> tuple[str, PrivateMaterial]:
    """(stored kty, private material) of an imported JWK."""
    raw_kty = jwk.get("kty")
    if isinstance(raw_kty, str) and raw_kty.lower() == "oct":
        if not hsm:
            raise BadParameter(
                "Key type 'oct' cannot be imported as a software key; import a symmetric "
                "key as oct-HSM (kty 'oct-HSM', or 'oct' with Hsm true). Other key types: "
                "RSA, RSA-HSM, EC, EC-HSM."
            )
        raw_kty = "oct-HSM"
    if not isinstance(raw_kty, str) or raw_kty.lower() not in {k.lower() for k in KEY_TYPES}:
        raise BadParameter(
            f"Key type '{jwk.get('kty')}' cannot be imported; use one of: "
            + ", ".join(KEY_TYPES)
            + "."
        )
    kty = normalize_kty(raw_kty)
    family = family_of(kty)
    if family == "oct":
        try:
            material: PrivateMaterial = SymmetricKey(b64url_decode(str(jwk.get("k") or "")))
        except ValueError as exc:
            raise BadParameter(
                f"The key material is not a valid AES key ('k', 16, 24 or 32 bytes): {exc}"
            ) from None
        return "oct-HSM", material
    hsm_kty = "EC-HSM" if family == "EC" else "RSA-HSM"
    final = hsm_kty if hsm or kty == hsm_kty else kty
    if family == "EC":
        try:
            return final, ec_private_key_from_jwk({**jwk, "kty": "EC"})
        except ValueError as exc:
            raise BadParameter(f"The key material is not a valid EC private key: {exc}") from None
    try:
        rsa_key = private_key_from_jwk({**jwk, "kty": "RSA"})
    except ValueError as exc:
        raise BadParameter(f"The key material is not a valid RSA private key: {exc}") from None
    if rsa_key.key_size not in KEY_SIZES:
        raise BadParameter(
            f"RSA key size {rsa_key.key_size} is not supported; use 2048, 3072 or 4096."
        )
    return final, rsa_key
